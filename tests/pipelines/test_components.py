"""Every image folder follows the component convention (see images/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp import components

from skit_components.loader import entrypoint_file, import_component

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
FOLDERS = sorted(p for p in IMAGES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
INPUT_TYPES = {"String", "Integer", "Float", "Boolean", "JsonArray", "JsonObject"}
"""Typed parameters: no comma-separated strings standing in for lists."""
ARTIFACT_TYPES = {"Artifact", "Dataset", "Model", "Metrics", "HTML", "Markdown"}
"""Artifacts, which a component reads through {inputPath: ...}."""
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


def pins(path: Path) -> dict[str, str]:
    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    return {canonical(n): version for n, version in PIN.findall(path.read_text())}


@pytest.fixture(params=FOLDERS, ids=[p.name for p in FOLDERS])
def folder(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_there_are_image_folders():
    assert {"fetch_calls", "invalidate_situations"} <= {p.name for p in FOLDERS}


def test_folder_has_every_required_file(folder):
    name = folder.name
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
    for required in (
        "component.yaml",
        "Dockerfile",
        "VERSION",
        "CHANGELOG.md",
        "requirements.in",
        "requirements.lock",
        "README.md",
        f"tests/test_{name}.py",
    ):
        assert (folder / required).is_file(), f"{name}/{required} is missing"
    # The entrypoint: a module <name>.py, or a small package <name>/ run by its __main__.py.
    entrypoint = entrypoint_file(folder)
    assert entrypoint.is_file(), f"{name}/{name}.py (or {name}/__init__.py) is missing"
    if entrypoint.name == "__init__.py":
        assert (entrypoint.parent / "__main__.py").is_file(), f"{name}/{name}/__main__.py"


def test_version_is_semver_and_in_the_changelog(folder):
    version = (folder / "VERSION").read_text().strip()
    assert SEMVER.match(version)
    assert f"## {version}" in (folder / "CHANGELOG.md").read_text()


def test_component_spec_matches_the_folder(folder):
    name = folder.name
    spec = yaml.safe_load((folder / "component.yaml").read_text())
    container = spec["implementation"]["container"]
    version = (folder / "VERSION").read_text().strip()
    assert container["image"] == f"skit-pipelines/{name.replace('_', '-')}:{version}"
    assert container["command"] == ["python3", "-m", name]
    env = (spec.get("metadata") or {}).get("annotations", {}).get("skit.ai/env", "")
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", var) for var in env.split())
    paths = _input_paths(container.get("args", []))
    for item in spec.get("inputs", []):
        if item["name"] in paths:
            assert item.get("type") in ARTIFACT_TYPES, item["name"]
        else:
            assert item.get("type") in INPUT_TYPES, item["name"]
        assert item.get("description"), item["name"]
    for item in spec.get("outputs", []):
        assert item.get("description"), item["name"]
    components.load_component_from_file(str(folder / "component.yaml"))


def test_every_argument_is_one_name_value_word(folder):
    """`--name` then the value would let a value such as `--help` be read as an option."""
    spec = yaml.safe_load((folder / "component.yaml").read_text())
    for arg in spec["implementation"]["container"].get("args", []):
        assert isinstance(arg, dict) and list(arg) == ["concat"], arg
        prefix, placeholder = arg["concat"]
        assert re.fullmatch(r"--[a-z][a-z0-9-]*=", prefix), arg
        assert isinstance(placeholder, dict) and len(placeholder) == 1, arg


def test_entrypoint_module_has_main(folder):
    module = import_component(folder)
    assert callable(module.main)


def test_dockerfile_runs_the_same_command_as_a_non_root_user(folder):
    name = folder.name
    text = (folder / "Dockerfile").read_text()
    assert f'ENTRYPOINT ["python3", "-m", "{name}"]' in text
    if entrypoint_file(folder).name == "__init__.py":
        assert f"COPY images/{name}/{name}/*.py /app/{name}/" in text
    else:
        assert f"COPY images/{name}/{name}.py" in text
    assert f"COPY images/{name}/tests" not in text, "test code stays out of the image"
    assert f"COPY images/{name}/requirements.lock" in text
    assert "--require-hashes" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert "ARG BASE_IMAGE=" in text


def test_image_lock_agrees_with_the_root_lock(folder):
    root = pins(ROOT / "requirements.lock")
    image = pins(folder / "requirements.lock")
    for package, version in image.items():
        assert root.get(package) == version, f"{package}=={version}; root: {root.get(package)}"
    wanted = {
        re.sub(r"[-_.]+", "-", re.split(r"[\[<>=;\s]", line, maxsplit=1)[0]).lower()
        for line in (folder / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert wanted <= set(image), "requirements.lock is stale: regenerate it"


def _input_paths(args: object) -> set[str]:
    """Names of the inputs the container reads as files ({inputPath: name}), at any depth."""
    if isinstance(args, dict):
        found = {args["inputPath"]} if "inputPath" in args else set()
        return found.union(*(_input_paths(value) for value in args.values()))
    if isinstance(args, list):
        return set().union(*(_input_paths(item) for item in args))
    return set()


def test_the_smoke_run_works_outside_the_image(folder, tmp_path):
    """smoke.yaml, as skit-release runs it in the built image, with /smoke made local."""
    from skit_release.smoke import load_smoke, make_fixture

    spec = load_smoke(folder)
    smoke = tmp_path / "smoke"
    make_fixture(folder, spec, smoke)

    def local(text: str) -> str:
        return text.replace("/smoke", str(smoke))

    result = subprocess.run(
        [sys.executable, "-m", folder.name, *map(local, spec.args)],
        cwd=folder,
        env={**os.environ, **{name: local(value) for name, value in spec.env.items()}},
        capture_output=True,
        text=True,
        check=False,
        timeout=spec.timeout_seconds,
    )
    assert result.returncode == 0, result.stderr
    for name in spec.outputs:
        assert (smoke / "out" / name).stat().st_size > 0, name
