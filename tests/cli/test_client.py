"""PipelinesClient against the in-process fake service."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from skit.pipelines.v1 import pipeline_service_pb2, run_pb2
from skit_pipelines_cli import main as cli
from skit_pipelines_client import (
    FieldViolation,
    PipelinesClient,
    RPCError,
    pipeline_name,
    run_name,
)


@pytest.fixture
def client(server):
    with PipelinesClient(server, timeout=5) as client:
        yield client


def test_names_accept_short_and_full_forms():
    assert run_name("abc") == run_name("runs/abc") == "runs/abc"
    assert pipeline_name("x") == pipeline_name("pipelines/x") == "pipelines/x"


def test_errors_carry_code_reason_domain_and_violations(client):
    with pytest.raises(RPCError) as raised:
        client.create_run("transcribe-calls", {"calls": 2.5}, {})

    error = raised.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PARAMETERS"
    assert error.domain == "pipelines.skit.ai"
    assert error.violations == (
        FieldViolation("run.parameters.calls", "must be an integer, got 2.5"),
        FieldViolation("run.parameters.colour", "unknown parameter"),
    )
    assert not error.retryable


def test_create_run_returns_the_run(client, fake):
    created = client.create_run("transcribe-calls", {"calls": 5}, {"team": "asr"}, run_id="r1")

    assert created.name == "runs/r1"
    assert created.state == run_pb2.RUN_STATE_QUEUED
    assert fake.runs["runs/r1"].labels["team"] == "asr"


def test_delete_run_deletes_a_finished_run(client, fake, make_run):
    fake.runs["runs/done"] = make_run("done", state=run_pb2.RUN_STATE_FAILED)

    assert client.delete_run("done") is None

    assert "runs/done" not in fake.runs
    with pytest.raises(RPCError) as again:
        client.delete_run("runs/done")
    assert (again.value.code, again.value.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")


def test_list_runs_fetches_pages_as_they_are_consumed(client, fake, make_run):
    for i in range(5):
        fake.runs[f"runs/r{i}"] = make_run(f"r{i}")

    runs = client.list_runs(page_size=2)
    first = next(runs)

    assert first.name == "runs/r0"
    assert len(fake.received(pipeline_service_pb2.ListRunsRequest)) == 1
    assert [run.name for run in runs] == ["runs/r1", "runs/r2", "runs/r3", "runs/r4"]
    tokens = [r.page_token for r in fake.received(pipeline_service_pb2.ListRunsRequest)]
    assert tokens == ["", "2", "4"]


def test_unary_calls_have_the_default_deadline(server, fake, make_run, capsys):
    fake.runs["runs/abc"] = make_run()
    fake.get_run_delay = 1.0

    with PipelinesClient(server, timeout=0.2) as client, pytest.raises(RPCError) as raised:
        client.get_run("abc")
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED

    assert cli.main(["--server", server, "--timeout", "0.2", "runs", "get", "abc"]) == 1
    assert "did not answer in time (DEADLINE_EXCEEDED)" in capsys.readouterr().err


def test_watch_run_yields_runs(client, fake, make_run):
    fake.snapshots = [make_run(revision=1), make_run(state=run_pb2.RUN_STATE_SUCCEEDED, revision=2)]

    assert [run.revision for run in client.watch_run("runs/abc")] == [1, 2]
    assert fake.received(pipeline_service_pb2.WatchRunRequest)[0].name == "runs/abc"


def test_runs_are_typed_with_one_get_pipeline_per_pipeline_version(client, fake, make_run):
    parameters = struct_pb2.Struct()
    parameters.update({"calls": 20, "lang": "en"})
    for i in range(3):
        fake.runs[f"runs/r{i}"] = make_run(f"r{i}", parameters=parameters, pipeline_version="v1")

    runs = [client.get_run(f"r{i}") for i in range(3)] + list(client.list_runs())

    assert all(run.parameters == {"calls": 20, "lang": "en"} for run in runs)
    assert all(type(run.parameters["calls"]) is int for run in runs)
    assert str(runs[0].state) == "RUNNING" and runs[0].state == run_pb2.RUN_STATE_RUNNING
    asked = fake.received(pipeline_service_pb2.GetPipelineRequest)
    assert [r.name for r in asked] == ["pipelines/transcribe-calls"]


def test_a_pipeline_the_server_cannot_give_reads_untyped_and_is_asked_once(client, fake, make_run):
    parameters = struct_pb2.Struct()
    parameters.update({"calls": 20, "ratio": 0.5})
    fake.runs["runs/old"] = make_run("old", pipeline="pipelines/gone", parameters=parameters)

    first = client.get_run("old")
    again = client.get_run("old")

    # No types: a whole number reads as JSON has it, an int.
    assert first.parameters == again.parameters == {"calls": 20, "ratio": 0.5}
    assert type(first.parameters["calls"]) is int
    assert len(fake.received(pipeline_service_pb2.GetPipelineRequest)) == 1


def test_cancel_of_a_finished_run_raises_failed_precondition(client, fake, make_run):
    fake.runs["runs/done"] = make_run("done", state=run_pb2.RUN_STATE_CANCELLED)

    with pytest.raises(RPCError) as raised:
        client.cancel_run("done")

    error = raised.value
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_ALREADY_FINISHED",
    )
    assert error.metadata == {"state": "CANCELLED"}
