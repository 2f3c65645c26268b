from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.loader import import_component
from skit_components.slu import (
    DataError,
    Example,
    load_model,
    majority_baseline,
    predict,
    read_metadata,
    score,
    stratified_split,
)
from skit_demo import vocabulary as v

FOLDER = Path(__file__).resolve().parents[1]
train_slu = import_component(FOLDER)

FILL = {"date": "tomorrow", "time": "after six", "number": "4821"}


def examples(language: str = "en", copies: int = 3) -> list[Example]:
    """What demo callers say, every phrase `copies` times, tagged with its intent."""
    return [
        Example(phrase.format(**FILL), intent, language)
        for intent, phrases in v.CALLER_SAYS[language].items()
        for phrase in phrases
        for _ in range(copies)
    ]


def write(path: Path, rows: list[Example]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["utterance", "intent", "language"])
        writer.writerows((e.text, e.intent, e.language) for e in rows)
    return path


@pytest.fixture
def run(tmp_path: Path):
    def _run(train_csv: Path, *args: str, out: str = "model") -> tuple[int, Path, str]:
        model = tmp_path / out
        code = train_slu.main(
            [
                "--train",
                str(train_csv),
                *args,
                "--model",
                str(model),
                "--model-version",
                str(tmp_path / f"{out}.version"),
            ]
        )
        version = (tmp_path / f"{out}.version").read_text() if code == 0 else ""
        return code, model, version

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_trains_a_model_directory_with_metadata_and_card(run, tmp_path):
    data = examples() + examples("hi", copies=2)
    code, model, version = run(write(tmp_path / "train.csv", data), "--model-name", "slu-demo")
    assert code == 0
    assert {p.name for p in model.iterdir()} == {"model.joblib", "metadata.json", "model_card.md"}
    assert re.fullmatch(r"slu-demo-\d{8}-\d{6}-[0-9a-f]{8}", version)
    metadata = read_metadata(model)
    assert metadata.version == version and metadata.name == "slu-demo"
    assert metadata.labels == sorted(v.CALLER_SAYS["en"])
    assert metadata.train_examples == len(data)
    assert metadata.languages == {"en": len(examples()), "hi": len(examples("hi", copies=2))}
    assert metadata.libraries["scikit-learn"] and metadata.sha256.startswith(version[-8:])
    assert metadata.training_data["train_rows"] == len(data)
    card = (model / "model_card.md").read_text()
    assert f"`{version}`" in card and "## Intended use" in card and "Not evaluated yet" in card
    classifier, loaded = load_model(model)
    assert loaded == metadata
    said = ["I will pay tomorrow", "wrong number", "मैंने पेमेंट कर दिया है"]
    assert predict(classifier, said) == ["promise_to_pay", "wrong_number", "already_paid"]


def test_the_same_data_and_seed_give_the_same_model_bytes(run, tmp_path):
    train = write(tmp_path / "train.csv", examples())
    first = run(train, out="a")
    second = run(train, out="b")
    assert read_metadata(first[1]).sha256 == read_metadata(second[1]).sha256


def test_conflicting_tags_are_resolved_by_majority(tmp_path):
    rows = (
        [Example("yes", "_confirm_")] * 5
        + [Example("yes", "_oos_")] * 2
        + [Example("no", "_cancel_")] * 3
        + [Example("hello hello", "_oos_")] * 3
    )
    trained = train_slu.fit(rows)
    assert (trained.distinct_utterances, trained.conflicting_utterances) == (3, 1)
    assert predict(trained.model, ["yes", "YES ", "no"]) == ["_confirm_", "_confirm_", "_cancel_"]


def test_tampered_models_are_refused(run, tmp_path):
    _, model, _ = run(write(tmp_path / "train.csv", examples()))
    with (model / "model.joblib").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="refusing to load a model that was changed"):
        load_model(model)


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        ("utterance,intent\n", (), "the training set has no tagged utterances (0 rows)"),
        ("utterance,intent\nyes,a\nno,a\n", (), "training needs two intents or more, got ['a']"),
        ("text\nyes\n", (), "has no intent column"),
        ("utterance,intent\nyes,a\nno,b\n", ("--model-name", "SLU 2"), "model_name must be"),
    ],
)
def test_unusable_training_data_fails_with_exit_2(run, tmp_path, capsys, rows, args, message):
    path = tmp_path / "train.csv"
    path.write_text(rows)
    code, _, _ = run(path, *args)
    assert code == 2
    assert message in one_line(capsys.readouterr().err)


def test_scores_and_the_majority_baseline():
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "b", "d"]
    scores = score(truth, predicted, ["en", "en", "en", "hi", "hi", "hi"])
    assert scores.labels == ["a", "b", "c"]
    assert [(s.intent, s.precision, s.recall, s.f1, s.support) for s in scores.per_intent] == [
        ("a", 1.0, 0.6667, 0.8, 3),
        ("b", 0.6667, 1.0, 0.8, 2),
        ("c", 0.0, 0.0, 0.0, 1),
    ]
    assert (scores.macro_f1, scores.accuracy) == (0.5333, 0.6667)
    # A prediction outside the test intents gets a column of the confusion matrix.
    assert scores.confusion_labels == ["a", "b", "c", "d"]
    assert scores.confusion[2] == [0, 0, 0, 1]
    assert scores.top_confusions == [("a", "b", 1), ("c", "d", 1)]
    assert set(scores.per_language) == {"en", "hi"}
    assert majority_baseline(["a", "a", "b"], truth).macro_f1 == round(2 * 3 / 9 / 3, 4)


def test_the_split_keeps_every_intent_on_both_sides():
    sizes = {"a": 40, "b": 3, "c": 1}
    rows = [Example(f"{i}", intent) for intent, n in sizes.items() for i in range(n)]
    split = stratified_split(rows, 15, seed=1)
    assert sorted(e.intent for e in split.test) == ["a"] * 6 + ["b"]
    assert split.train_only == ["c"] and len(split.train) == 37
    assert stratified_split(rows, 15, seed=1) == split
    with pytest.raises(ValueError):
        stratified_split(rows, 0, seed=1)


def test_runs_as_a_module_in_its_image_folder(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train_slu",
            "--train",
            str(write(tmp_path / "train.csv", examples())),
            "--model",
            str(tmp_path / "model"),
            "--model-version",
            str(tmp_path / "version"),
        ],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["version"] == (tmp_path / "version").read_text()
