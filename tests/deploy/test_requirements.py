"""The image's lock (deploy/requirements.lock) takes its versions from the root lock and
satisfies what the service's packages declare (pyproject.toml `dependencies`)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCAL_PACKAGES = {"skit-pipelines-client", "skit-components"}
"""The sibling packages of this repository (client/, lib/): installed from the tree."""
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", re.MULTILINE)


def _pins(lock: Path) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in _PIN.findall(lock.read_text())}


def _dependencies(pyproject: Path) -> list[Requirement]:
    with pyproject.open("rb") as handle:
        project = tomllib.load(handle)["project"]
    return [Requirement(line) for line in project["dependencies"]]


def test_the_image_lock_pins_what_the_root_lock_pins() -> None:
    image, root = _pins(ROOT / "deploy/requirements.lock"), _pins(ROOT / "requirements.lock")
    assert image
    assert {name: root.get(name) for name in image} == image


def test_every_pin_of_the_image_lock_has_hashes() -> None:
    # pip --require-hashes refuses the whole file otherwise.
    entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "deploy/requirements.lock").read_text())
    for entry in entries:
        if "==" in entry.split("\n", 1)[0]:
            assert "--hash=sha256:" in entry, entry.split("\n", 1)[0]


def test_the_image_lock_satisfies_the_declared_dependencies() -> None:
    image = _pins(ROOT / "deploy/requirements.lock")
    declared = _dependencies(ROOT / "pyproject.toml") + _dependencies(
        ROOT / "client/pyproject.toml"
    )
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name in LOCAL_PACKAGES:
            continue
        assert name in image, f"{requirement} is not in deploy/requirements.lock"
        assert requirement.specifier.contains(image[name], prereleases=True), (
            f"{requirement} does not allow the locked {image[name]}"
        )


def _imported_modules(package: Path) -> set[str]:
    """Every absolute module name the package's code imports, lazily imported ones too."""
    names: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from google.rpc import status_pb2`: google.rpc is a namespace package
                # with no file of its own; the module (or the name's own module) has one.
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _distribution_files() -> dict[Path, str]:
    """Each installed file's distribution. Only each distribution's root is resolved (the
    venv holds tens of thousands of files: resolving each took minutes on a busy CI)."""
    files: dict[Path, str] = {}
    for distribution in importlib.metadata.distributions():
        root = Path(str(distribution.locate_file(""))).resolve()
        name = canonicalize_name(distribution.metadata["Name"])
        for file in distribution.files or ():
            files[Path(os.path.normpath(root / file))] = name
    return files


def test_every_package_the_service_imports_is_declared() -> None:
    """What `serve` imports (the service and CLI packages, the client's modules) comes
    from a declared dependency, so the image, which installs only those, has it."""
    declared = {canonicalize_name(r.name) for r in _dependencies(ROOT / "pyproject.toml")}
    declared |= {canonicalize_name(r.name) for r in _dependencies(ROOT / "client/pyproject.toml")}
    owners = _distribution_files()
    missing = {}
    for package in ("skit_pipelines", "skit_pipelines_cli"):
        for name in _imported_modules(ROOT / "service" / package):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top.startswith("skit"):
                continue
            try:
                spec = importlib.util.find_spec(name)
            except ModuleNotFoundError:
                spec = None
            if spec is None or spec.origin is None:
                continue  # a name inside a module, or a namespace package
            owner = owners.get(Path(spec.origin).resolve())
            if owner not in declared:
                missing[name] = owner
    assert missing == {}
