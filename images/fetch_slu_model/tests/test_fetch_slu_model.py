from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.loader import import_component
from skit_components.model_registry import ModelRegistry
from skit_components.slu import MODEL_KIND, Example, load_model, save_model, train

FOLDER = Path(__file__).resolve().parents[1]
fetch_slu_model = import_component(FOLDER)

DATA = [
    Example("yes", "_confirm_"),
    Example("yes speaking", "_confirm_"),
    Example("no", "_cancel_"),
    Example("no not now", "_cancel_"),
]


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    registry = ModelRegistry.from_url((tmp_path / "registry").as_uri(), create=True)
    monkeypatch.setenv("MODEL_REGISTRY_URL", registry.url)
    return registry


def add(registry: ModelRegistry, tmp_path: Path, name: str, *, production: bool) -> str:
    version = save_model(train(DATA), DATA, tmp_path / name, name=name).version
    registry.register(MODEL_KIND, version, tmp_path / name)
    if production:
        current = registry.production(MODEL_KIND)
        registry.promote(MODEL_KIND, version, expected=current.version if current else None)
    return version


@pytest.fixture
def run(tmp_path: Path):
    def _run(version: str) -> tuple[int, Path, str]:
        out = tmp_path / "out"
        code = fetch_slu_model.main(
            ["--version", version, "--model", str(out / "model"), "--model-version", str(out / "v")]
        )
        return code, out / "model", (out / "v").read_text() if code == 0 else ""

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_fetches_production_or_a_given_version(run, registry, tmp_path):
    old = add(registry, tmp_path, "slu-old", production=True)
    new = add(registry, tmp_path, "slu-new", production=False)
    code, model, version = run("")
    assert (code, version) == (0, old)
    assert load_model(model)[1].version == old
    code, model, version = run(new)
    assert (code, version) == (0, new)
    assert {p.name for p in model.iterdir()} == {"model.joblib", "metadata.json", "model_card.md"}


def test_unknown_versions_and_no_production_are_bad_input(run, registry, tmp_path, capsys):
    code, _, _ = run("")
    assert code == 2
    assert "there is no production SLU model" in one_line(capsys.readouterr().err)
    known = add(registry, tmp_path, "slu-known", production=False)
    for wanted in ("slu-unknown", "../../etc"):
        code, _, _ = run(wanted)
        assert code == 2
        line = one_line(capsys.readouterr().err)
        assert f"no SLU model version {wanted!r}" in line and known in line


def test_a_damaged_model_or_registry_fails_with_exit_13(
    run, registry, tmp_path, capsys, monkeypatch
):
    version = add(registry, tmp_path, "slu-x", production=True)
    (registry.get(MODEL_KIND, version).path / "model.joblib").write_bytes(b"not a model")
    code, _, _ = run("")
    assert code == 13
    assert f"model {version} is damaged" in one_line(capsys.readouterr().err)
    monkeypatch.setenv("MODEL_REGISTRY_URL", "gs://bucket/models")
    code, _, _ = run("")
    assert code == 13
    assert "unsupported model registry URL 'gs://bucket/models'" in capsys.readouterr().err
    # An S3 registry that cannot be reached (here: an endpoint nobody listens on).
    monkeypatch.setenv("MODEL_REGISTRY_URL", "s3://bucket/models")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, _, _ = run("")
    assert code == 13
    assert one_line(capsys.readouterr().err).startswith(
        "fetch_slu_model: model registry: s3://bucket/models: "
    )
    monkeypatch.delenv("MODEL_REGISTRY_URL")
    assert run("")[0] == 2


def test_runs_as_a_module_in_its_image_folder(registry, tmp_path):
    version = add(registry, tmp_path, "slu-m", production=True)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "fetch_slu_model", "--version", ""),
            *("--model", str(tmp_path / "m"), "--model-version", str(tmp_path / "v")),
        ],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "v").read_text() == version
