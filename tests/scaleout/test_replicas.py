"""Two `serve` processes on one PostgreSQL database and one S3 bucket: idempotent creates
across replicas, WatchRun on one replica following a run executed by the other, cancel
through either, and a PostgreSQL restart under the running replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import psycopg

from skit.pipelines.v1 import pipeline_service_pb2 as api
from skit.pipelines.v1 import run_pb2
from skit_testing.waiting import until

OUTAGE_SECONDS = 1.0

pytest_plugins = ["skit_testing.postgres"]


def ticker(seconds: float, **fields: str) -> api.CreateRunRequest:
    request = api.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/ticker"), **fields)
    request.run.parameters.update({"seconds": seconds})
    return request


async def revisions(stream: AsyncIterator[api.WatchRunResponse]) -> list[run_pb2.Run]:
    return [message.run async for message in stream]


async def test_idempotent_creates_and_watchers_across_replicas(
    start_replicas, postgres_dsn: str, s3_endpoint: str, bucket: str
) -> None:
    a, b = start_replicas(
        2,
        "--store",
        postgres_dsn,
        "--artifacts",
        f"s3://{bucket}/scaleout",
        "--s3-endpoint-url",
        s3_endpoint,
    )
    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)

        # 100 simultaneous CreateRun calls with one request_id, half on each replica.
        request = ticker(0.05, request_id=str(uuid.uuid4()))
        started = time.perf_counter()
        created = await asyncio.gather(
            *(stub.CreateRun(request, timeout=30) for stub in (on_a, on_b) * 50)
        )
        elapsed = time.perf_counter() - started
        assert len({run.name for run in created}) == 1
        listed = await on_b.ListRuns(api.ListRunsRequest(), timeout=10)
        assert [run.name for run in listed.runs] == [created[0].name]
        print(f"100 concurrent CreateRun over two replicas: {elapsed * 1000:.0f} ms")

        # A run executed by A, followed on B by watchers that attach as it starts.
        run = await on_a.CreateRun(ticker(0.3), timeout=30)
        watch = api.WatchRunRequest(name=run.name)
        live_b = [asyncio.create_task(revisions(on_b.WatchRun(watch))) for _ in range(5)]
        replay_b = asyncio.create_task(
            revisions(on_b.WatchRun(api.WatchRunRequest(name=run.name, after_revision=1)))
        )
        live_a = asyncio.create_task(revisions(on_a.WatchRun(watch)))
        seen_a = await asyncio.wait_for(live_a, 60)
        final = seen_a[-1]
        assert final.state == run_pb2.RUN_STATE_SUCCEEDED
        assert final.outputs[0].uri.startswith(f"s3://{bucket}/scaleout/runs/{run.name[5:]}/")
        assert final.outputs[0].sha256
        for task in live_b:
            seen = [r.revision for r in await asyncio.wait_for(task, 30)]
            assert seen == list(range(seen[0], final.revision + 1)), seen
        assert [r.revision for r in await replay_b] == list(range(2, final.revision + 1))
        from_b = await on_b.GetRun(api.GetRunRequest(name=run.name), timeout=10)
        assert from_b == final

    # Exactly one replica executed each run.
    for name in (created[0].name, run.name):
        creations = [m for r in (a, b) for m in r.messages() if m.startswith(f"created {name} ")]
        assert len(creations) == 1, creations


async def test_cancel_through_the_other_replica(start_replicas, postgres_dsn: str) -> None:
    a, b = start_replicas(2, "--store", postgres_dsn)
    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)
        run = await on_a.CreateRun(ticker(30), timeout=30)
        watch = asyncio.create_task(revisions(on_b.WatchRun(api.WatchRunRequest(name=run.name))))
        while (await on_b.GetRun(api.GetRunRequest(name=run.name))).state != (
            run_pb2.RUN_STATE_RUNNING
        ):
            await asyncio.sleep(0.05)
        cancelling = await on_b.CancelRun(api.CancelRunRequest(name=run.name), timeout=10)
        assert cancelling.state == run_pb2.RUN_STATE_CANCELLING
        seen = await asyncio.wait_for(watch, 30)
        assert seen[-1].state == run_pb2.RUN_STATE_CANCELLED


async def test_a_run_executes_once_and_moves_when_its_replica_dies(
    start_replicas, postgres_dsn: str, s3_endpoint: str, bucket: str
) -> None:
    flags = (
        "--store",
        postgres_dsn,
        "--artifacts",
        f"s3://{bucket}/moves",
        "--s3-endpoint-url",
        s3_endpoint,
    )
    fast_leases = [{"SKIT_LEASE_SECONDS": "1.5"}] * 2
    a, b = start_replicas(2, *flags, env=fast_leases)
    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)
        run = await on_a.CreateRun(ticker(1.0), timeout=30)
        get = api.GetRunRequest(name=run.name)
        watch = asyncio.create_task(revisions(on_b.WatchRun(api.WatchRunRequest(name=run.name))))

        # Once the second step runs, the first one's output is in S3 and in the step cache.
        while True:
            before = {s.name: s for s in (await on_b.GetRun(get, timeout=10)).steps}
            if "tick" in before and before["tick"].state == run_pb2.STEP_STATE_RUNNING:
                break
            await asyncio.sleep(0.05)
        a.kill()
        seen = await asyncio.wait_for(watch, 60)
    final = seen[-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED
    numbers = [r.revision for r in seen]
    assert numbers == list(range(numbers[0], final.revision + 1))
    assert f"taking over {run.name} from a replica that stopped" in b.messages()
    # The finished step is not executed again: its output is the one A stored.
    start = next(s for s in final.steps if s.name == "start")
    assert start.state in (run_pb2.STEP_STATE_SUCCEEDED, run_pb2.STEP_STATE_CACHED)
    assert start.output_artifacts == before["start"].output_artifacts


async def test_replicas_ride_out_a_postgres_restart(start_replicas, throwaway_postgres) -> None:
    server = throwaway_postgres
    a, b = start_replicas(2, "--store", server.dsn)
    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)
        run = await on_a.CreateRun(ticker(1.0), timeout=30)
        get = api.GetRunRequest(name=run.name)
        watch_b = asyncio.create_task(revisions(on_b.WatchRun(api.WatchRunRequest(name=run.name))))
        watch_a = asyncio.create_task(revisions(on_a.WatchRun(api.WatchRunRequest(name=run.name))))

        async def running() -> bool:
            current = await on_a.GetRun(get, timeout=10)
            return current.state == run_pb2.RUN_STATE_RUNNING

        await until(running, 30, what="the run is RUNNING")
        await asyncio.to_thread(server.shut_down)
        # The outage itself: long enough for both replicas to see failing calls.
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(server.start_again)
        back = time.monotonic()
        while True:
            try:
                await on_b.GetRun(get, timeout=1)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
        recovered = time.monotonic() - back

        seen_b = await asyncio.wait_for(watch_b, 60)
        seen_a = await asyncio.wait_for(watch_a, 60)
        final = seen_a[-1]
        assert final.state == run_pb2.RUN_STATE_SUCCEEDED
        for seen in (seen_a, seen_b):
            numbers = [r.revision for r in seen]
            assert numbers == list(range(numbers[0], final.revision + 1)), numbers
        assert seen_b[-1] == final
    with psycopg.connect(server.dsn) as conn:
        logged = conn.execute(
            "SELECT revision FROM run_events WHERE run_id = %s ORDER BY revision",
            (run.name[5:],),
        ).fetchall()
    assert [r for (r,) in logged] == list(range(1, final.revision + 1))
    assert all(r.process.poll() is None for r in (a, b)), "no replica restarted"
    print(f"GetRun answered {recovered * 1000:.0f} ms after PostgreSQL was back")
