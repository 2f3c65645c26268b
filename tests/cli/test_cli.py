"""The skit-pipelines command against an in-process fake PipelineService."""

from __future__ import annotations

import gc
import io
import json
import re
import socket
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from skit.pipelines.v1 import pipeline_service_pb2, run_pb2
from skit_pipelines.config import ServerConfig
from skit_pipelines_cli import live, local
from skit_pipelines_cli import main as cli
from skit_pipelines_cli.parser import build_parser
from skit_pipelines_client import PipelinesClient

RUNNING = run_pb2.STEP_STATE_RUNNING


def run_cli(server: str, *args: str) -> int:
    return cli.main(["--server", server, *args])


# pipelines


def test_pipelines_list_shows_a_row_per_pipeline_across_pages(server, fake, capsys):
    assert run_cli(server, "pipelines", "list") == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "PARAMS", "DESCRIPTION"]
    assert lines[1].split() == [
        "pipelines/transcribe-calls",
        "3f2a9c1b4d5e",
        "2",
        "Transcribes",
        "a",
        "sample",
        "of",
        "calls.",
    ]
    assert lines[2].split()[:3] == ["pipelines/train-intent", "999999999999", "2"]
    assert len(lines) == 3
    # The fake serves one pipeline per page: the second page was asked for.
    tokens = [r.page_token for r in fake.received(pipeline_service_pb2.ListPipelinesRequest)]
    assert tokens == ["", "1"]


def test_pipelines_get_shows_the_parameters_table(server, fake, capsys):
    assert run_cli(server, "pipelines", "get", "transcribe-calls") == 0

    out = capsys.readouterr().out
    assert fake.received(pipeline_service_pb2.GetPipelineRequest)[0].name == (
        "pipelines/transcribe-calls"
    )
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PARAMETER"))
    assert lines[header].split() == ["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"]
    assert lines[header + 1].split() == [
        "calls", "integer", "yes", "-", "How", "many", "calls", "to", "sample."
    ]  # fmt: skip
    assert lines[header + 2].split() == ["lang", "string", "no", '"en"', "Language", "code."]
    rules = lines.index("PARAMETER  MUST BE")
    assert lines[rules + 1 :] == ["calls      from 1 to 1000"]
    assert "Then writes them to S3." in out
    assert "version:  " + "sha256:3f2a9c1b4d5e" in out


def test_pipelines_get_shows_whole_number_defaults_without_a_fraction(server, capsys):
    assert run_cli(server, "pipelines", "get", "pipelines/train-intent") == 0

    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epochs"))
    assert row.split()[:4] == ["epochs", "integer", "no", "3"]


# runs create


def test_create_sends_params_as_typed_struct_values(server, fake, capsys):
    code = run_cli(
        server,
        "runs", "create", "transcribe-calls",
        "--param", "calls=5",
        "--param", "lang=en",
        "--param", "dry_run=true",
        "--param", "ids=[1,2]",
        "--param", 'options={"a":1}',
        "--param", 'code="007"',
        "--param", "note=",
        "--param", "ratio=NaN",
    )  # fmt: skip

    assert code == 0
    assert capsys.readouterr().out == "runs/transcribe-calls-1\n"
    (request,) = fake.received(pipeline_service_pb2.CreateRunRequest)
    fields = request.run.parameters.fields
    assert request.run.pipeline == "pipelines/transcribe-calls"
    assert fields["calls"] == struct_pb2.Value(number_value=5)
    assert fields["lang"] == struct_pb2.Value(string_value="en")
    assert fields["dry_run"] == struct_pb2.Value(bool_value=True)
    assert [v.number_value for v in fields["ids"].list_value.values] == [1, 2]
    assert fields["options"].struct_value.fields["a"].number_value == 1
    assert fields["code"] == struct_pb2.Value(string_value="007")
    assert fields["note"] == struct_pb2.Value(string_value="")
    assert fields["ratio"] == struct_pb2.Value(string_value="NaN")
    assert request.request_id == ""
    assert request.run_id == ""


def test_create_sends_labels_request_id_and_run_id(server, fake, capsys):
    code = run_cli(
        server,
        "runs", "create", "pipelines/transcribe-calls",
        "--label", "team=asr",
        "--label", "ticket=ML-1=2",
        "--request-id", "6f1c2a1e-0000-4000-8000-000000000001",
        "--run-id", "nightly-1",
    )  # fmt: skip

    assert code == 0
    assert capsys.readouterr().out == "runs/nightly-1\n"
    (request,) = fake.received(pipeline_service_pb2.CreateRunRequest)
    assert dict(request.run.labels) == {"team": "asr", "ticket": "ML-1=2"}
    assert request.request_id == "6f1c2a1e-0000-4000-8000-000000000001"
    assert request.run_id == "nightly-1"
    assert request.run.parameters.fields == {}


def test_param_json_file_is_merged_and_param_flags_win(server, fake, tmp_path: Path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"calls": 10, "lang": "hi"}))

    code = run_cli(
        server,
        "runs", "create", "transcribe-calls",
        "--param-json", str(params),
        "--param", "calls=3",
    )  # fmt: skip

    assert code == 0
    (request,) = fake.received(pipeline_service_pb2.CreateRunRequest)
    fields = request.run.parameters.fields
    assert fields["calls"].number_value == 3
    assert fields["lang"].string_value == "hi"


def test_unreadable_param_json_is_a_usage_error(server, fake, tmp_path: Path, capsys):
    code = run_cli(server, "runs", "create", "x", "--param-json", str(tmp_path / "missing.json"))

    assert code == 2
    assert "error: --param-json" in capsys.readouterr().err
    assert fake.received(pipeline_service_pb2.CreateRunRequest) == []


@pytest.mark.parametrize("flag", ["--label", "--param"])
def test_assignment_without_equals_is_a_usage_error(server, fake, flag, capsys):
    assert run_cli(server, "runs", "create", "x", flag, "team") == 2

    assert "expected KEY=VALUE, got 'team'" in capsys.readouterr().err
    assert fake.requests == []


def test_invalid_argument_prints_each_field_violation_once(server, capsys):
    code = run_cli(server, "runs", "create", "transcribe-calls", "--param", "calls=2.5")

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: invalid parameters for pipelines/transcribe-calls"
        " (INVALID_ARGUMENT: INVALID_PARAMETERS)",
        "  run.parameters.calls: must be an integer, got 2.5",
        "  run.parameters.colour: unknown parameter",
    ]


# runs get / list / cancel


def test_not_found_prints_one_line_without_traceback(server, capsys):
    assert run_cli(server, "runs", "get", "nope") == 1

    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "error: run runs/nope not found (NOT_FOUND: RUN_NOT_FOUND)"
    ]
    assert captured.out == ""


def test_unreachable_server_says_so(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"

    assert cli.main(["--server", closed, "pipelines", "list"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the service at {closed} (UNAVAILABLE:")
    assert "skit-pipelines serve" in err
    assert "Traceback" not in err


def test_server_defaults_to_skit_server_env(server, monkeypatch, capsys):
    monkeypatch.setenv("SKIT_SERVER", server)

    assert cli.main(["pipelines", "list"]) == 0
    assert "pipelines/train-intent" in capsys.readouterr().out


def test_runs_get_describes_the_run(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run(
        state=run_pb2.RUN_STATE_FAILED,
        steps=[
            run_pb2.Step(name="fetch-calls", state=run_pb2.STEP_STATE_SUCCEEDED),
            run_pb2.Step(
                name="transcribe",
                state=run_pb2.STEP_STATE_FAILED,
                error={"code": 13, "message": "exit code 3"},
            ),
        ],
        labels={"team": "asr"},
        error={"code": 13, "message": "step transcribe failed"},
    )

    assert run_cli(server, "runs", "get", "abc") == 0

    out = capsys.readouterr().out
    assert "state:       FAILED (r1)" in out
    assert "labels:      team=asr" in out
    assert "fetch-calls" in out and "transcribe" in out
    assert "error: INTERNAL: step transcribe failed" in out
    assert "  step transcribe: exit code 3" in out


def test_runs_list_sends_filters_and_stops_at_the_limit(server, fake, make_run, capsys):
    for i in range(5):
        fake.runs[f"runs/r{i}"] = make_run(f"r{i}", labels={"team": "asr"})

    code = run_cli(
        server,
        "runs", "list",
        "--pipeline", "transcribe-calls",
        "--state", "running", "FAILED",
        "--state", "RUN_STATE_QUEUED",
        "--label", "team=asr",
        "--created-after", "2026-11-26T00:00:00Z",
        "--limit", "3",
    )  # fmt: skip

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "PIPELINE", "STATE", "CREATED", "LABELS"]
    assert [line.split()[0] for line in lines[1:]] == ["runs/r0", "runs/r1", "runs/r2"]
    assert lines[1].split()[1:] == [
        "pipelines/transcribe-calls",
        "RUNNING",
        "2026-11-26T10:00:00Z",
        "team=asr",
    ]
    requests = fake.received(pipeline_service_pb2.ListRunsRequest)
    assert len(requests) == 1  # the first page already held 3 runs
    (request,) = requests
    assert request.pipeline == "pipelines/transcribe-calls"
    assert list(request.states) == [
        run_pb2.RUN_STATE_RUNNING,
        run_pb2.RUN_STATE_FAILED,
        run_pb2.RUN_STATE_QUEUED,
    ]
    assert dict(request.labels) == {"team": "asr"}
    assert request.page_size == 3
    assert request.create_time_after.seconds == 1795651200
    assert not request.HasField("create_time_before")


def test_runs_list_limit_zero_follows_every_page(server, fake, make_run, capsys):
    for i in range(5):
        fake.runs[f"runs/r{i}"] = make_run(f"r{i}")

    assert run_cli(server, "runs", "list", "--limit", "0") == 0

    assert len(capsys.readouterr().out.splitlines()) == 6
    assert fake.received(pipeline_service_pb2.ListRunsRequest)[0].page_size == 0


def test_runs_list_rejects_an_unknown_state(server, fake, capsys):
    assert run_cli(server, "runs", "list", "--state", "sleeping") == 2

    assert "unknown state 'sleeping'" in capsys.readouterr().err
    assert fake.requests == []


def test_runs_cancel_prints_the_new_state(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run()

    assert run_cli(server, "runs", "cancel", "runs/abc") == 0

    assert capsys.readouterr().out == "runs/abc CANCELLING\n"


@pytest.mark.parametrize("output", ["text", "json"])
def test_runs_cancel_of_a_finished_run_says_so_in_one_line_and_exits_1(
    server, fake, make_run, capsys, output
):
    fake.runs["runs/abc"] = make_run(state=run_pb2.RUN_STATE_SUCCEEDED)

    assert run_cli(server, "--output", output, "runs", "cancel", "abc") == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: runs/abc already finished: it is SUCCEEDED, so there is nothing to cancel"
        " (FAILED_PRECONDITION: RUN_ALREADY_FINISHED)"
    ]


def test_runs_delete_deletes_a_finished_run(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run(state=run_pb2.RUN_STATE_SUCCEEDED)

    assert run_cli(server, "runs", "delete", "abc") == 0

    assert capsys.readouterr().out == "runs/abc deleted\n"
    assert fake.requests == [pipeline_service_pb2.DeleteRunRequest(name="runs/abc")]
    assert "runs/abc" not in fake.runs


def test_runs_delete_of_a_running_run_is_an_error(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run()

    assert run_cli(server, "runs", "delete", "runs/abc") != 0

    assert "RUN_NOT_FINISHED" in capsys.readouterr().err
    assert "runs/abc" in fake.runs


def test_runs_retry_prints_the_new_run(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run()

    assert run_cli(server, "runs", "retry", "abc", "--request-id", "r-1") == 0

    assert capsys.readouterr().out == "runs/retried-1\n"
    (request,) = fake.received(pipeline_service_pb2.RetryRunRequest)
    assert (request.name, request.request_id) == ("runs/abc", "r-1")


def test_runs_logs_prints_lines_with_attempt_and_stderr_marks(server, fake, capsys):
    def line(text, stream=pipeline_service_pb2.LOG_STREAM_STDOUT, attempt=1):
        return pipeline_service_pb2.LogLine(
            time=timestamp_pb2.Timestamp(seconds=1795687205),
            stream=stream,
            text=text,
            attempt=attempt,
        )

    fake.logs[("runs/abc", "fetch-calls")] = [
        line("sampling 20 calls"),
        line("no calls match", pipeline_service_pb2.LOG_STREAM_STDERR),
        line("sampling again", attempt=2),
    ]

    assert run_cli(server, "runs", "logs", "abc", "fetch-calls", "--follow") == 0

    assert capsys.readouterr().out.splitlines() == [
        "2026-11-26T10:00:05Z #1  sampling 20 calls",
        "2026-11-26T10:00:05Z #1! no calls match",
        "2026-11-26T10:00:05Z #2  sampling again",
    ]
    (request,) = fake.received(pipeline_service_pb2.ReadStepLogsRequest)
    assert request.follow and request.step == "fetch-calls"


def test_runs_logs_of_an_unknown_step_fails_clearly(server, capsys):
    assert run_cli(server, "runs", "logs", "abc", "nope") == 1

    assert "STEP_NOT_FOUND" in capsys.readouterr().err


# runs watch


@pytest.fixture
def succeeding(make_run, at) -> list[run_pb2.Run]:
    fetch_cached = run_pb2.Step(name="fetch-calls", state=run_pb2.STEP_STATE_CACHED, cached=True)
    return [
        make_run(state=run_pb2.RUN_STATE_QUEUED, revision=1),
        make_run(revision=2, steps=[("fetch-calls", RUNNING)]),
        make_run(revision=3, steps=[("fetch-calls", RUNNING)]),
        make_run(revision=4, steps=[fetch_cached, ("transcribe", RUNNING)]),
        make_run(
            state=run_pb2.RUN_STATE_SUCCEEDED,
            revision=5,
            steps=[fetch_cached, ("transcribe", run_pb2.STEP_STATE_SUCCEEDED)],
            outputs=[run_pb2.Artifact(name="transcripts", uri="s3://bucket/abc/transcripts.csv")],
        ),
    ]


SUCCEEDING_LINES = [
    "2026-11-26T10:00:01Z runs/abc r1 QUEUED",
    "2026-11-26T10:00:02Z runs/abc r2 RUNNING",
    "2026-11-26T10:00:02Z runs/abc r2 RUNNING step fetch-calls RUNNING",
    "2026-11-26T10:00:04Z runs/abc r4 RUNNING step fetch-calls CACHED",
    "2026-11-26T10:00:04Z runs/abc r4 RUNNING step transcribe RUNNING",
    "2026-11-26T10:00:05Z runs/abc r5 SUCCEEDED step transcribe SUCCEEDED",
    "2026-11-26T10:00:05Z runs/abc r5 SUCCEEDED",
    "outputs:",
    "  transcripts  s3://bucket/abc/transcripts.csv",
]


def test_watch_prints_one_line_per_change_and_exits_0(server, fake, succeeding, capsys):
    fake.snapshots = succeeding

    assert run_cli(server, "runs", "watch", "abc") == 0

    assert capsys.readouterr().out.splitlines() == SUCCEEDING_LINES
    (request,) = fake.received(pipeline_service_pb2.WatchRunRequest)
    assert request.name == "runs/abc"
    assert request.after_revision == 0


def test_watch_passes_after_revision(server, fake, succeeding, capsys):
    fake.snapshots = succeeding

    assert run_cli(server, "runs", "watch", "abc", "--after-revision", "3") == 0

    assert fake.received(pipeline_service_pb2.WatchRunRequest)[0].after_revision == 3
    # The first snapshot received is printed whole: both steps, then the rest.
    assert capsys.readouterr().out.splitlines()[:3] == [
        "2026-11-26T10:00:04Z runs/abc r4 RUNNING",
        "2026-11-26T10:00:04Z runs/abc r4 RUNNING step fetch-calls CACHED",
        "2026-11-26T10:00:04Z runs/abc r4 RUNNING step transcribe RUNNING",
    ]


@pytest.mark.parametrize(
    ("state", "last_line"),
    [
        (run_pb2.RUN_STATE_FAILED, "error: INTERNAL: step fetch-calls failed"),
        (run_pb2.RUN_STATE_CANCELLED, "cancelled"),
    ],
)
def test_watch_exits_1_when_the_run_does_not_succeed(
    server, fake, make_run, state, last_line, capsys
):
    fake.snapshots = [
        make_run(revision=1, steps=[("fetch-calls", RUNNING)]),
        make_run(
            state=state,
            revision=2,
            steps=[("fetch-calls", run_pb2.STEP_STATE_FAILED)],
            error={"code": 13, "message": "step fetch-calls failed"}
            if state == run_pb2.RUN_STATE_FAILED
            else None,
        ),
    ]

    assert run_cli(server, "runs", "watch", "abc") == 1

    assert capsys.readouterr().out.splitlines()[-1] == last_line


def test_watch_exits_1_when_the_stream_ends_before_a_terminal_state(server, fake, make_run, capsys):
    fake.snapshots = [make_run(revision=1)]

    assert run_cli(server, "runs", "watch", "abc") == 1

    assert "ended before the run finished" in capsys.readouterr().err


def test_watch_resumes_after_the_last_revision_when_the_server_drops(
    server, fake, succeeding, capsys
):
    fake.snapshots = succeeding
    fake.drop_watch_after = 2

    assert run_cli(server, "runs", "watch", "abc") == 0

    captured = capsys.readouterr()
    assert captured.out.splitlines() == SUCCEEDING_LINES
    assert "resuming" in captured.err
    revisions = [r.after_revision for r in fake.received(pipeline_service_pb2.WatchRunRequest)]
    assert revisions == [0, 2]


def test_live_watch_redraws_in_place_and_draws_below_a_note(server, fake, succeeding, capsys):
    fake.snapshots = succeeding
    fake.drop_watch_after = 2
    out = io.StringIO()

    with PipelinesClient(server) as client:
        assert live.watch(client, "abc", out, live=True) == 0

    text = out.getvalue()
    assert text.startswith("\x1b[?25l\x1b[Jruns/abc  pipelines/transcribe-calls  QUEUED  r1")
    # Every frame but the first, and the first after the "resuming" note, moves up over
    # the one before it.
    moves = re.findall(r"(\x1b\[\d+A\r)?\x1b\[J", text)
    assert moves.count("") == 2
    assert "\x1b[3A\r" in moves  # the three-line frame of r4 replaced by the next one
    final = text.rsplit("\x1b[J", 1)[1]
    header, *steps = final.splitlines()[:3]
    assert header.startswith("runs/abc  pipelines/transcribe-calls  SUCCEEDED  r5  elapsed ")
    assert [step.split() for step in steps] == [
        ["+", "fetch-calls", "cached", "cached"],
        ["+", "transcribe", "succeeded"],
    ]
    assert text.endswith("\x1b[?25houtputs:\n  transcripts  s3://bucket/abc/transcripts.csv\n")
    assert "resuming" in capsys.readouterr().err


class _Recorder(io.StringIO):
    """One of two streams writing into one shared, ordered list."""

    def __init__(self, stream: str, shown: list[tuple[str, str]]) -> None:
        super().__init__()
        self._stream = stream
        self._shown = shown

    def write(self, text: str) -> int:
        self._shown.append((self._stream, text))
        return len(text)


def test_live_watch_notes_a_dropped_stream_after_the_frames_received_before_it(
    server, fake, succeeding, monkeypatch
):
    """The stream is read on another thread; when drawing lags behind it, the note about
    the dropped stream still comes after the frames of what arrived before the drop."""
    fake.snapshots = succeeding
    fake.drop_watch_after = 2
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(sys, "stderr", _Recorder("err", shown))
    render_frame = live.render_frame
    lagged = []

    def slow_first_frame(*args, **kwargs):
        if not lagged:
            lagged.append(True)
            time.sleep(0.5)  # the stream goes on meanwhile, and drops
        return render_frame(*args, **kwargs)

    monkeypatch.setattr(live, "render_frame", slow_first_frame)

    with PipelinesClient(server) as client:
        assert live.watch(client, "abc", _Recorder("out", shown), live=True) == 0

    note = next(i for i, (stream, text) in enumerate(shown) if "resuming" in text)
    assert shown[note][0] == "err"
    before = "".join(text for stream, text in shown[:note] if stream == "out")
    after = "".join(text for stream, text in shown[note:] if stream == "out")
    assert "  r2" in before and "  r3" not in before
    assert "  r5" in after


def test_watch_of_a_missing_run_is_an_error(server, fake, capsys):
    assert run_cli(server, "runs", "watch", "gone") == 1

    assert capsys.readouterr().err.splitlines() == [
        "error: run runs/gone not found (NOT_FOUND: RUN_NOT_FOUND)"
    ]


def test_create_with_watch_prints_the_name_then_the_progress(server, fake, succeeding, capsys):
    fake.snapshots = succeeding

    assert run_cli(server, "runs", "create", "transcribe-calls", "--watch") == 0

    assert capsys.readouterr().out.splitlines() == ["runs/transcribe-calls-1", *SUCCEEDING_LINES]


def test_create_with_watch_exits_1_when_the_run_fails(server, fake, make_run, capsys):
    fake.snapshots = [make_run(state=run_pb2.RUN_STATE_FAILED, revision=1)]

    assert run_cli(server, "runs", "create", "transcribe-calls", "--watch") == 1


def test_ctrl_c_exits_130_without_traceback(server, fake, monkeypatch, capsys):
    def interrupted(self, name, after_revision=0):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(PipelinesClient, "watch_run", interrupted)

    assert run_cli(server, "runs", "watch", "abc") == 130

    err = capsys.readouterr().err
    assert "runs/abc keeps running" in err
    assert "Traceback" not in err


# --output json


def test_json_output_of_a_run(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run(labels={"team": "asr"})

    assert run_cli(server, "--output", "json", "runs", "get", "abc") == 0

    document = json.loads(capsys.readouterr().out)
    assert document["name"] == "runs/abc"
    assert document["state"] == "RUN_STATE_RUNNING"
    assert document["labels"] == {"team": "asr"}


def test_json_output_of_a_list_given_after_the_command(server, capsys):
    assert run_cli(server, "pipelines", "list", "--output", "json") == 0

    text = capsys.readouterr().out
    document = json.loads(text)
    assert [p["name"] for p in document] == ["pipelines/transcribe-calls", "pipelines/train-intent"]
    assert document[0]["parameters"][1]["defaultValue"] == "en"
    epochs, learning_rate = document[1]["parameters"]
    assert (json.dumps(epochs["defaultValue"]), json.dumps(learning_rate["defaultValue"])) == (
        "3",
        "1.0",
    )
    assert document[0]["parameters"][0]["rules"][0]["range"] == {"minimum": 1, "maximum": 1000}
    assert '"minimum": 1,' in text


def test_json_and_text_show_values_as_their_parameters_type_them(server, fake, make_run, capsys):
    parameters = struct_pb2.Struct()
    parameters.update({"calls": 20, "lang": "en", "extra": [1, 2.5]})
    fake.runs["runs/abc"] = make_run(parameters=parameters)
    train = struct_pb2.Struct()
    train.update({"epochs": 3, "learning_rate": 1})
    fake.runs["runs/xyz"] = make_run("xyz", pipeline="pipelines/train-intent", parameters=train)

    assert run_cli(server, "--output", "json", "runs", "get", "abc") == 0
    assert run_cli(server, "--output", "json", "runs", "get", "xyz") == 0
    assert run_cli(server, "runs", "get", "xyz") == 0

    first, second, text = capsys.readouterr().out.split("\n}\n")
    # A Struct's keys come in no fixed order: look for each value as written, not its place.
    assert re.search(r'"calls": 20\b(?!\.)', first)
    assert '"extra": [\n      1,\n      2.5\n    ]' in first
    assert json.loads(second + "}")["parameters"] == {"epochs": 3, "learning_rate": 1.0}
    assert '"learning_rate": 1.0' in second
    assert "parameters:  epochs=3, learning_rate=1.0" in text


def test_json_watch_prints_one_snapshot_per_line(server, fake, succeeding, capsys):
    fake.snapshots = succeeding

    assert run_cli(server, "runs", "watch", "abc", "--output", "json") == 0

    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["revision"] for d in documents] == ["1", "2", "3", "4", "5"]


# serve and demo-data (their implementations are stand-ins here)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "7000", "--retention-days", "7.5", "--backend", "kubeflow"],
        ["serve", "--max-labels", "3", "--import-root", "a", "--import-root", "b"],
        ["tokens", "add", "reports", "--role", "viewer", "--tokens-file", "t.json"],
        ["demo-data", "--seed", "7", "--calls-db-url", "postgresql://db/calls"],
    ],
)
def test_a_local_command_parses_alike_with_only_its_parser_built(argv):
    # main builds only the named command's parser when the arguments start with one.
    alone = build_parser({}, command=argv[0])

    assert vars(alone.parse_args(argv)) == vars(build_parser({}).parse_args(argv))


def test_a_local_command_rejects_bad_arguments_as_the_whole_parser_does(capsys):
    assert cli.main(["serve", "--port", "seven"]) == 2
    alone = capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser({}).parse_args(["serve", "--port", "seven"])

    assert alone == capsys.readouterr().err
    assert "skit-pipelines serve: error: argument --port: invalid int value" in alone


def test_serve_flags_override_the_environment(monkeypatch, tmp_path: Path):
    seen: list[ServerConfig] = []
    fake_server = types.ModuleType("skit_pipelines.server")
    fake_server.serve = lambda config: seen.append(config) or 3
    monkeypatch.setitem(sys.modules, "skit_pipelines.server", fake_server)
    monkeypatch.setenv("SKIT_HOST", "0.0.0.0")
    monkeypatch.setenv("SKIT_PORT", "6000")
    monkeypatch.setenv("SKIT_HOME", str(tmp_path / "from-env"))

    assert cli.main(["serve", "--port", "7000"]) == 3

    (config,) = seen
    assert (config.host, config.port, config.home) == ("0.0.0.0", 7000, tmp_path / "from-env")


class _CountingServerModule(types.ModuleType):
    """Records whether the collector runs when `serve` is imported from it."""

    def __init__(self) -> None:
        super().__init__("skit_pipelines.server")
        self.collecting: list[bool] = []

    def __getattr__(self, name: str) -> Any:
        if name != "serve":
            raise AttributeError(name)
        self.collecting.append(gc.isenabled())
        return lambda config: 0


def test_serve_imports_the_server_with_the_collector_off_and_sets_its_policy(
    monkeypatch,
):
    fake_server = _CountingServerModule()
    monkeypatch.setitem(sys.modules, "skit_pipelines.server", fake_server)
    frozen = gc.get_freeze_count()
    thresholds = gc.get_threshold()

    try:
        assert cli.main(["serve"]) == 0

        assert fake_server.collecting == [False]
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
        # Young collections wait for more objects than a fan-out's watchers hold.
        assert gc.get_threshold() == (local.YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_serve_retention_days_from_the_flag_or_the_environment(monkeypatch):
    seen: list[ServerConfig] = []
    fake_server = types.ModuleType("skit_pipelines.server")
    fake_server.serve = lambda config: seen.append(config) or 0
    monkeypatch.setitem(sys.modules, "skit_pipelines.server", fake_server)

    assert cli.main(["serve"]) == 0
    monkeypatch.setenv("SKIT_RETENTION_DAYS", "30")
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--retention-days", "7.5"]) == 0

    assert [config.retention_days for config in seen] == [None, 30.0, 7.5]


def test_serve_reports_a_bad_environment_variable(monkeypatch, capsys):
    seen: list[ServerConfig] = []
    fake_server = types.ModuleType("skit_pipelines.server")
    fake_server.serve = lambda config: seen.append(config) or 0
    monkeypatch.setitem(sys.modules, "skit_pipelines.server", fake_server)
    monkeypatch.setenv("SKIT_PORT", "fifty")

    assert cli.main(["serve"]) == 2
    assert "bad SKIT_* environment variable" in capsys.readouterr().err
    assert seen == []


def test_demo_data_defaults_to_sqlite_files_under_home(monkeypatch, tmp_path: Path, capsys):
    calls: list[tuple[tuple, dict]] = []
    fake_demo = types.ModuleType("skit_demo")

    def generate(*args, **kwargs):
        calls.append((args, kwargs))
        return {"calls": 10, "metrics": 40}

    fake_demo.generate = generate
    monkeypatch.setitem(sys.modules, "skit_demo", fake_demo)

    assert cli.main(["demo-data", "--home", str(tmp_path), "--calls", "10"]) == 0

    home = tmp_path.resolve()
    assert calls == [
        (
            (f"sqlite:///{home}/demo/calls.db", f"sqlite:///{home}/demo/metrics.db"),
            {"calls": 10, "annotations_db_url": f"sqlite:///{home}/demo/annotations.db"},
        )
    ]
    assert (home / "demo").is_dir()
    assert capsys.readouterr().out == "calls: 10\nmetrics: 40\n"


def test_demo_data_passes_explicit_urls_and_seed(monkeypatch, tmp_path: Path):
    calls: list[tuple[tuple, dict]] = []
    fake_demo = types.ModuleType("skit_demo")
    fake_demo.generate = lambda *args, **kwargs: calls.append((args, kwargs)) or "done"
    monkeypatch.setitem(sys.modules, "skit_demo", fake_demo)

    code = cli.main(
        [
            "demo-data",
            "--calls-db-url", "postgresql://db/calls",
            "--metrics-db-url", "postgresql://db/metrics",
            "--seed", "7",
        ]
    )  # fmt: skip

    assert code == 0
    assert calls == [
        (
            ("postgresql://db/calls", "postgresql://db/metrics"),
            {"seed": 7, "annotations_db_url": None},
        )
    ]
