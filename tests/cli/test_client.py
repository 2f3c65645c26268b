"""PipelinesClient against the in-process fake service."""

from __future__ import annotations

import grpc
import pytest

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
    assert error.reason == "INVALID_PARAMETER"
    assert error.domain == "pipelines.skit.ai"
    assert error.violations == (
        FieldViolation("run.parameters.calls", "must be an integer, got 2.5"),
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
