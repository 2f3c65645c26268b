from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.loader import import_component
from skit_components.model_registry import ModelRegistry
from skit_components.slu import MODEL_KIND, Example, save_model, train
from skit_demo import vocabulary as v

FOLDER = Path(__file__).resolve().parents[1]
evaluate_slu = import_component(FOLDER)

FILL = {"date": "tomorrow", "time": "after six", "number": "4821"}


def examples(language: str, limit: int | None = None) -> list[Example]:
    return [
        Example(phrase.format(**FILL), intent, language)
        for intent, phrases in v.CALLER_SAYS[language].items()
        for phrase in phrases[:limit]
    ]


def make_model(path: Path, data: list[Example], name: str) -> str:
    return save_model(train(data), data, path, name=name).version


def write(path: Path, rows: list[Example]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["utterance", "intent", "language"])
        writer.writerows((e.text, e.intent, e.language) for e in rows)
    return path


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A good model, a registry whose production model knows only one phrase per intent,
    and a test set in two languages."""
    good = make_model(tmp_path / "good", examples("en") + examples("hi"), "slu-good")
    registry = ModelRegistry.from_url((tmp_path / "registry").as_uri(), create=True)
    weak = make_model(tmp_path / "weak", examples("en", limit=1), "slu-weak")
    registry.register(MODEL_KIND, weak, tmp_path / "weak")
    registry.promote(MODEL_KIND, weak, expected=None)
    monkeypatch.setenv("MODEL_REGISTRY_URL", registry.url)
    test = write(tmp_path / "test.csv", examples("en") + examples("hi"))
    return {"good": good, "weak": weak, "registry": registry, "test": test}


@pytest.fixture
def run(tmp_path: Path):
    """Runs main(); returns (exit code, report dir, outputs)."""

    def _run(test: Path, model: Path, *args: str) -> tuple[int, Path, dict[str, str]]:
        out = tmp_path / "out"
        names = ("macro-f1", "production-macro-f1", "production-version", "verdict")
        code = evaluate_slu.main(
            [
                "--test-set",
                str(test),
                "--model",
                str(model),
                *args,
                "--report",
                str(out / "report"),
                *[f"--{n}={out / n}" for n in names],
            ]
        )
        outputs = {n: (out / n).read_text() for n in names} if code == 0 else {}
        return code, out / "report", outputs

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_compares_with_production_on_the_same_test_set(run, setup, tmp_path):
    code, report, outputs = run(setup["test"], tmp_path / "good")
    assert code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["verdict"] == "better" and metrics["not_worse"] is True
    assert metrics["model"]["version"] == setup["good"]
    assert metrics["production"]["version"] == setup["weak"]
    assert metrics["production"]["macro_f1"] < metrics["model"]["macro_f1"]
    assert outputs == {
        "macro-f1": str(metrics["model"]["macro_f1"]),
        "production-macro-f1": str(metrics["production"]["macro_f1"]),
        "production-version": setup["weak"],
        "verdict": "better",
    }
    assert metrics["model"]["labels"] == metrics["production"]["labels"]
    assert set(metrics["model"]["per_language"]) == {"en", "hi"}
    assert {p.name for p in report.iterdir()} == {
        "metrics.json",
        "report.md",
        "report.html",
        "confusion_matrix.png",
        "production_confusion_matrix.png",
    }
    assert (report / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (report / "report.md").read_text()
    assert "**Verdict: better.**" in markdown
    assert "| `promise_to_pay` |" in markdown and "| Production F1 | Δ F1 |" in markdown
    assert "## Per language" in markdown and "![Confusion matrix" in markdown
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "<code>promise_to_pay</code>" in page and "<strong>Verdict: better.</strong>" in page


def test_without_comparison_or_production(run, setup, tmp_path, monkeypatch):
    no_comparison = ("--compare-with-production", "false")
    code, report, outputs = run(setup["test"], tmp_path / "good", *no_comparison)
    assert code == 0
    assert outputs["verdict"] == "not-compared" and outputs["production-macro-f1"] == "0.0"
    assert not (report / "production_confusion_matrix.png").exists()
    # Not comparing needs no registry at all.
    monkeypatch.delenv("MODEL_REGISTRY_URL")
    assert run(setup["test"], tmp_path / "good", *no_comparison)[0] == 0

    empty = ModelRegistry.from_url((tmp_path / "empty").as_uri(), create=True)
    monkeypatch.setenv("MODEL_REGISTRY_URL", empty.url)
    code, report, outputs = run(setup["test"], tmp_path / "good")
    assert code == 0 and outputs["verdict"] == "no-production"
    assert json.loads((report / "metrics.json").read_text())["not_worse"] is True


def test_evaluating_production_itself_is_not_a_comparison(run, setup):
    production = setup["registry"].production(MODEL_KIND)
    code, _, outputs = run(setup["test"], production.path)
    assert code == 0
    assert outputs["verdict"] == "is-production" and outputs["production-version"] == ""


def test_a_worse_model_is_reported_worse(run, setup, tmp_path):
    setup["registry"].register(MODEL_KIND, setup["good"], tmp_path / "good")
    setup["registry"].promote(MODEL_KIND, setup["good"], expected=setup["weak"])
    code, _, outputs = run(setup["test"], setup["registry"].get(MODEL_KIND, setup["weak"]).path)
    assert code == 0 and outputs["verdict"] == "worse"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty test set", "the test set has no tagged utterances (0 rows)"),
        ("not a model", "is not an SLU model: no metadata.json"),
        ("changed model", "refusing to load a model that was changed"),
        ("no registry", "MODEL_REGISTRY_URL is not set"),
        ("bad flag", "expected true or false, got 'maybe'"),
    ],
)
def test_unusable_inputs_fail_with_exit_2(run, setup, tmp_path, monkeypatch, capsys, case, message):
    test, model, args = setup["test"], tmp_path / "good", []
    if case == "empty test set":
        test = tmp_path / "empty.csv"
        test.write_text("utterance,intent\n")
    elif case == "not a model":
        model = tmp_path
    elif case == "changed model":
        with (model / "model.joblib").open("ab") as f:
            f.write(b"\0")
    elif case == "no registry":
        monkeypatch.delenv("MODEL_REGISTRY_URL")
    else:
        args = ["--compare-with-production", "maybe"]
    code, _, _ = run(test, model, *args)
    assert code == 2
    assert message in one_line(capsys.readouterr().err)


def test_a_broken_registry_fails_with_exit_13(run, setup, tmp_path, capsys):
    pointer = setup["registry"].root / MODEL_KIND / "production.json"
    pointer.write_text('{"version": "slu-gone"}')
    code, _, _ = run(setup["test"], tmp_path / "good")
    assert code == 13
    assert "model registry: no slu model version 'slu-gone'" in one_line(capsys.readouterr().err)


def test_runs_as_a_module_in_its_image_folder(setup, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluate_slu",
            "--test-set",
            str(setup["test"]),
            "--model",
            str(tmp_path / "good"),
            "--compare-with-production",
            "true",
            "--report",
            str(out / "report"),
            *[f"--{n}={out / n}" for n in ("macro-f1", "production-macro-f1")],
            *[f"--{n}={out / n}" for n in ("production-version", "verdict")],
        ],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (out / "verdict").read_text() == "better"


def test_writes_kfp_metrics_classification_metrics_and_html(run, setup, tmp_path):
    """The KFP outputs: files with the values, and their metadata in the executor output
    file the ExecutorInput names (what KFP's launcher and the local executor read)."""
    kfp = tmp_path / "kfp"
    executor_input = {
        "outputs": {
            "artifacts": {
                name: {"artifacts": [{"name": name, "uri": str(kfp / name)}]}
                for name in ("metrics", "confusion_matrix", "report_html")
            },
            "outputFile": str(kfp / "executor_output.json"),
        }
    }
    code, report, outputs = run(
        setup["test"],
        tmp_path / "good",
        f"--metrics={kfp / 'metrics'}",
        f"--confusion-matrix={kfp / 'confusion_matrix'}",
        f"--report-html={kfp / 'report_html'}",
        f"--executor-input={json.dumps(executor_input)}",
    )
    assert code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    written = json.loads((kfp / "executor_output.json").read_text())["artifacts"]
    scores = written["metrics"]["artifacts"][0]
    assert scores["uri"] == str(kfp / "metrics")
    assert scores["metadata"] == {
        "macro_f1": metrics["model"]["macro_f1"],
        "weighted_f1": metrics["model"]["weighted_f1"],
        "accuracy": metrics["model"]["accuracy"],
        "test_examples": float(metrics["test_set"]["examples"]),
        "production_macro_f1": metrics["production"]["macro_f1"],
    }
    assert json.loads((kfp / "metrics").read_text()) == scores["metadata"]
    matrix = written["confusion_matrix"]["artifacts"][0]["metadata"]["confusionMatrix"]
    labels = [spec["displayName"] for spec in matrix["annotationSpecs"]]
    assert labels == metrics["model"]["confusion_labels"]
    assert [row["row"] for row in matrix["rows"]] == metrics["model"]["confusion"]
    assert sum(map(sum, metrics["model"]["confusion"])) == metrics["test_set"]["examples"]
    assert (kfp / "report_html").read_text() == (report / "report.html").read_text()
    assert outputs["verdict"] == "better"


def test_a_bad_executor_input_is_bad_input(run, setup, tmp_path, capsys):
    code, _, _ = run(setup["test"], tmp_path / "good", "--executor-input={}")
    assert code == 2
    assert "--executor-input is not a KFP ExecutorInput" in one_line(capsys.readouterr().err)
