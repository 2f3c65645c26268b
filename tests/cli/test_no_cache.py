"""The per-run cache switch in the CLI (`runs create --no-cache`, `runs get`) and in
PipelinesClient.create_run, against the in-process fake service."""

from __future__ import annotations

from typing import Any

import pytest

from skit.pipelines.v1 import pipeline_service_pb2
from skit_pipelines_cli import main as cli
from skit_pipelines_client import PipelinesClient


def run_cli(server: str, *args: str) -> int:
    return cli.main(["--server", server, *args])


@pytest.mark.parametrize(("flags", "sent"), [(["--no-cache"], True), ([], False)])
def test_runs_create_sends_the_cache_switch(
    server: str, fake: Any, flags: list[str], sent: bool
) -> None:
    assert run_cli(server, "runs", "create", "transcribe-calls", *flags) == 0

    (request,) = fake.received(pipeline_service_pb2.CreateRunRequest)
    assert request.run.disable_cache is sent


def test_runs_get_shows_the_cache_only_when_it_is_off(
    server: str, fake: Any, make_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.runs["runs/off"] = make_run("off", disable_cache=True)
    fake.runs["runs/on"] = make_run("on")

    assert run_cli(server, "runs", "get", "off") == 0
    off = capsys.readouterr().out.splitlines()
    assert run_cli(server, "runs", "get", "on") == 0
    on = capsys.readouterr().out.splitlines()

    assert "cache:       off" in off
    assert not any(line.startswith("cache:") for line in on)


def test_the_client_sends_the_cache_switch_and_reads_it_back(
    server: str, fake: Any, make_run: Any
) -> None:
    with PipelinesClient(server, timeout=5) as client:
        client.create_run("transcribe-calls", {"calls": 5}, {}, disable_cache=True)
        client.create_run("transcribe-calls", {"calls": 5}, {})
        fake.runs["runs/off"] = make_run("off", disable_cache=True)
        read = client.get_run("off")

    sent = [r.run.disable_cache for r in fake.received(pipeline_service_pb2.CreateRunRequest)]
    assert sent == [True, False]
    assert read.disable_cache
    assert read.to_json()["disableCache"] is True
