"""WatchRuns across two `serve` replicas on one PostgreSQL database: a label-filtered
stream on either replica sees every change of 50 concurrent runs (created and executed
on both) exactly once, in each run's revision order, and a stream dropped midway and
resumed on the OTHER replica from its last cursor continues with no gap and no
duplicate."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import grpc

from skit.pipelines.v1 import pipeline_service_pb2 as api
from skit.pipelines.v1 import run_pb2

pytest_plugins = ["skit_testing.postgres"]

RUNS = 50
Kind = api.WatchRunsResponse
TERMINAL = {
    run_pb2.RUN_STATE_SUCCEEDED,
    run_pb2.RUN_STATE_FAILED,
    run_pb2.RUN_STATE_CANCELLED,
}


def ticker(batch: str) -> api.CreateRunRequest:
    request = api.CreateRunRequest(
        run=run_pb2.Run(pipeline="pipelines/ticker", labels={"batch": batch})
    )
    request.run.parameters.update({"seconds": 0.01})
    return request


async def changes_until_done(
    stream: Any,
    into: list[api.WatchRunsResponse],
    expected: set[str],
    stop_after: int | None = None,
) -> None:
    """Appends the stream's changes to `into` until every run in `expected` has been seen
    terminal (or `stop_after` changes were read)."""
    done: set[str] = set()
    # read(), not `async for`: the first message was read with read() already.
    while (message := await stream.read()) is not grpc.aio.EOF:
        if message.kind == Kind.KIND_HEARTBEAT:
            continue
        assert message.kind == Kind.KIND_CHANGE, message
        into.append(message)
        if message.run.state in TERMINAL:
            done.add(message.run.name)
        if stop_after is not None and len(into) >= stop_after:
            return
        if expected and done >= expected:
            return


async def test_watch_runs_sees_every_change_once_across_replicas(
    start_replicas, postgres_dsn: str
) -> None:
    a, b = start_replicas(2, "--store", postgres_dsn)
    batch = uuid.uuid4().hex[:8]
    request = api.WatchRunsRequest(labels={"batch": batch})
    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)
        streams = {"a": on_a.WatchRuns(request), "b": on_b.WatchRuns(request)}
        dropped = on_a.WatchRuns(request)
        starts = [await stream.read() for stream in (*streams.values(), dropped)]
        assert all(s.kind == Kind.KIND_HEARTBEAT for s in starts)

        # 50 runs created at once, half through each replica, and executed by both;
        # runs of another batch go on meanwhile and must not show.
        created = await asyncio.gather(
            *(stub.CreateRun(ticker(batch), timeout=30) for stub in (on_a, on_b) * (RUNS // 2)),
            *(stub.CreateRun(ticker("noise"), timeout=30) for stub in (on_a, on_b)),
        )
        names = {run.name for run in created[:RUNS]}
        assert len(names) == RUNS

        seen: dict[str, list[api.WatchRunsResponse]] = {"a": [], "b": [], "resumed": []}
        readers = [
            asyncio.create_task(changes_until_done(streams[k], seen[k], names)) for k in streams
        ]
        # The third stream is dropped after 60 changes and resumed on the other replica.
        await asyncio.wait_for(
            changes_until_done(dropped, seen["resumed"], set(), stop_after=60), 120
        )
        dropped.cancel()
        resumed = on_b.WatchRuns(
            api.WatchRunsRequest(labels={"batch": batch}, after_cursor=seen["resumed"][-1].cursor)
        )
        readers.append(asyncio.create_task(changes_until_done(resumed, seen["resumed"], names)))
        await asyncio.wait_for(asyncio.gather(*readers), 180)
        for stream in (*streams.values(), resumed):
            stream.cancel()

        final = {
            name: await on_b.GetRun(api.GetRunRequest(name=name), timeout=10) for name in names
        }
    for key, messages in seen.items():
        by_run: dict[str, list[int]] = defaultdict(list)
        for message in messages:
            assert message.run.labels["batch"] == batch
            by_run[message.run.name].append(message.run.revision)
        assert set(by_run) == names, key
        for name, revisions in by_run.items():
            # Every revision of the run, once, in order (creation included).
            assert revisions == list(range(1, final[name].revision + 1)), (key, name, revisions)
        cursors = [m.cursor for m in messages]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors), key
    # All three streams saw the same changes with the same cursors.
    assert [m.cursor for m in seen["a"]] == [m.cursor for m in seen["b"]]
    assert [m.cursor for m in seen["resumed"]] == [m.cursor for m in seen["a"]]
