from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.loader import import_component
from skit_components.model_registry import ModelRegistry
from skit_components.slu import MODEL_KIND, Example, read_metadata, save_model, train

FOLDER = Path(__file__).resolve().parents[1]
publish_slu_model = import_component(FOLDER)

DATA = [
    Example("yes", "_confirm_"),
    Example("yes speaking", "_confirm_"),
    Example("no", "_cancel_"),
    Example("no not now", "_cancel_"),
]


def evaluation(folder: Path, version: str, verdict: str, production: str | None) -> Path:
    """An evaluate_slu report directory (its metrics.json is what publishing reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = {"macro_f1": 0.91, "weighted_f1": 0.93, "accuracy": 0.94}
    metrics = {
        "model": {"version": version, **scores},
        "production": (
            {"version": production, "macro_f1": 0.95 if verdict == "worse" else 0.9}
            if production
            else None
        ),
        "verdict": verdict,
        "test_set": {"rows": 100, "examples": 100, "sha256": "ab" * 32},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "report.md").write_text("# report\n")
    return folder


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    registry = ModelRegistry.from_url((tmp_path / "registry").as_uri(), create=True)
    monkeypatch.setenv("MODEL_REGISTRY_URL", registry.url)
    return registry


@pytest.fixture
def models(tmp_path: Path, registry: ModelRegistry) -> dict[str, str]:
    """A production model in the registry, and a candidate trained since."""
    production = save_model(train(DATA), DATA, tmp_path / "prod", name="slu-prod").version
    registry.register(MODEL_KIND, production, tmp_path / "prod")
    registry.promote(MODEL_KIND, production, expected=None)
    candidate = save_model(train(DATA), DATA, tmp_path / "candidate", name="slu-new").version
    return {"production": production, "candidate": candidate}


@pytest.fixture
def run(tmp_path: Path):
    """Runs main(); returns (exit code, published dir, outputs)."""

    def _run(model: Path, report: Path, *args: str) -> tuple[int, Path, dict[str, str]]:
        out = tmp_path / "out"
        names = ("model-version", "promoted", "decision")
        code = publish_slu_model.main(
            [
                "--model",
                str(model),
                "--evaluation",
                str(report),
                *args,
                "--published",
                str(out / "published"),
                *[f"--{n}={out / n}" for n in names],
            ]
        )
        outputs = {n: (out / n).read_text() for n in names} if code == 0 else {}
        return code, out / "published", outputs

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_publishes_with_the_evaluation_but_does_not_promote_by_default(
    run, registry, models, tmp_path
):
    report = evaluation(tmp_path / "eval", models["candidate"], "better", models["production"])
    code, published, outputs = run(tmp_path / "candidate", report)
    assert code == 0
    assert outputs == {
        "model-version": models["candidate"],
        "promoted": "false",
        "decision": "registered, not promoted: promote is false",
    }
    card = (published / "model_card.md").read_text()
    assert "macro F1 0.9100" in card and f"`{models['production']}`" in card
    assert "verdict **better**" in card and "Not evaluated yet" not in card
    assert (published / "evaluation" / "report.md").is_file()
    assert read_metadata(published).version == models["candidate"]
    # Registered (the published directory, card included); production unchanged.
    stored = registry.get(MODEL_KIND, models["candidate"]).path
    assert (stored / "model_card.md").read_text() == card
    assert registry.production(MODEL_KIND).version == models["production"]


@pytest.mark.parametrize(
    ("verdict", "production", "promoted", "decision"),
    [
        ("better", True, True, "promoted: better than production slu-prod-"),
        ("equal", True, True, "promoted: as good as production slu-prod-"),
        ("no-production", False, True, "promoted: the first production SLU model"),
        ("worse", True, False, "not promoted: worse than production slu-prod-"),
        ("not-compared", False, False, "did not compare with production (not-compared)"),
    ],
)
def test_promotion_needs_promote_and_not_worse(
    run, registry, models, tmp_path, verdict, production, promoted, decision
):
    if verdict == "no-production":
        (registry.root / MODEL_KIND / "production.json").unlink()
    against = models["production"] if production else None
    report = evaluation(tmp_path / "eval", models["candidate"], verdict, against)
    code, _, outputs = run(tmp_path / "candidate", report, "--promote", "true")
    assert code == 0
    assert outputs["promoted"] == json.dumps(promoted)
    assert decision in outputs["decision"]
    now = registry.production(MODEL_KIND)
    if promoted:
        assert now.version == models["candidate"]
        log = (registry.root / MODEL_KIND / "promotions.jsonl").read_text().splitlines()
        assert json.loads(log[-1])["previous"] == against
    else:
        assert now.version == models["production"]
    if verdict == "worse":
        assert "(macro F1 0.9100 < 0.9500)" in outputs["decision"]


def test_production_that_moved_since_the_evaluation_is_not_overwritten(
    run, registry, models, tmp_path
):
    report = evaluation(tmp_path / "eval", models["candidate"], "better", models["production"])
    other = save_model(train(DATA), DATA, tmp_path / "other", name="slu-other").version
    registry.register(MODEL_KIND, other, tmp_path / "other")
    registry.promote(MODEL_KIND, other, expected=models["production"])
    code, _, outputs = run(tmp_path / "candidate", report, "--promote", "true")
    assert code == 0 and outputs["promoted"] == "false"
    assert outputs["decision"].startswith(f"not promoted: production changed to {other}")
    assert registry.production(MODEL_KIND).version == other


def test_publishing_again_is_a_no_op(run, registry, models, tmp_path):
    report = evaluation(tmp_path / "eval", models["candidate"], "better", models["production"])
    assert run(tmp_path / "candidate", report, "--promote", "true")[0] == 0
    code, _, outputs = run(tmp_path / "candidate", report, "--promote", "true")
    assert code == 0
    assert outputs["decision"] == "it is already the production model"
    assert outputs["promoted"] == "true"
    assert registry.versions(MODEL_KIND).count(models["candidate"]) == 1


def test_a_version_is_immutable(run, registry, models, tmp_path, capsys):
    report = evaluation(tmp_path / "eval", models["candidate"], "better", models["production"])
    assert run(tmp_path / "candidate", report)[0] == 0
    other = [Example("hello", "_oos_"), Example("hi there", "_oos_"), *DATA]
    forged = tmp_path / "forged"
    save_model(train(other), other, forged, name="slu-new")
    metadata = json.loads((forged / "metadata.json").read_text())
    metadata["version"] = models["candidate"]
    (forged / "metadata.json").write_text(json.dumps(metadata))
    code, _, _ = run(forged, report)
    assert code == 13
    assert "already registered with different content" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another model", "the evaluation is of model 'slu-someone-else', not of"),
        ("no metrics", "the evaluation has no metrics.json"),
        ("changed model", "model.joblib does not match the SHA-256 in its metadata"),
        ("bad flag", "expected true or false, got 'sure'"),
    ],
)
def test_mismatched_or_damaged_inputs_fail_with_exit_2(
    run, registry, models, tmp_path, capsys, case, message
):
    version = "slu-someone-else" if case == "another model" else models["candidate"]
    report = evaluation(tmp_path / "eval", version, "better", models["production"])
    args: list[str] = []
    if case == "no metrics":
        (report / "metrics.json").unlink()
    elif case == "changed model":
        with (tmp_path / "candidate" / "model.joblib").open("ab") as f:
            f.write(b"\0")
    elif case == "bad flag":
        args = ["--promote", "sure"]
    code, _, _ = run(tmp_path / "candidate", report, *args)
    assert code == 2
    assert message in one_line(capsys.readouterr().err)
    assert models["candidate"] not in registry.versions(MODEL_KIND)


def test_runs_as_a_module_in_its_image_folder(registry, models, tmp_path):
    report = evaluation(tmp_path / "eval", models["candidate"], "better", models["production"])
    shutil.copytree(tmp_path / "candidate", tmp_path / "model")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "publish_slu_model", "--promote", "true"),
            *("--model", str(tmp_path / "model"), "--evaluation", str(report)),
            *("--published", str(tmp_path / "p"), "--model-version", str(tmp_path / "v")),
            *("--promoted", str(tmp_path / "promoted"), "--decision", str(tmp_path / "d")),
        ],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "promoted").read_text() == "true"
    assert registry.production(MODEL_KIND).version == models["candidate"]
