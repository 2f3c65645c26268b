"""The client against the whole service, in process, on the checkout's own pipelines and
demo data: the README's "Python client" snippets run as pasted and print state names, and
values come back typed (integers as ints, doubles as floats)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from skit_pipelines.config import ServerConfig
from skit_pipelines.server import Application, build_application
from skit_pipelines_client import (
    AsyncPipelinesClient,
    ParameterType,
    PipelinesClient,
    RPCError,
    RunState,
    StepState,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
README_ADDRESS = "127.0.0.1:50051"
SNIPPET_TIMEOUT = 120
STOP_TIMEOUT = 30
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_client_snippets() -> list[str]:
    """The python blocks of the README's "Python client" section, as written there."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    return PYTHON_BLOCK.findall(section)


class _ServerThread:
    """The service on its own event loop in a thread, so that the code under test may
    block or run asyncio.run on the main thread."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.app: Application = self._call(self._start(config))

    async def _start(self, config: ServerConfig) -> Application:
        app = await build_application(config)
        await app.start()
        return app

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=SNIPPET_TIMEOUT)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def stop(self) -> None:
        self._call(self.app.stop(0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded default (`skit-pipelines serve`), on port 0 with its home in a temp dir."""
    home = tmp_path_factory.mktemp("home")
    running = _ServerThread(ServerConfig(port=0, home=home, project_root=PROJECT_ROOT))
    try:
        yield running.address
    finally:
        running.stop()


def test_the_readme_has_a_sync_and_an_async_snippet() -> None:
    snippets = python_client_snippets()
    assert len(snippets) == 2
    assert "PipelinesClient(" in snippets[0] and "AsyncPipelinesClient(" in snippets[1]
    assert all(README_ADDRESS in snippet for snippet in snippets)


@pytest.mark.parametrize("index", [0, 1], ids=["sync", "async"])
def test_a_readme_snippet_runs_as_pasted_and_prints_state_names(server: str, index: int) -> None:
    snippet = python_client_snippets()[index]

    # As a user runs it (`python snippet.py`), only pointed at this server.
    done = subprocess.run(
        [sys.executable, "-c", snippet.replace(README_ADDRESS, server)],
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    printed = [line.split() for line in done.stdout.splitlines()]
    assert printed and all(len(words) == 2 for words in printed), done.stdout
    revisions = [int(revision) for revision, _ in printed]
    assert revisions == sorted(set(revisions))
    states = [state for _, state in printed]
    assert set(states) <= {state.name for state in RunState}, states
    assert states[-1] == "SUCCEEDED"


def test_integer_values_are_ints_and_doubles_floats(server: str) -> None:
    with PipelinesClient(server) as client:
        run = client.create_run("random-sample-calls", {"call_quantity": 7, "min_duration": 1}, {})
        last = list(client.watch(run.name))[-1]
        listed = next(
            r for r in client.list_runs(pipeline="random-sample-calls") if r.name == run.name
        )
        pipeline = client.get_pipeline("random-sample-calls")

    for seen in (run, last, listed):
        assert seen.parameters["call_quantity"] == 7
        assert type(seen.parameters["call_quantity"]) is int
        assert type(seen.parameters["seed"]) is int
        assert seen.parameters["min_duration"] == 1.0
        assert type(seen.parameters["min_duration"]) is float
    assert last.state is RunState.SUCCEEDED and str(last.state) == "SUCCEEDED"
    (step,) = last.steps
    assert step.state is StepState.SUCCEEDED
    assert step.output_parameters == {"call_count": 7}
    assert type(step.output_parameters["call_count"]) is int
    assert last.output_parameters == {"call_count": 7}
    assert type(last.output_parameters["call_count"]) is int
    as_json = json.loads(json.dumps(last.to_json()))
    assert as_json["parameters"]["call_quantity"] == 7
    assert json.dumps(as_json["parameters"]["call_quantity"]) == "7"
    assert json.dumps(as_json["outputParameters"]["call_count"]) == "7"
    assert json.dumps(as_json["steps"][0]["outputParameters"]["call_count"]) == "7"
    assert json.dumps(as_json["parameters"]["min_duration"]) == "1.0"
    parameters = {p.name: p for p in pipeline.parameters}
    assert parameters["call_quantity"].type is ParameterType.INTEGER
    assert type(parameters["call_quantity"].default) is int
    assert [r.description for r in parameters["timezone"].rules] == [
        "an IANA time zone such as Asia/Kolkata or UTC"
    ]


async def test_the_async_client_types_values_too(server: str) -> None:
    async with AsyncPipelinesClient(server) as client:
        run = await client.create_run("random-sample-calls", {"call_quantity": 3}, {})
        snapshots = [snapshot async for snapshot in client.watch(run.name)]

    assert type(run.parameters["call_quantity"]) is int
    assert snapshots[-1].state is RunState.SUCCEEDED
    assert snapshots[-1].output_parameters == {"call_count": 3}
    assert type(snapshots[-1].output_parameters["call_count"]) is int


def test_bad_values_are_refused_at_create_run_naming_each_field(server: str) -> None:
    with PipelinesClient(server) as client, pytest.raises(RPCError) as caught:
        client.create_run(
            "random-sample-calls",
            {"start_date": "2026-13-45", "timezone": "Mars/Base", "lang": 5},
            {},
        )

    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT and error.reason == "INVALID_PARAMETERS"
    described = {v.field: v.description for v in error.violations}
    assert described == {
        "run.parameters.lang": "must be a string, got 5",
        "run.parameters.start_date": 'must be a date YYYY-MM-DD (or empty), got "2026-13-45"',
        "run.parameters.timezone": (
            'must be an IANA time zone such as Asia/Kolkata or UTC, got "Mars/Base"'
        ),
    }


def test_cancelling_a_finished_run_is_failed_precondition(server: str) -> None:
    with PipelinesClient(server) as client:
        run = client.create_run("random-sample-calls", {"call_quantity": 1}, {})
        assert list(client.watch(run.name))[-1].state is RunState.SUCCEEDED
        with pytest.raises(RPCError) as caught:
            client.cancel_run(run.name)

    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "RUN_ALREADY_FINISHED"
    assert caught.value.metadata == {"state": "SUCCEEDED"}
