"""evaluate-asr end to end on the demo data: the run controller, the local backend and the
local executor in process, running the real components."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import csv
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skit_pipelines.domain import Run, RunState, StepState

PIPELINE = "evaluate_asr"


def output_csv(run: Run, name: str) -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    path = Path(unquote(urlparse(artifact.uri).path))
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def test_defaults_score_every_transcription_project(run_pipeline):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert {s.name: s.state for s in run.steps} == {
        "fetch-tagged-dataset": StepState.SUCCEEDED,
        "asr-metrics": StepState.SUCCEEDED,
    }
    metrics = {row["language"]: row for row in output_csv(run, "metrics")}
    assert list(metrics) == ["all", "en", "hi", "ta", "te"]
    wer, cer = run.output_parameters["wer"], run.output_parameters["cer"]
    assert wer == pytest.approx(float(metrics["all"]["wer"]))
    assert cer == pytest.approx(float(metrics["all"]["cer"]))
    # The demo ASR gets about one word in eight wrong, more in the smaller languages.
    assert 0.05 < cer < wer < 0.25
    assert all(0.03 < float(m["wer"]) < 0.4 for m in metrics.values())
    utterances = output_csv(run, "utterances")
    assert len(utterances) == int(metrics["all"]["utterances"]) > 500
    assert sum(int(m["utterances"]) for k, m in metrics.items() if k != "all") == len(utterances)

    (report,) = [a for a in run.outputs if a.name == "report"]
    text = Path(unquote(urlparse(report.uri).path)).read_text(encoding="utf-8")
    assert text.startswith("# ASR evaluation")
    assert f"WER **{wer:.2%}**" in text
    assert "## Worst 20 utterances" in text and "## Most frequent word errors" in text
    # Annotators marked some audio unintelligible: left out, and said so.
    assert "Left out:" in text
    # The scores as a KFP Metrics artifact, in the Run API as typed metrics.
    (scored,) = [s for s in run.steps if s.name == "asr-metrics"]
    logged = {m.name: m.value for m in scored.metrics}
    assert logged["wer"] == wer and logged["cer"] == cer
    assert logged["utterances"] == len(utterances)
    assert {k for k in logged if k.startswith("wer_")} == {"wer_en", "wer_hi", "wer_ta", "wer_te"}
    assert report.type == "system.Markdown"


async def test_one_project_and_a_shorter_worst_list(run_pipeline):
    run = await run_pipeline(project_ids=[32], worst_count=3)
    assert run.state is RunState.SUCCEEDED, run.error
    assert [row["language"] for row in output_csv(run, "metrics")] == ["all", "hi"]
    (report,) = [a for a in run.outputs if a.name == "report"]
    assert "## Worst 3 utterances" in Path(unquote(urlparse(report.uri).path)).read_text()


async def test_an_intent_project_fails_the_run_with_one_clear_reason(run_pipeline):
    run = await run_pipeline(project_ids=[11])
    assert run.state is RunState.FAILED
    assert {s.name: s.state for s in run.steps} == {
        "fetch-tagged-dataset": StepState.FAILED,
        "asr-metrics": StepState.SKIPPED,
    }
    assert "task_type is transcription but 11 is intent" in run.error.message
