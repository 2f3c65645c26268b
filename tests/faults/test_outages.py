"""PostgreSQL stopped for longer than the run store's retry window, with runs in flight
on one replica and on two: the runs keep executing, their progress waits and is stored
once the database is back, and every run ends SUCCEEDED. A client watching each run
through the outage, resuming with after_revision whenever its stream breaks, sees every
revision exactly once. After the outage the service answers again within seconds.

The retry window (SKIT_STORE_RETRY_SECONDS) is made small so the test stays short: what
matters is that the outage outlasts it (OUTAGE_SECONDS / RETRY_SECONDS = 3), and the
run leases too (SKIT_LEASE_SECONDS), so they expire while the database is away."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
import pytest

from skit.pipelines.v1 import pipeline_service_pb2 as api
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_pipelines.domain import Run, RunState, Step, StepState
from skit_pipelines.errors import Unavailable
from skit_pipelines.run_writes import Change, RunWrites
from skit_pipelines.store.base import RunMutation
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_testing.waiting import until

pytest_plugins = ["skit_testing.postgres"]
pytestmark = pytest.mark.xdist_group("faults-postgres")

TICKER_PROJECT = Path(__file__).resolve().parents[1] / "scaleout" / "project"
"""Three slow steps passing an artifact along."""

RETRY_SECONDS = 2.0
LEASE_SECONDS = 3.0
OUTAGE_SECONDS = 3 * RETRY_SECONDS
"""A deliberate fault duration: three retry windows, two lease periods."""
STEP_SECONDS = 1.5
"""Each of the ticker's three steps: the runs span the outage."""
SERVING_AGAIN_SECONDS = 5.0
"""How soon after the database is back the service must answer."""
TERMINAL = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}
RECONNECT_PAUSE_SECONDS = 0.1
"""Between a watch stream that broke and its resumption."""


def stub(channel: grpc.aio.Channel) -> pipeline_service_pb2_grpc.PipelineServiceStub:
    return pipeline_service_pb2_grpc.PipelineServiceStub(channel)


def ticker() -> api.CreateRunRequest:
    request = api.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/ticker"))
    request.run.parameters.update({"seconds": STEP_SECONDS})
    return request


async def watch_resuming(addresses: list[str], name: str) -> list[run_pb2.Run]:
    """Every revision of the run until it ends, as a client sees it that resumes a broken
    stream with after_revision, on the next replica in turn."""
    seen: list[run_pb2.Run] = []
    turn = 0
    while not seen or seen[-1].state not in TERMINAL:
        request = api.WatchRunRequest(name=name, after_revision=seen[-1].revision if seen else 0)
        address = addresses[turn % len(addresses)]
        turn += 1
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                async for message in stub(channel).WatchRun(request, timeout=120):
                    seen.append(message.run)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
    return seen


def _rotated(addresses: list[str], start: int) -> list[str]:
    start %= len(addresses)
    return addresses[start:] + addresses[:start]


@pytest.mark.parametrize("replicas", [1, 2])
async def test_runs_ride_out_a_database_outage_longer_than_the_retry_window(
    throwaway_postgres, start_servers, tmp_path: Path, replicas: int
) -> None:
    database = throwaway_postgres
    servers = start_servers(
        [tmp_path / f"replica-{i}" for i in range(replicas)],
        "--store",
        database.dsn,
        project=TICKER_PROJECT,
        env={
            "SKIT_STORE_RETRY_SECONDS": str(RETRY_SECONDS),
            "SKIT_LEASE_SECONDS": str(LEASE_SECONDS),
        },
    )
    addresses = [s.address for s in servers]
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    try:
        stubs = [stub(c) for c in channels]
        # Two runs executed by each replica (a run executes where it was created).
        runs = [await stubs[i % replicas].CreateRun(ticker(), timeout=30) for i in range(4)]
        # Watchers on the other replica, so progress must cross the database.
        watchers = [
            asyncio.create_task(watch_resuming(_rotated(addresses, i + 1), run.name))
            for i, run in enumerate(runs)
        ]

        async def all_running() -> bool:
            for run in runs:
                current = await stubs[0].GetRun(api.GetRunRequest(name=run.name), timeout=10)
                if not any(s.state == run_pb2.STEP_STATE_RUNNING for s in current.steps):
                    return False
            return True

        await until(all_running, 30, what="every run has a step RUNNING")
        await asyncio.to_thread(database.shut_down)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(database.start_again)
        back = time.monotonic()

        async def serving() -> bool:
            try:
                await stubs[-1].GetRun(api.GetRunRequest(name=runs[0].name), timeout=1)
            except grpc.aio.AioRpcError as error:
                assert error.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ), error
                return False
            return True

        await until(serving, 30, what="the service answers again")
        serving_after = time.monotonic() - back
        created = await stubs[-1].CreateRun(ticker(), timeout=10)
        assert created.state == run_pb2.RUN_STATE_QUEUED

        seen = await asyncio.wait_for(asyncio.gather(*watchers), 90)
    finally:
        for channel in channels:
            await channel.close()

    for run, revisions in zip(runs, seen, strict=True):
        final = revisions[-1]
        assert final.state == run_pb2.RUN_STATE_SUCCEEDED, (run.name, final.error)
        assert {s.state for s in final.steps} <= {
            run_pb2.STEP_STATE_SUCCEEDED,
            run_pb2.STEP_STATE_CACHED,
        }, final.steps
        numbers = [r.revision for r in revisions]
        assert numbers == list(range(numbers[0], final.revision + 1)), (run.name, numbers)
    with psycopg.connect(database.dsn) as conn:
        for run in runs:
            logged = conn.execute(
                "SELECT revision FROM run_events WHERE run_id = %s ORDER BY revision",
                (run.name.removeprefix("runs/"),),
            ).fetchall()
            assert [r for (r,) in logged] == list(range(1, len(logged) + 1))
    assert all(s.process.poll() is None for s in servers), "no replica restarted"
    assert serving_after < SERVING_AGAIN_SECONDS, serving_after
    print(f"{replicas} replica(s): serving {serving_after * 1000:.0f} ms after the outage")


class _FlakyStore(SqliteRunStore):
    """A store that is unavailable while `down` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = True

    async def update_run(self, run_id: str, mutate: RunMutation) -> Run:
        if self.down:
            raise Unavailable("the run store is unavailable (update_run)")
        return await super().update_run(run_id, mutate)


def _with_step(name: str, state: StepState) -> RunMutation:
    def mutate(run: Run) -> Run:
        steps = [s for s in run.steps if s.name != name]
        return replace(run, steps=(*steps, Step(name=name, state=state)))

    return mutate


async def test_changes_wait_in_order_and_a_step_keeps_only_its_newest(tmp_path: Path) -> None:
    store = _FlakyStore(tmp_path / "runs.db")
    now = datetime.now(UTC)
    run = Run(
        id="r1",
        pipeline="p",
        pipeline_version="v",
        parameters={},
        labels={},
        state=RunState.RUNNING,
        create_time=now,
        update_time=now,
        revision=1,
    )
    await store.create_run(run)
    writes = RunWrites(store)
    stored: list[str] = []

    def note(what: str) -> Change:
        """A change of a step, keyed by the step: "NAME STATE"."""
        name, state = what.split()
        return Change(_with_step(name, StepState[state]), lambda _: stored.append(what), key=name)

    await writes.write("r1", note("a RUNNING"))
    await writes.write("r1", note("b PENDING"))
    await writes.write("r1", note("a SUCCEEDED"))  # replaces "a RUNNING"
    ended = asyncio.create_task(
        writes.write(
            "r1",
            Change(lambda r: replace(r, state=RunState.SUCCEEDED), lambda _: stored.append("end")),
            durable=True,
        )
    )
    await asyncio.sleep(0)  # one turn of the loop: the end queues itself
    await writes.write("r1", note("b SUCCEEDED"))  # behind the end: kept
    await until(lambda: writes.unwritten_seconds("r1") > 0, what="changes wait")
    assert not ended.done() and stored == []

    store.down = False
    await asyncio.wait_for(ended, 10)
    await until(lambda: writes.unwritten_seconds("r1") == 0, what="the backlog is stored")
    assert stored == ["a SUCCEEDED", "b PENDING", "end", "b SUCCEEDED"]
    final = await store.get_run("r1")
    assert final.state is RunState.SUCCEEDED and final.revision == 1 + len(stored)
