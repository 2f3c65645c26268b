from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.loader import import_component

FOLDER = Path(__file__).resolve().parents[1]
asr_metrics = import_component(FOLDER)

HEADER = ("data_id", "tag", "raw.utterances", "raw.language")


def nbest(*segments: str | tuple[str, ...]) -> str:
    """An ASR utterances cell: one segment per argument, alternatives best first."""
    out = []
    for segment in segments:
        alternatives = (segment,) if isinstance(segment, str) else segment
        out.append([{"transcript": t, "confidence": 0.9} for t in alternatives])
    return json.dumps(out, ensure_ascii=False)


def utterance(truth: str, *heard: str | tuple[str, ...], language: str = "en") -> dict:
    tag = json.dumps({"text": truth}, ensure_ascii=False)
    return {"tag": tag, "raw.utterances": nbest(*heard), "raw.language": language}


@pytest.fixture
def run(tmp_path: Path):
    """Writes rows as the input CSV and runs main(); returns (exit code, outputs)."""

    def _run(
        rows: list[dict], *args: str, header: tuple[str, ...] = HEADER
    ) -> tuple[int, dict[str, object]]:
        source = tmp_path / "in.csv"
        with source.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            for number, values in enumerate(rows, start=1):
                writer.writerow({"data_id": f"t{number}", **values})
        out = tmp_path / "out"
        names = ("report", "metrics", "utterances", "wer", "cer")
        code = asr_metrics.main(
            ["--dataset", str(source), *args]
            + [arg for name in names for arg in (f"--{name}", str(out / name))]
        )
        if code != 0:
            assert not any((out / name).exists() for name in names)
            return code, {}
        return code, {
            "report": (out / "report").read_text(encoding="utf-8"),
            "metrics": list(csv.DictReader((out / "metrics").open(encoding="utf-8"))),
            "utterances": list(csv.DictReader((out / "utterances").open(encoding="utf-8"))),
            "wer": float((out / "wer").read_text()),
            "cer": float((out / "cer").read_text()),
        }

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("cell", "text"),
    [
        ('{"text": "i will pay"}', "i will pay"),
        (nbest(("i will pe", "i will pay"), "uh"), "i will pe uh"),
        (nbest(), ""),
        ('[{"transcript": "yes", "confidence": 0.8}, {"transcript": "s"}]', "yes"),
        ("just text", "just text"),
        ("[not json", "[not json"),
        ("", None),
        ('{"choices": ["_confirm_"]}', None),
    ],
)
def test_transcript_cells(cell, text):
    assert asr_metrics.transcript(cell) == text


def test_corpus_rates_count_every_error_over_every_reference_word(run):
    code, out = run(
        [
            # 4 words: one substitution.
            utterance("i will pay tomorrow", "i will pe tomorrow"),
            # 2 words: the second segment (a filler) is heard where "speaking" was said.
            utterance("yes speaking", "yes", "uh"),
            # 3 words, right.
            utterance("कल कर दूंगा", "कल कर दूंगा", language="hi"),
            # 1 word; the ASR heard nothing.
            utterance("हाँ", language="hi"),
        ]
    )
    assert code == 0
    metrics = {row["language"]: row for row in out["metrics"]}
    assert list(metrics) == ["all", "en", "hi"]
    # Not the mean of the utterances' rates (0.4375): errors over words.
    assert out["wer"] == pytest.approx(3 / 10)
    assert float(metrics["all"]["wer"]) == pytest.approx(0.3)
    assert float(metrics["en"]["wer"]) == pytest.approx(2 / 6)
    assert float(metrics["hi"]["wer"]) == pytest.approx(1 / 4)
    assert (metrics["all"]["substitutions"], metrics["all"]["deletions"]) == ("2", "1")
    assert (metrics["all"]["insertions"], metrics["all"]["reference_words"]) == ("0", "10")
    assert 0 < out["cer"] < out["wer"]
    per_utterance = {(u["id"], u["wer"]) for u in out["utterances"]}
    assert per_utterance == {("t1", "0.25"), ("t2", "0.5"), ("t3", "0.0"), ("t4", "1.0")}


def test_case_punctuation_and_markup_are_not_errors(run):
    code, out = run(
        [
            utterance("<noise> Yes, I'll pay. <babble>", "yes i'll pay"),
            utterance("हाँ, ठीक है।", "हाँ ठीक है", language="hi"),
            utterance("<unintelligible>", "hello"),
            {"tag": "", "raw.utterances": nbest("x"), "raw.language": "en"},
        ]
    )
    assert code == 0
    assert out["wer"] == 0 and out["cer"] == 0
    assert [u["reference"] for u in out["utterances"]] == ["yes ill pay", "हाँ ठीक है"]
    assert "Left out: 1 (true transcript is only markup" in out["report"]
    assert "1 (no true transcript in tag)" in out["report"]


def test_report_lists_the_worst_utterances_and_frequent_errors(run):
    rows = [utterance("i have already paid", "i have all ready paid") for _ in range(3)]
    rows += [utterance("wrong number", "long number | x"), utterance("no", "no")]
    code, out = run(rows, "--worst-count", "2")
    assert code == 0
    report = out["report"]
    assert report.startswith("# ASR evaluation\n")
    assert "## By language" in report and "| **all** | 5 |" in report
    worst = report.split("## Worst 2 utterances")[1].split("##")[0]
    # Highest WER first (3 errors over 2 words), then the earliest of the ties.
    assert worst.index("| t4 |") < worst.index("| t1 |")
    assert "t2" not in worst and "long number \\| x" in worst
    assert "already → ready (3)" in report and "Insertions: all (3)" in report


def test_no_language_column_gives_only_the_overall_scores(run):
    code, out = run([utterance("yes", "yes")], "--language-column", "")
    assert code == 0
    assert [row["language"] for row in out["metrics"]] == ["all"]


def test_other_columns_can_be_scored(run):
    rows = [{"truth": "call me later", "asr": "call me letter", "lang": "en"}]
    code, out = run(
        rows,
        "--true-column",
        "truth",
        "--pred-column",
        "asr",
        "--language-column",
        "lang",
        header=("data_id", "truth", "asr", "lang"),
    )
    assert code == 0
    assert out["wer"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("rows", "args", "header", "message"),
    [
        ([utterance("a", "a")], ["--true-column", "truth"], HEADER, "lacks column(s) truth"),
        ([utterance("a", "a")], [], ("data_id", "tag", "raw.utterances"), "raw.language"),
        ([], [], HEADER, "no utterance to score (no rows)"),
        ([utterance("<noise>", "a")], [], HEADER, "no utterance to score (1 rows: true"),
        ([utterance("a", "a")], ["--pred-column", "tag"], HEADER, "are both 'tag'"),
        ([utterance("a", "a")], ["--worst-count", "-1"], HEADER, "worst_count must be >= 0"),
        ([utterance("a", "a")], ["--worst-count", "1.5"], HEADER, "expected an integer"),
    ],
)
def test_bad_input_fails_with_exit_2_and_one_line(run, capsys, rows, args, header, message):
    code, _ = run(rows, *args, header=header)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("asr_metrics: ") and message in line


def test_runs_as_a_module_in_its_image_folder(tmp_path):
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerow({"data_id": 1, **utterance("yes tell me", "yes me")})
    outputs = ("report", "metrics", "utterances", "wer", "cer")
    result = subprocess.run(
        [sys.executable, "-m", "asr_metrics", "--dataset", str(source), "--worst-count", "20.0"]
        + [arg for name in outputs for arg in (f"--{name}", str(tmp_path / name))],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert float((tmp_path / "wer").read_text()) == pytest.approx(1 / 3)


def test_writes_the_scores_as_kfp_metrics(tmp_path: Path) -> None:
    """The Metrics output: a JSON file, and its metadata in the executor output file the
    ExecutorInput names (what KFP's launcher and the local executor read)."""
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, extrasaction="ignore")
        writer.writeheader()
        writer.writerow({"data_id": "t1", **utterance("call me tomorrow", "call me tomorow")})
        writer.writerow({"data_id": "t2", **utterance("ठीक है", "ठीक है", language="hi")})
    out = tmp_path / "out"
    executor_input = {
        "outputs": {
            "artifacts": {"scores": {"artifacts": [{"name": "scores", "uri": str(out / "s")}]}},
            "outputFile": str(out / "executor_output.json"),
        }
    }
    names = ("report", "metrics", "utterances", "wer", "cer")
    code = asr_metrics.main(
        ["--dataset", str(source)]
        + [arg for name in names for arg in (f"--{name}", str(out / name))]
        + [f"--scores={out / 's'}", f"--executor-input={json.dumps(executor_input)}"]
    )
    assert code == 0
    written = json.loads((out / "executor_output.json").read_text())
    scores = written["artifacts"]["scores"]["artifacts"][0]
    assert scores["uri"] == str(out / "s")
    assert scores["metadata"] == {
        "wer": float((out / "wer").read_text()),
        "cer": float((out / "cer").read_text()),
        "utterances": 2.0,
        "reference_words": 5.0,
        "wer_en": round(1 / 3, 6),
        "wer_hi": 0.0,
    }
    assert json.loads((out / "s").read_text()) == scores["metadata"]
