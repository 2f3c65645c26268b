"""LeasedBackend: the local executor on replicas sharing PostgreSQL. A run executes on the
replica holding its lease; another replica's resume does not start it again; when the
holder dies or shuts down, another replica takes it over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.backends.leased import LeasedBackend
from skit_pipelines.catalog import Catalog
from skit_pipelines.domain import Artifact, ErrorInfo, Pipeline, Run, RunState, Step
from skit_pipelines.runs import RunController
from skit_pipelines.store.postgres import PostgresRunStore
from skit_testing.waiting import until

pytest_plugins = ["skit_testing.postgres"]

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Executing(Backend):
    """Stands in for the local backend: records what it was asked to execute."""

    name = "local"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.sinks: dict[str, RunSink] = {}
        self.cancels: list[str] = []
        self.stops_at_once = True
        """False: a cancelled run's steps take a while to stop (the run stays CANCELLING)."""

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        self.submitted.append(run.id)
        self.sinks[run.id] = self.sink

    async def cancel(self, run_id: str) -> None:
        self.cancels.append(run_id)
        if self.stops_at_once:
            await self.sinks[run_id].run_cancelled(run_id)

    async def shutdown(self) -> None:
        pass


class Recorder:
    """A RunSink that keeps the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def run_started(self, run_id: str) -> None:
        self.calls.append(("started", run_id))

    async def step_changed(self, run_id: str, *steps: Step) -> None:
        self.calls.append(("step", run_id))

    async def run_succeeded(
        self, run_id: str, outputs: Sequence[Artifact], output_parameters: Mapping[str, Any]
    ) -> None:
        self.calls.append(("succeeded", run_id))

    async def run_failed(self, run_id: str, error: ErrorInfo) -> None:
        self.calls.append(("failed", run_id))

    async def run_cancelled(self, run_id: str) -> None:
        self.calls.append(("cancelled", run_id))

    async def backend_run_assigned(self, run_id: str, backend_run_id: str, url: str) -> None:
        self.calls.append(("assigned", run_id))

    async def cancel_requested_remotely(self, run_id: str) -> None:
        self.calls.append(("cancel requested", run_id))

    def unwritten_seconds(self, run_id: str) -> float:
        return 0.0

    def drop_unwritten(self, run_id: str) -> None:
        self.calls.append(("dropped", run_id))


PIPELINE = Pipeline(
    id="ticker",
    display_name="Ticker",
    description="",
    version="sha256:abc",
    parameters=(),
    spec={},
)


def make_run(run_id: str, **changes: Any) -> Run:
    run = Run(
        id=run_id,
        pipeline="ticker",
        pipeline_version="sha256:abc",
        parameters={},
        labels={},
        state=RunState.RUNNING,
        create_time=T0,
        update_time=T0,
        revision=1,
    )
    return replace(run, **changes)


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresRunStore]:
    store = await PostgresRunStore.open(postgres_dsn)
    yield store
    await store.close()


def replica(store: PostgresRunStore, owner: str) -> tuple[LeasedBackend, Executing]:
    inner = Executing()
    backend = LeasedBackend(
        inner,
        store.leases(owner, ttl_seconds=0.5),
        store,
        lambda pipeline_id: PIPELINE,
        renew_seconds=0.1,
    )
    return backend, inner


async def test_a_run_executes_on_one_replica_and_moves_when_it_dies(
    store: PostgresRunStore,
) -> None:
    await store.create_run(make_run("r1"))
    a, executed_a = replica(store, "a")
    b, executed_b = replica(store, "b")
    sink = Recorder()
    a.start(sink, background=False)
    b.start(sink)
    run = await store.get_run("r1")
    await a.submit(run, PIPELINE)
    await b.submit(run, PIPELINE)  # b resuming the unfinished runs it finds
    assert (executed_a.submitted, executed_b.submitted) == (["r1"], [])
    for _ in range(3):
        await a.renew_once()
        await asyncio.sleep(0.2)
    assert executed_b.submitted == [], "a renews its lease"

    # a dies (stops renewing): b takes the run over and executes it.
    await until(lambda: executed_b.submitted == ["r1"] and b.held_runs() == ["r1"])

    # The end of the run releases its lease.
    await executed_b.sinks["r1"].run_succeeded("r1", (), {})
    assert sink.calls[-1] == ("succeeded", "r1") and b.held_runs() == []
    assert await store.leases("c", 0.5).acquire("r1")
    await b.shutdown()


async def test_shutdown_hands_runs_over_and_cancelling_ones_end(
    store: PostgresRunStore,
) -> None:
    await store.create_run(make_run("r1"))
    await store.create_run(make_run("r2"))
    a, _ = replica(store, "a")
    b, executed_b = replica(store, "b")
    sink = Recorder()
    a.start(sink, background=False)
    for run_id in ("r1", "r2"):
        await a.submit(await store.get_run(run_id), PIPELINE)
    await store.update_run("r2", lambda run: replace(run, state=RunState.CANCELLING))
    await a.shutdown()
    b.start(sink)
    await until(lambda: executed_b.submitted == ["r1"] and ("cancelled", "r2") in sink.calls)
    await b.shutdown()


async def test_a_cancel_stored_elsewhere_reaches_the_executing_replica_once(
    store: PostgresRunStore,
) -> None:
    await store.create_run(make_run("r1"))
    a, executed_a = replica(store, "a")
    executed_a.stops_at_once = False
    a.start(Recorder(), background=False)
    await a.submit(await store.get_run("r1"), PIPELINE)
    # Stored by another replica while this one heard nothing (no LISTEN wiring here).
    await store.update_run("r1", lambda run: replace(run, state=RunState.CANCELLING))
    await a.renew_once()
    await a.renew_once()
    await a.cancel("r1")  # the news arriving late through LISTEN as well
    assert executed_a.cancels == ["r1"]
    await a.shutdown()


async def test_a_run_found_cancelling_is_ended_only_by_the_replica_stopping_it(
    store: PostgresRunStore,
) -> None:
    """A replica starting up finds a run CANCELLING: while a live replica executes it (and
    is stopping its steps) it is left alone; once no replica holds it, it ends CANCELLED."""
    await store.create_run(make_run("r1"))
    a, executed_a = replica(store, "a")
    executed_a.stops_at_once = False
    a.start(Recorder(), background=False)
    await a.submit(await store.get_run("r1"), PIPELINE)
    await store.update_run("r1", lambda run: replace(run, state=RunState.CANCELLING))
    b, _ = replica(store, "b")
    b_controller = RunController(store, Catalog({PIPELINE.id: PIPELINE}), b)
    b.start(b_controller, background=False)

    await b_controller.resume()  # as any replica does when it starts
    assert (await store.get_run("r1")).state is RunState.CANCELLING
    assert a.held_runs() == ["r1"]

    await a.shutdown()  # hands its lease over: nothing of r1 runs any more
    await b_controller.resume()
    assert (await store.get_run("r1")).state is RunState.CANCELLED
    assert await store.leases("c", 0.5).acquire("r1"), "the lease is released"
