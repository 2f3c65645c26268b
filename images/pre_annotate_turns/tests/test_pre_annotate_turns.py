from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from skit_components.loader import import_component

FOLDER = Path(__file__).resolve().parents[1]
FIXTURES = FOLDER / "tests" / "fixtures"
VERSION = "slu-smoke-20261126-120748-ebabde9c"
pre_annotate_turns = import_component(FOLDER)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def registry(tmp_path: Path) -> str:
    root = tmp_path / "registry"
    shutil.copytree(FIXTURES / "registry", root)
    return root.as_uri()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs main(); returns (exit code, turns rows, outputs, the stderr line)."""

    def _run(*args: str, calls: Path = FIXTURES / "turns.csv", registry_url: str = ""):
        if registry_url:
            monkeypatch.setenv("MODEL_REGISTRY_URL", registry_url)
        else:
            monkeypatch.delenv("MODEL_REGISTRY_URL", raising=False)
        out = tmp_path / "out"
        code = pre_annotate_turns.main(
            [
                f"--calls={calls}",
                *args,
                f"--turns={out / 'turns.csv'}",
                f"--turn-count={out / 'turn_count'}",
                f"--used-model-version={out / 'model_version'}",
                f"--summary={out / 'summary.json'}",
            ]
        )
        err = capsys.readouterr().err.strip()
        if code != 0:
            assert not (out / "turns.csv").exists()
            return code, [], {}, err
        outputs = {
            "turn_count": int((out / "turn_count").read_text()),
            "model_version": (out / "model_version").read_text(),
            "summary": json.loads((out / "summary.json").read_text()),
        }
        return code, read_csv(out / "turns.csv"), outputs, err

    return _run


def caller_turns() -> list[dict[str, str]]:
    return [r for r in read_csv(FIXTURES / "turns.csv") if r["primary_utterance"].strip()]


def test_samples_caller_turns_and_attaches_the_production_models_intents(run, registry):
    code, rows, outputs, _ = run("--turn-quantity=5", "--seed=3", registry_url=registry)
    assert code == 0
    assert outputs["turn_count"] == len(rows) == 5
    assert outputs["model_version"] == VERSION
    every = caller_turns()
    uuids = [r["conversation_uuid"] for r in every]
    # A sample of caller turns, kept in call order.
    picked = [uuids.index(r["conversation_uuid"]) for r in rows]
    assert picked == sorted(picked) and all(r["primary_utterance"] for r in rows)
    labels = {"_cancel_", "_confirm_", "promise_to_pay"}
    assert {r["predicted_intent"] for r in rows} <= labels
    assert {r["prediction_model"] for r in rows} == {VERSION}
    assert outputs["summary"]["caller_turns"] == len(every)
    assert sum(outputs["summary"]["predicted_intents"].values()) == 5
    # The same seed picks the same turns; another seed other ones.
    _, again, _, _ = run("--turn-quantity=5", "--seed=3", registry_url=registry)
    _, other, _, _ = run("--turn-quantity=5", "--seed=4", registry_url=registry)
    assert [r["conversation_uuid"] for r in again] == [r["conversation_uuid"] for r in rows]
    assert [r["conversation_uuid"] for r in other] != [r["conversation_uuid"] for r in rows]


def test_a_confirmation_is_predicted_as_one(run, registry, tmp_path):
    rows = read_csv(FIXTURES / "turns.csv")
    turn = next(r for r in rows if r["primary_utterance"].strip())
    calls = tmp_path / "one.csv"
    with calls.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow({**turn, "primary_utterance": "yes that is right"})
    code, out, _, _ = run(calls=calls, registry_url=registry)
    assert code == 0
    assert [r["predicted_intent"] for r in out] == ["_confirm_"]


def test_quantity_zero_keeps_every_caller_turn_without_predictions(run):
    code, rows, outputs, _ = run("--turn-quantity=0", "--pre-annotate=false")
    assert code == 0
    assert len(rows) == len(caller_turns())
    assert outputs["model_version"] == ""
    assert {r["predicted_intent"] for r in rows} == {""}


def test_a_named_version_is_used(run, registry):
    code, rows, outputs, _ = run(f"--model-version={VERSION}", registry_url=registry)
    assert code == 0 and outputs["model_version"] == VERSION and rows


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model-version=nope-1"], "no SLU model version 'nope-1'"),
        (["--turn-quantity=-1"], "turn_quantity must be >= 0"),
    ],
)
def test_bad_options_fail_with_one_line(run, registry, args, expected):
    code, _, _, err = run(*args, registry_url=registry)
    assert code == 2
    assert expected in err and "\n" not in err


def test_no_production_model_is_bad_input(run, tmp_path):
    empty = tmp_path / "empty-registry"
    empty.mkdir()
    code, _, _, err = run(registry_url=empty.as_uri())
    assert code == 2
    assert "there is no production SLU model" in err


def test_no_registry_is_bad_input_unless_not_pre_annotating(run):
    code, _, _, err = run()
    assert code == 2 and "MODEL_REGISTRY_URL is not set" in err


def test_no_caller_turn_is_bad_input(run, tmp_path, registry):
    rows = read_csv(FIXTURES / "turns.csv")
    bot_only = tmp_path / "bot.csv"
    with bot_only.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if not r["primary_utterance"].strip())
    code, _, _, err = run(calls=bot_only, registry_url=registry)
    assert code == 2
    assert "no caller turn with an utterance" in err


def test_not_a_turns_csv_is_bad_input(run, tmp_path, registry):
    other = tmp_path / "other.csv"
    other.write_text("utterance,intent\nyes,_confirm_\n", encoding="utf-8")
    code, _, _, err = run(calls=other, registry_url=registry)
    assert code == 2
    assert "is not a turns CSV (fetch_calls): no column call_uuid" in err
