"""DeferredBackend: the backend built after the service answers; calls that need it wait
for it, and reach the backend it built."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.backends.deferred import DeferredBackend
from skit_pipelines.domain import Artifact, ErrorInfo, Pipeline, Run, Step


class _Sink:
    async def run_started(self, run_id: str) -> None: ...

    async def step_changed(self, run_id: str, *steps: Step) -> None: ...

    async def run_succeeded(
        self, run_id: str, outputs: Sequence[Artifact], output_parameters: Mapping[str, Any]
    ) -> None: ...

    async def run_failed(self, run_id: str, error: ErrorInfo) -> None: ...

    async def run_cancelled(self, run_id: str) -> None: ...

    async def backend_run_assigned(self, run_id: str, backend_run_id: str, url: str) -> None: ...

    async def cancel_requested_remotely(self, run_id: str) -> None: ...

    def unwritten_seconds(self, run_id: str) -> float:
        return 0.0

    def drop_unwritten(self, run_id: str) -> None: ...


class _Recording(Backend):
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started_with: RunSink | None = None

    def start(self, sink: RunSink) -> None:
        super().start(sink)
        self.started_with = sink

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        self.calls.append(f"submit {run.id}")

    async def cancel(self, run_id: str) -> None:
        self.calls.append(f"cancel {run_id}")

    async def shutdown(self) -> None:
        self.calls.append("shutdown")

    def active_runs(self) -> int:
        return len(self.calls)


async def test_calls_wait_for_the_build_and_reach_the_built_backend() -> None:
    built = _Recording()
    builds = []

    def build() -> Backend:
        builds.append(1)
        return built

    deferred = DeferredBackend("recording", build, imports=("json",))
    sink = _Sink()
    deferred.start(sink)
    assert deferred.active_runs() == 0
    # Nothing loaded it yet: the call builds it, once, and goes to it.
    await deferred.cancel("r1")
    await deferred.cancel("r2")
    assert await deferred.load() is built
    assert builds == [1]
    assert built.started_with is sink
    assert built.calls == ["cancel r1", "cancel r2"]
    assert deferred.active_runs() == len(built.calls)
    await deferred.shutdown()
    assert built.calls[-1] == "shutdown"


async def test_a_failed_build_fails_the_calls_that_need_it() -> None:
    def build() -> Backend:
        raise RuntimeError("no executor")

    deferred = DeferredBackend("recording", build)
    deferred.start(_Sink())
    with pytest.raises(RuntimeError, match="no executor"):
        await deferred.cancel("r1")
    assert deferred.active_runs() == 0
    await deferred.shutdown()


async def test_shutdown_before_anything_was_built_builds_nothing() -> None:
    builds = []

    def build() -> Backend:
        builds.append(1)
        return _Recording()

    deferred = DeferredBackend("recording", build)
    deferred.start(_Sink())
    await deferred.shutdown()
    assert builds == []


async def test_prepare_runs_in_a_thread_before_the_build() -> None:
    loop_thread = threading.get_ident()
    order: list[str] = []

    def prepare() -> None:
        order.append("prepare in a thread" if threading.get_ident() != loop_thread else "prepare")

    def build() -> Backend:
        order.append("build")
        return _Recording()

    deferred = DeferredBackend("recording", build, prepare=prepare)
    deferred.start(_Sink())
    await deferred.load()
    assert order == ["prepare in a thread", "build"]
    await deferred.shutdown()
