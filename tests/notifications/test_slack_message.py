"""The Slack message: one concise text per notification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skit_pipelines.domain import Artifact, ErrorInfo, Run, RunState
from skit_pipelines.notifications.sinks.slack import message_text

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def _run(**changes: object) -> Run:
    values: dict[str, object] = {
        "id": "retrain-slu-1a2b",
        "pipeline": "retrain-slu",
        "pipeline_version": "v1",
        "parameters": {"dataset": "s3://b/d.csv", "epochs": 3},
        "labels": {},
        "state": RunState.SUCCEEDED,
        "create_time": T0,
        "update_time": T0,
        "revision": 5,
        "start_time": T0,
        "end_time": T0 + timedelta(minutes=4, seconds=12),
    }
    values.update(changes)
    return Run(**values)  # type: ignore[arg-type]


def test_a_succeeded_run_names_pipeline_state_duration_outputs_and_parameters() -> None:
    text = message_text(_run(outputs=(Artifact(name="model", uri="s3://b/runs/x/model.pkl"),)))
    first, *rest = text.splitlines()
    assert first == (
        ":white_check_mark: *retrain-slu* SUCCEEDED in 4m 12s · `runs/retrain-slu-1a2b`"
    )
    assert rest[0] == "• outputs: s3://b/runs/x/model.pkl"
    assert rest[1] == '• parameters: `dataset="s3://b/d.csv", epochs=3`'
    assert len(rest) == 2


def test_a_failed_kubeflow_run_shows_its_error_and_link() -> None:
    text = message_text(
        _run(
            state=RunState.FAILED,
            parameters={},
            error=ErrorInfo(code=13, message="step train failed: exit code 137"),
            backend_run_url="https://kfp.example.com/#/runs/details/abc",
        )
    )
    assert text.startswith(":x: *retrain-slu* FAILED in 4m 12s")
    assert "• error: step train failed: exit code 137" in text
    assert "• <https://kfp.example.com/#/runs/details/abc|open in Kubeflow>" in text
    assert "parameters" not in text


def test_long_lists_are_cut() -> None:
    outputs = tuple(Artifact(name=f"o{i}", uri=f"s3://b/{i}") for i in range(8))
    text = message_text(_run(outputs=outputs, parameters={"x": "y" * 500}))
    assert "and 3 more" in text
    assert len(text) < 1000
