"""`runs get` shows what steps measured: their metrics, and their report artifacts
(classification metrics, HTML, Markdown)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2

from skit.pipelines.v1 import run_pb2
from skit_pipelines_cli import render
from skit_pipelines_client import Run

NOW = datetime(2026, 11, 26, 10, 1, 0, tzinfo=UTC)


def metadata(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def evaluated_run(make_run: Any) -> Run:
    confusion = {
        "confusionMatrix": {
            "annotationSpecs": [{"displayName": "yes"}, {"displayName": "no"}],
            "rows": [{"row": [3, 1]}, {"row": [0, 4]}],
        }
    }
    message = make_run(
        state=run_pb2.RUN_STATE_SUCCEEDED,
        steps=[
            run_pb2.Step(name="fetch", state=run_pb2.STEP_STATE_SUCCEEDED),
            run_pb2.Step(
                name="evaluate-slu",
                state=run_pb2.STEP_STATE_SUCCEEDED,
                metrics=[
                    run_pb2.Metric(name="accuracy", value=0.875, artifact="metrics"),
                    run_pb2.Metric(name="test_examples", value=8, artifact="metrics"),
                ],
                output_artifacts=[
                    run_pb2.Artifact(
                        name="confusion_matrix",
                        uri="file:///a/cm",
                        type="system.ClassificationMetrics",
                        metadata=metadata(confusion),
                    ),
                    run_pb2.Artifact(name="page", uri="file:///a/page", type="system.HTML"),
                    run_pb2.Artifact(name="data", uri="file:///a/data", type="system.Dataset"),
                ],
            ),
            run_pb2.Step(
                name="asr",
                state=run_pb2.STEP_STATE_SUCCEEDED,
                metrics=[
                    run_pb2.Metric(name="wer", value=0.1234567, artifact="scores"),
                    run_pb2.Metric(name="wer", value=0.2, artifact="other"),
                ],
                output_artifacts=[
                    run_pb2.Artifact(name="report", uri="s3://b/r.md", type="system.Markdown")
                ],
            ),
        ],
    )
    return Run.of(message)


def test_metrics_are_listed_per_step_with_their_values(make_run):
    run = evaluated_run(make_run)

    assert render.metric_lines(run) == [
        "metrics:",
        "  evaluate-slu  accuracy=0.875  test_examples=8",
        # Two Metrics outputs: each value names its output.
        "  asr           scores.wer=0.123457  other.wer=0.2",
    ]


def test_reports_are_listed_with_what_they_hold(make_run):
    run = evaluated_run(make_run)

    matrix = "classification metrics: 2 classes, accuracy 0.875"
    width = len(matrix)
    assert render.report_lines(run) == [
        "reports:",
        f"  evaluate-slu/confusion_matrix  {matrix}  file:///a/cm",
        f"  evaluate-slu/page              {'HTML':<{width}}  file:///a/page",
        f"  asr/report                     {'Markdown':<{width}}  s3://b/r.md",
    ]


def test_runs_get_shows_metrics_and_reports_after_the_steps(make_run):
    lines = render.describe_run(evaluated_run(make_run), NOW)

    steps = lines.index("steps:")
    assert lines.index("metrics:") > steps and lines.index("reports:") > lines.index("metrics:")


def test_a_run_without_metrics_or_reports_shows_neither(make_run):
    run = Run.of(make_run(steps=[run_pb2.Step(name="fetch")]))

    assert render.metric_lines(run) == [] and render.report_lines(run) == []
    assert "metrics:" not in render.describe_run(run, NOW)
