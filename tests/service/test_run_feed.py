"""RunFeed (WatchRuns' fan-out) on a real SQLite store: filters, resume, re-list,
initial snapshot, heartbeats, and slow streams that neither block nor lose anything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import InvalidArgument, Unavailable
from skit_pipelines.run_feed import (
    FeedEvent,
    FeedKind,
    RunFeed,
    decode_cursor,
    encode_cursor,
)
from skit_pipelines.store import RunQuery, SqliteRunStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_run(run_id: str, **changes: object) -> Run:
    run = Run(
        id=run_id,
        pipeline="random-sample-calls",
        pipeline_version="sha256:abc",
        parameters={},
        labels={"team": "slu"},
        state=RunState.QUEUED,
        create_time=T0,
        update_time=T0,
        revision=1,
    )
    return replace(run, **changes)  # type: ignore[arg-type]


def set_state(state: RunState):
    return lambda run: replace(run, state=state)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteRunStore]:
    store = SqliteRunStore(tmp_path / "runs.db", change_limit=20)
    yield store
    await store.close()


@pytest.fixture
async def feed(store: SqliteRunStore) -> AsyncIterator[RunFeed]:
    feed = RunFeed(store, heartbeat_seconds=30)
    yield feed
    await feed.close()


class Reader:
    """A stream piped into a queue (as health_servicer_test does), read with timeouts."""

    def __init__(self, events: AsyncIterator[FeedEvent]) -> None:
        self.queue: asyncio.Queue[FeedEvent] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._pump(events))

    async def _pump(self, events: AsyncIterator[FeedEvent]) -> None:
        async for event in events:
            await self.queue.put(event)

    async def next(self) -> FeedEvent:
        return await asyncio.wait_for(self.queue.get(), 5)

    async def take(self, count: int) -> list[FeedEvent]:
        return [await self.next() for _ in range(count)]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def summary(events: list[FeedEvent]) -> list[tuple[str, str, int, int]]:
    return [
        (e.kind.name, e.run.id if e.run else "", e.run.revision if e.run else 0, e.cursor)
        for e in events
    ]


def test_cursors_are_opaque_ordered_and_checked() -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    assert encode_cursor(9) < encode_cursor(10) < encode_cursor(2**40)
    for garbage in ("", "42", "c12", "x" + "0" * 16, "c" + "g" * 16, "c" + "0" * 17):
        with pytest.raises(InvalidArgument) as caught:
            decode_cursor(garbage)
        assert caught.value.violations[0].field == "after_cursor"


def test_the_filter_is_list_runs_filter() -> None:
    run = make_run("run-a", labels={"team": "slu", "env": "prod"})
    assert RunQuery().matches(run)
    assert RunQuery(labels={"team": "slu"}, pipeline="random-sample-calls").matches(run)
    assert not RunQuery(labels={"team": "asr"}).matches(run)
    assert not RunQuery(pipeline="other").matches(run)
    assert not RunQuery(states=frozenset({RunState.FAILED})).matches(run)
    assert RunQuery(created_after=T0, created_before=T0 + timedelta(seconds=1)).matches(run)
    assert not RunQuery(created_before=T0).matches(run)


async def test_from_now_a_heartbeat_then_matching_changes(
    store: SqliteRunStore, feed: RunFeed
) -> None:
    await store.create_run(make_run("before"))
    reader = Reader(feed.watch(RunQuery(labels={"team": "slu"})))
    first = await reader.next()
    assert (first.kind, first.cursor) == (FeedKind.HEARTBEAT, 1)
    await store.create_run(make_run("run-a"))
    await store.create_run(make_run("other", labels={"team": "asr"}))
    await store.update_run("run-a", set_state(RunState.CANCELLED))
    await store.delete_run("run-a")
    assert summary(await reader.take(3)) == [
        ("CHANGE", "run-a", 1, 2),
        ("CHANGE", "run-a", 2, 4),
        ("DELETED", "run-a", 2, 5),
    ]
    await reader.close()
    assert feed.stream_count() == 0


async def test_resuming_delivers_every_later_change_once(
    store: SqliteRunStore, feed: RunFeed
) -> None:
    for n in range(4):
        await store.create_run(make_run(f"run-{n}"))
    reader = Reader(feed.watch(RunQuery(), after_cursor=2))
    assert [e.cursor for e in await reader.take(2)] == [3, 4]
    await store.update_run("run-0", set_state(RunState.RUNNING))
    assert summary([await reader.next()]) == [("CHANGE", "run-0", 2, 5)]
    assert reader.queue.empty()
    await reader.close()


async def test_a_too_old_cursor_gets_relist_then_goes_on(
    store: SqliteRunStore, feed: RunFeed
) -> None:
    await store.create_run(make_run("run-a"))
    for n in range(60):
        await store.update_run("run-a", lambda run, n=n: replace(run, output_parameters={"n": n}))
    reader = Reader(feed.watch(RunQuery(), after_cursor=1))
    relist = await reader.next()
    assert (relist.kind, relist.cursor) == (FeedKind.RELIST, 61)
    await store.update_run("run-a", set_state(RunState.RUNNING))
    assert summary([await reader.next()]) == [("CHANGE", "run-a", 62, 62)]
    await reader.close()
    # A cursor from no change this store made (the future) is re-listed too.
    reader = Reader(feed.watch(RunQuery(), after_cursor=1000))
    relist = await reader.next()
    assert (relist.kind, relist.cursor) == (FeedKind.RELIST, 62)
    await reader.close()


async def test_initial_snapshot_then_complete_then_changes(
    store: SqliteRunStore, feed: RunFeed
) -> None:
    for n in range(5):
        await store.create_run(
            make_run(f"run-{n}", create_time=T0 + timedelta(seconds=n), labels={"n": str(n % 2)})
        )
    reader = Reader(feed.watch(RunQuery(labels={"n": "0"}), initial_snapshot=True))
    assert summary(await reader.take(4)) == [
        ("SNAPSHOT", "run-4", 1, 0),
        ("SNAPSHOT", "run-2", 1, 0),
        ("SNAPSHOT", "run-0", 1, 0),
        ("SNAPSHOT_COMPLETE", "", 0, 5),
    ]
    await store.update_run("run-1", set_state(RunState.RUNNING))
    await store.update_run("run-2", set_state(RunState.RUNNING))
    assert summary([await reader.next()]) == [("CHANGE", "run-2", 2, 7)]
    await reader.close()


async def test_a_state_filter_sees_runs_as_they_reach_it(
    store: SqliteRunStore, feed: RunFeed
) -> None:
    reader = Reader(feed.watch(RunQuery(states=frozenset({RunState.FAILED}))))
    await reader.next()  # heartbeat
    for run_id in ("run-a", "run-b"):
        await store.create_run(make_run(run_id))
        await store.update_run(run_id, set_state(RunState.RUNNING))
    await store.update_run("run-b", set_state(RunState.FAILED))
    assert summary([await reader.next()]) == [("CHANGE", "run-b", 3, 5)]
    await reader.close()


async def test_an_idle_stream_heartbeats_with_the_advancing_cursor(
    store: SqliteRunStore,
) -> None:
    feed = RunFeed(store, heartbeat_seconds=0.05)
    try:
        reader = Reader(feed.watch(RunQuery(labels={"team": "nobody"})))
        assert (await reader.next()).cursor == 0
        await store.create_run(make_run("run-a"))
        while (event := await reader.next()).cursor < 1:
            assert event.kind is FeedKind.HEARTBEAT
        assert (event.kind, event.cursor) == (FeedKind.HEARTBEAT, 1)
        await reader.close()
    finally:
        await feed.close()


async def test_a_slow_stream_blocks_nobody_and_loses_nothing(tmp_path: Path) -> None:
    """One reader for every stream: a stream that is not read is detached when its
    buffer fills, the others go on; once read, it catches up from the store, in order."""
    store = SqliteRunStore(tmp_path / "big.db")
    feed = RunFeed(store, buffer=3, read_page=4)
    try:
        slow = feed.watch(RunQuery())
        assert (await anext(slow)).kind is FeedKind.HEARTBEAT
        fast = Reader(feed.watch(RunQuery()))
        await fast.next()
        # Let the slow stream attach (it reaches the live set when it is next read).
        pending = asyncio.ensure_future(anext(slow))
        await asyncio.sleep(0)
        await store.create_run(make_run("run-0"))
        first = await asyncio.wait_for(pending, 5)
        for n in range(1, 30):
            await store.create_run(make_run(f"run-{n}"))
        fast_events = await fast.take(30)
        assert [e.cursor for e in fast_events] == list(range(1, 31))
        assert feed.detached >= 1
        rest = [await asyncio.wait_for(anext(slow), 5) for _ in range(29)]
        assert [e.cursor for e in [first, *rest]] == list(range(1, 31))
        # Read again, it is live again: both get the next change from the one reader.
        pending = asyncio.ensure_future(anext(slow))
        await asyncio.sleep(0)
        assert len(feed._live) == 2
        await store.create_run(make_run("run-30"))
        assert (await asyncio.wait_for(pending, 5)).cursor == (await fast.next()).cursor == 31
        await fast.close()
        await slow.aclose()
    finally:
        await feed.close()
        await store.close()


async def test_close_ends_streams_with_unavailable(store: SqliteRunStore) -> None:
    feed = RunFeed(store)
    events = feed.watch(RunQuery())
    await anext(events)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await feed.close()
    with pytest.raises(Unavailable) as caught:
        await asyncio.wait_for(pending, 5)
    assert caught.value.reason == "SHUTTING_DOWN"
