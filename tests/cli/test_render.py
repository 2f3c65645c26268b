"""The pure parts of the CLI: value parsing and the watch/describe renderings."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from skit.pipelines.v1 import run_pb2
from skit_pipelines_cli import render, values
from skit_pipelines_client import FieldViolation, RPCError, Run, RunState

NOW = datetime(2026, 11, 26, 10, 1, 0, tzinfo=UTC)  # 60 s after the fake runs were created
RUNNING = run_pb2.STEP_STATE_RUNNING


@pytest.fixture
def make_run(make_run: Any) -> Any:
    """conftest's snapshot builder, as the client returns runs."""
    return lambda *args, **fields: Run.of(make_run(*args, **fields))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ("[1,2]", [1, 2]),
        ('{"a":1}', {"a": 1}),
        ('"5"', "5"),
        ("en", "en"),
        ("007", "007"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
    ],
)
def test_parse_value_reads_json_else_text(text, value):
    assert values.parse_value(text) == value
    assert type(values.parse_value(text)) is type(value)


def test_parse_param_splits_on_the_first_equals():
    assert values.parse_param("query=a=b") == ("query", "a=b")
    with pytest.raises(argparse.ArgumentTypeError):
        values.parse_param("=5")


@pytest.mark.parametrize("text", ["running", "RUNNING", "RUN_STATE_RUNNING", " Running "])
def test_parse_run_state_accepts_any_spelling(text):
    assert values.parse_run_state(text) == run_pb2.RUN_STATE_RUNNING


@pytest.mark.parametrize("text", ["unspecified", "done", ""])
def test_parse_run_state_rejects_others(text):
    with pytest.raises(argparse.ArgumentTypeError, match="choose from queued, running"):
        values.parse_run_state(text)


def test_parse_time_takes_naive_times_as_utc():
    assert values.parse_time("2026-11-26T10:00:00") == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert values.parse_time("2026-11-26T10:00:00Z") == datetime(2026, 11, 26, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.25, "4.2s"), (187, "3m07s"), (7500, "2h05m"), (-1, "0.0s")]
)
def test_format_duration(seconds, text):
    assert render.format_duration(seconds) == text


# change_lines: the piped rendering of WatchRun


def test_first_snapshot_lists_the_run_and_every_step(make_run):
    current = make_run(revision=3, steps=[("a", run_pb2.STEP_STATE_SUCCEEDED), ("b", RUNNING)])

    assert render.change_lines(None, current) == [
        "2026-11-26T10:00:03Z runs/abc r3 RUNNING",
        "2026-11-26T10:00:03Z runs/abc r3 RUNNING step a SUCCEEDED",
        "2026-11-26T10:00:03Z runs/abc r3 RUNNING step b RUNNING",
    ]


def test_an_unchanged_snapshot_prints_nothing(make_run):
    before = make_run(revision=3, steps=[("a", RUNNING)])
    after = make_run(revision=4, steps=[("a", RUNNING)])

    assert render.change_lines(before, after) == []


def test_only_the_changed_step_is_printed(make_run):
    before = make_run(revision=3, steps=[("a", RUNNING), ("b", run_pb2.STEP_STATE_PENDING)])
    after = make_run(revision=4, steps=[("a", RUNNING), ("b", RUNNING)])

    assert render.change_lines(before, after) == [
        "2026-11-26T10:00:04Z runs/abc r4 RUNNING step b RUNNING"
    ]


def test_a_retried_step_prints_its_attempt_and_error(make_run):
    failed = run_pb2.Step(
        name="a", state=run_pb2.STEP_STATE_FAILED, attempt=1, error={"message": "OOM"}
    )
    retrying = run_pb2.Step(name="a", state=RUNNING, attempt=2)

    assert render.change_lines(
        make_run(steps=[failed]), make_run(revision=2, steps=[retrying])
    ) == ["2026-11-26T10:00:02Z runs/abc r2 RUNNING step a RUNNING attempt 2"]
    assert render.change_lines(None, make_run(steps=[failed]))[-1].endswith("step a FAILED: OOM")


def test_a_terminal_state_comes_after_the_step_changes(make_run):
    before = make_run(revision=4, steps=[("a", RUNNING)])
    after = make_run(
        state=run_pb2.RUN_STATE_FAILED,
        revision=5,
        steps=[("a", run_pb2.STEP_STATE_FAILED)],
        error={"code": 13, "message": "step a failed"},
    )

    assert render.change_lines(before, after) == [
        "2026-11-26T10:00:05Z runs/abc r5 FAILED step a FAILED",
        "2026-11-26T10:00:05Z runs/abc r5 FAILED: step a failed",
    ]


# render_frame and redraw: the live view on a terminal


@pytest.fixture
def running(make_run, at) -> Run:
    return make_run(
        revision=7,
        start_time=at(10),
        steps=[
            run_pb2.Step(
                name="fetch-calls",
                state=run_pb2.STEP_STATE_CACHED,
                cached=True,
                start_time=at(10),
                end_time=at(12),
            ),
            run_pb2.Step(name="transcribe", state=RUNNING, start_time=at(12)),
            run_pb2.Step(name="train", state=run_pb2.STEP_STATE_PENDING),
        ],
    )


def test_frame_has_a_header_and_a_line_per_step(running):
    frame = render.render_frame(running, NOW)

    assert frame[0] == "runs/abc  pipelines/transcribe-calls  RUNNING  r7  elapsed 50.0s"
    assert [line.split() for line in frame[1:]] == [
        ["✓", "fetch-calls", "cached", "2.0s", "cached"],
        ["▶", "transcribe", "running", "48.0s"],
        ["·", "train", "pending"],
    ]


def test_frame_of_a_finished_run_stops_the_clock(running, at):
    finished = dataclasses.replace(
        running, state=RunState.SUCCEEDED, end_time=at(40).ToDatetime(tzinfo=UTC)
    )

    assert render.render_frame(finished, NOW)[0].endswith("SUCCEEDED  r7  elapsed 30.0s")


def test_ascii_frame_has_no_other_characters(running):
    frame = "\n".join(render.render_frame(running, NOW, ascii_only=True))

    assert frame.isascii()
    assert "+ fetch-calls" in frame and "> transcribe" in frame and ". train" in frame


def test_redraw_moves_up_over_the_previous_frame_and_clips_lines():
    assert render.redraw(0, ["a", "b"], 80) == "\x1b[Ja\nb\n"
    assert render.redraw(3, ["x" * 100], 10) == "\x1b[3A\r\x1b[J" + "x" * 10 + "\n"


# outcome and errors


def test_outcome_of_a_success_lists_the_artifacts(make_run):
    finished = make_run(
        state=run_pb2.RUN_STATE_SUCCEEDED,
        outputs=[
            run_pb2.Artifact(name="transcripts", uri="s3://b/t.csv"),
            run_pb2.Artifact(name="report", uri="file:///tmp/report.html"),
        ],
        output_parameters={"accuracy": 0.75, "rows": 120},
    )

    assert render.outcome_lines(finished) == [
        "outputs:",
        "  transcripts  s3://b/t.csv",
        "  report       file:///tmp/report.html",
        "output parameters:",
        "  accuracy=0.75",
        "  rows=120",
    ]


def test_error_lines_name_code_reason_violations_and_metadata():
    error = RPCError(
        grpc.StatusCode.ALREADY_EXISTS,
        "request_id was used for a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"existing": "runs/abc"},
        violations=[FieldViolation("request_id", "already used")],
    )

    assert render.error_lines(error, "h:1") == [
        "error: request_id was used for a different request (ALREADY_EXISTS: REQUEST_ID_REUSED)",
        "  request_id: already used",
        "  existing: runs/abc",
    ]


def test_error_lines_do_not_repeat_a_reason_equal_to_the_code():
    error = RPCError(grpc.StatusCode.INVALID_ARGUMENT, "bad", reason="INVALID_ARGUMENT")

    assert render.error_lines(error, "h:1") == ["error: bad (INVALID_ARGUMENT)"]


def test_error_lines_say_a_violation_the_message_already_says_once():
    # InvalidArgument(message, field=...): the one violation's description is the message.
    error = RPCError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size must not be negative",
        reason="INVALID_ARGUMENT",
        violations=[FieldViolation("page_size", "page_size must not be negative")],
    )

    assert render.error_lines(error, "h:1") == [
        "error: page_size must not be negative (INVALID_ARGUMENT)"
    ]


def test_error_lines_list_violations_below_the_headline_the_message_starts_with():
    error = RPCError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid parameters for pipelines/x: run.parameters.a: must be a string, got 5;"
        " run.parameters.b: required parameter is missing",
        reason="INVALID_PARAMETERS",
        violations=[
            FieldViolation("run.parameters.a", "must be a string, got 5"),
            FieldViolation("run.parameters.b", "required parameter is missing"),
        ],
    )

    assert render.error_lines(error, "h:1") == [
        "error: invalid parameters for pipelines/x (INVALID_ARGUMENT: INVALID_PARAMETERS)",
        "  run.parameters.a: must be a string, got 5",
        "  run.parameters.b: required parameter is missing",
    ]


def test_error_lines_leave_out_metadata_the_message_says():
    error = RPCError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "runs/abc already finished: it is SUCCEEDED, so there is nothing to cancel",
        reason="RUN_ALREADY_FINISHED",
        metadata={"state": "SUCCEEDED"},
    )

    assert len(render.error_lines(error, "h:1")) == 1


def test_outcome_of_a_failure_does_not_repeat_the_step_error_the_run_error_holds(make_run):
    failed = make_run(
        state=run_pb2.RUN_STATE_FAILED,
        steps=[
            run_pb2.Step(
                name="fetch-calls",
                state=run_pb2.STEP_STATE_FAILED,
                error={"code": 9, "message": "fetch_calls: bad --start-date"},
            )
        ],
        error={"code": 9, "message": "step fetch-calls failed: fetch_calls: bad --start-date"},
    )

    assert render.outcome_lines(failed) == [
        "error: FAILED_PRECONDITION: step fetch-calls failed: fetch_calls: bad --start-date"
    ]
