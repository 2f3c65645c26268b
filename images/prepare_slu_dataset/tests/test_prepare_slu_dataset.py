from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from skit_components.loader import import_component
from skit_components.slu import parse_tag

FOLDER = Path(__file__).resolve().parents[1]
prepare_slu_dataset = import_component(FOLDER)

# (text, tag as the annotation store writes it): legacy names in some rows.
TAGGED = (
    [("yes", {"choices": ["_confirm_"]})] * 30
    + [("haan ji", {"choices": ["yes"]})] * 10
    + [("no not now", {"choices": ["_cancel_"]})] * 20
    + [("i will pay tomorrow", {"choices": ["promise_to_pay"]})] * 12
    + [("i'll pay by friday", {"choices": ["ptp"]})] * 8
    + [("hello hello", {"choices": ["_oos_"]})] * 10
    + [("wrong number", {"choices": ["wrong_number"]})] * 1
)


def write_tagged(path: Path, rows=TAGGED) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["data_id", "tag", "raw.text", "raw.language", "raw.intent"])
        for i, (text, tag) in enumerate(rows):
            writer.writerow([i, json.dumps(tag), text, "en", "whatever"])
    return path


def read(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def run(tmp_path: Path):
    """Runs main(); returns (exit code, train rows, test rows, summary)."""

    def _run(dataset: Path, *args: str) -> tuple[int, list[dict], list[dict], dict]:
        out = tmp_path / "out"
        code = prepare_slu_dataset.main(
            [
                "--dataset",
                str(dataset),
                *args,
                "--train",
                str(out / "train.csv"),
                "--test",
                str(out / "test.csv"),
                "--summary",
                str(out / "summary.json"),
                "--train-count",
                str(out / "train_count"),
                "--test-count",
                str(out / "test_count"),
            ]
        )
        if code != 0:
            return code, [], [], {}
        train, test = read(out / "train.csv"), read(out / "test.csv")
        assert int((out / "train_count").read_text()) == len(train)
        assert int((out / "test_count").read_text()) == len(test)
        return code, train, test, json.loads((out / "summary.json").read_text())

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_aliases_map_to_canonical_intents_and_the_split_is_stratified(run, tmp_path):
    code, train, test, summary = run(write_tagged(tmp_path / "tagged.csv"))
    assert code == 0
    counts = Counter(r["intent"] for r in train + test)
    assert counts == {
        "_confirm_": 40,
        "_cancel_": 20,
        "promise_to_pay": 20,
        "_oos_": 10,
        "wrong_number": 1,
    }
    assert Counter(r["intent"] for r in test) == {
        "_confirm_": 6,
        "_cancel_": 3,
        "promise_to_pay": 3,
        "_oos_": 2,  # round(1.5) == 2
    }
    assert summary["train_only"] == ["wrong_number"]
    assert summary["aliased"] == {"ptp": 8, "yes": 10}
    assert "affirm" in summary["unused_aliases"]
    assert (summary["text_column"], summary["label_column"]) == ("raw.text", "tag")
    assert summary["intents"]["_confirm_"] == {"train": 34, "test": 6}
    assert {r["language"] for r in train} == {"en"}
    assert list(train[0]) == ["utterance", "intent", "language"]


def test_the_split_is_reproducible_by_seed(run, tmp_path):
    rows = [(f"utterance {i}", "x" if i % 2 else "y") for i in range(40)]
    data = write_tagged(tmp_path / "tagged.csv", rows)
    first = run(data, "--seed", "4")
    assert run(data, "--seed", "4")[1:3] == first[1:3]
    assert run(data, "--seed", "5")[2] != first[2]


def test_a_turns_csv_uses_predicted_intents_and_skips_silent_turns(run, tmp_path):
    path = tmp_path / "turns.csv"
    rows = [("yes", "_confirm_"), ("", "_confirm_"), ("hello", ""), ("no", "_cancel_")] * 5
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["call_uuid", "primary_utterance", "intent", "language"])
        writer.writerows(("c", text, intent, "hi") for text, intent in rows)
    code, train, test, summary = run(path, "--aliases-yaml", "aliases: {}")
    assert code == 0
    assert len(train) + len(test) == 10
    assert (summary["skipped_untagged"], summary["skipped_empty_text"]) == (5, 5)
    assert summary["text_column"] == "primary_utterance"


def test_removals_from_the_file_and_the_parameter_accept_aliases(run, tmp_path):
    aliases = "aliases:\n  promise_to_pay: [ptp]\nremove: [_oos_]\n"
    code, train, test, summary = run(
        write_tagged(tmp_path / "t.csv"),
        "--aliases-yaml",
        aliases,
        "--remove-intents",
        '["yes"]',
    )
    assert code == 0
    # "yes" is not an alias in this file: it is an intent of its own, and removed.
    assert {r["intent"] for r in train + test} == {
        "_confirm_",
        "_cancel_",
        "promise_to_pay",
        "wrong_number",
    }
    assert summary["removed"] == {"_oos_": 10, "yes": 10}


def test_everything_is_test_data_at_100_percent(run, tmp_path):
    code, train, test, summary = run(write_tagged(tmp_path / "t.csv"), "--test-percent", "100")
    assert code == 0
    assert train == [] and len(test) == len(TAGGED)
    assert summary["train_only"] == []


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ("aliases: [", "aliases_yaml is not valid YAML"),
        ("- a\n", "aliases_yaml: expected a mapping with aliases and remove"),
        ("alias: {}\n", "aliases_yaml: unknown field 'alias'"),
        ("aliases: {_confirm_: [yes]}\n", 'True is a boolean: quote intent names like "yes"'),
        ("aliases: {a: [x], b: [x]}\n", "'x' is an alias of both 'a' and 'b'"),
        ("aliases: {_confirm_: ['yes'], 'yes': [affirm]}\n", "'yes' is both an alias"),
        ("aliases: {pay_bill: [pay]}\n", "names intents that are not in the dataset: pay_bill"),
        ("remove: [refund]\n", "cannot remove intents that are not in the dataset: refund"),
        ("aliases: {_confirm_: 3}\n", "aliases: _confirm_: expected a list of intent names"),
    ],
)
def test_a_bad_alias_file_fails_with_exit_2(run, tmp_path, capsys, aliases, message):
    code, *_ = run(write_tagged(tmp_path / "t.csv"), "--aliases-yaml", aliases)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("prepare_slu_dataset: ") and message in line


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        ("text,label\na,b\n", (), "has no intent column: expected one of intent, tag"),
        ("intent,label\na,b\n", (), "has no utterance column: expected one of utterance"),
        ("utterance,intent\n,a\nb,\n", (), "no tagged utterances (2 rows: 1 without an intent"),
        ("utterance,intent\na,x\nb,x\n", (), "would have fewer than two intents"),
        ("utterance,intent\na,x\nb,y\n", ("--test-percent", "0"), "between 1 and 100, got 0"),
        ("utterance,intent\na,x\n", ("--remove-intents", "x"), "expected a JSON array"),
        ("utterance,intent\na,x\n", ("--remove-intents", '["x"]'), "no examples are left"),
    ],
)
def test_unusable_data_fails_with_exit_2(run, tmp_path, capsys, rows, args, message):
    path = tmp_path / "d.csv"
    path.write_text(rows)
    code, *_ = run(path, "--aliases-yaml", "aliases: {}", *args)
    assert code == 2
    assert message in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("tag", "intent"),
    [
        ("promise_to_pay", "promise_to_pay"),
        ('["promise_to_pay", "inform_date"]', "promise_to_pay"),
        ('{"choices": ["promise_to_pay"]}', "promise_to_pay"),
        ('[{"type": "intent", "value": "promise_to_pay"}]', "promise_to_pay"),
        ('{"intent": "promise_to_pay"}', "promise_to_pay"),
        ('"promise_to_pay"', "promise_to_pay"),
        ("[]", ""),
        ("{not json", "{not json"),
    ],
)
def test_tags_in_the_annotation_tools_shapes(tag, intent):
    assert parse_tag(tag) == intent


def test_the_bundled_alias_file_is_the_demo_vocabulary():
    from skit_demo import vocabulary as v

    bundled = yaml.safe_load((FOLDER / "intent_aliases.yaml").read_text())
    assert {k: tuple(a) for k, a in bundled["aliases"].items()} == v.INTENT_ALIASES


def test_runs_as_a_module_in_its_image_folder(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prepare_slu_dataset",
            "--dataset",
            str(write_tagged(tmp_path / "t.csv")),
            *[f"--{n}={tmp_path / n}" for n in ("train", "test", "summary")],
            *[f"--{n}={tmp_path / n}" for n in ("train-count", "test-count")],
        ],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "test-count").read_text() == "14"
