"""`skit-pipelines runs watch --all [filters]`: one line (or JSON object) per change,
the filters and cursor sent as WatchRuns fields, and a dropped stream resumed from the
last cursor."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from skit.pipelines.v1 import pipeline_service_pb2, run_pb2
from skit_pipelines_cli import main as cli

K = pipeline_service_pb2.WatchRunsResponse


@pytest.fixture
def fake(fake: Any, make_run: Any) -> Any:
    """The canned service, with a WatchRuns that plays `fake.watch_runs_scripts`: per
    call, (kind, cursor, run id or None, state) messages and then an optional error."""
    fake.watch_runs_scripts = []

    def watch_runs(request: pipeline_service_pb2.WatchRunsRequest, context: Any) -> Any:
        fake.requests.append(request)
        messages, error = fake.watch_runs_scripts.pop(0)
        for kind, cursor, run_id, state in messages:
            response = K(kind=kind, cursor=cursor)
            if run_id is not None:
                response.run.CopyFrom(
                    make_run(run_id, state=state, revision=2, labels={"team": "slu"})
                )
            yield response
        if error is not None:
            context.abort(error, "scripted")

    fake.WatchRuns = watch_runs
    return fake


def run_cli(server: str, *args: str) -> int:
    return cli.main(["--server", server, *args])


RUNNING = run_pb2.RUN_STATE_RUNNING
FAILED = run_pb2.RUN_STATE_FAILED


def test_one_line_per_change_with_filters_and_resume(server, fake, capsys) -> None:
    fake.watch_runs_scripts = [
        (
            [
                (K.KIND_SNAPSHOT, "", "a", RUNNING),
                (K.KIND_SNAPSHOT_COMPLETE, "c1", None, 0),
                (K.KIND_HEARTBEAT, "c2", None, 0),
                (K.KIND_CHANGE, "c3", "a", FAILED),
            ],
            grpc.StatusCode.UNAVAILABLE,
        ),
        ([(K.KIND_RELIST, "c9", None, 0), (K.KIND_DELETED, "ca", "a", FAILED)], None),
    ]
    code = run_cli(
        server,
        *("runs", "watch", "--all", "--pipeline", "transcribe-calls"),
        *("--state", "failed", "--label", "team=slu", "--initial"),
    )
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "2026-11-26T10:00:02Z  runs/a  pipelines/transcribe-calls  RUNNING  r2  now  team=slu",
        "-- the runs above match now; their changes follow --",
        "2026-11-26T10:00:02Z  runs/a  pipelines/transcribe-calls  FAILED  r2  team=slu",
        "-- changes were lost (the resume point was too old to replay): list the runs again"
        " (`runs list`); changes from now follow --",
        "2026-11-26T10:00:02Z  runs/a  pipelines/transcribe-calls  FAILED  r2  deleted  team=slu",
    ]
    assert "lost the stream (UNAVAILABLE); resuming in" in captured.err
    first, again = fake.received(pipeline_service_pb2.WatchRunsRequest)
    assert first.pipeline == "pipelines/transcribe-calls"
    assert list(first.states) == [run_pb2.RUN_STATE_FAILED]
    assert dict(first.labels) == {"team": "slu"}
    assert (first.after_cursor, first.initial_snapshot) == ("", True)
    assert (again.after_cursor, again.initial_snapshot) == ("c3", False)
    assert again.labels == first.labels


def test_json_prints_every_message_heartbeats_included(server, fake, capsys) -> None:
    fake.watch_runs_scripts = [
        ([(K.KIND_HEARTBEAT, "c2", None, 0), (K.KIND_CHANGE, "c3", "a", RUNNING)], None)
    ]
    assert (
        run_cli(server, "--output", "json", "runs", "watch", "--all", "--after-cursor", "c1") == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"kind": "HEARTBEAT", "cursor": "c2"}
    assert (lines[1]["kind"], lines[1]["cursor"], lines[1]["run"]["name"]) == (
        "CHANGE",
        "c3",
        "runs/a",
    )
    (request,) = fake.received(pipeline_service_pb2.WatchRunsRequest)
    assert request.after_cursor == "c1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("runs", "watch"), "give a run to follow, or --all"),
        (("runs", "watch", "abc", "--all"), "not both"),
        (("runs", "watch", "abc", "--label", "a=b"), "go with --all"),
    ],
)
def test_run_or_all_is_a_usage_error(server, fake, capsys, args, message) -> None:
    assert run_cli(server, *args) == 2
    assert message in capsys.readouterr().err
    assert not fake.received(pipeline_service_pb2.WatchRunsRequest)


def test_an_invalid_filter_names_the_field(server, fake, capsys) -> None:
    fake.watch_runs_scripts = [([], grpc.StatusCode.INVALID_ARGUMENT)]
    assert run_cli(server, "runs", "watch", "--all", "--after-cursor", "junk") == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
