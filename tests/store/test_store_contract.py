"""The RunStore contract, run against every implementation: SQLite (embedded) and
PostgreSQL (replicas). Persistence, idempotency, listing, the event log and the watch."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState, Step, StepState
from skit_pipelines.errors import AlreadyExists, NotFound, Unavailable
from skit_pipelines.store import PostgresRunStore, RunQuery, RunStore, SqliteRunStore
from skit_pipelines.store.base import RevisionHub, RunFollower, sortable_time

pytest_plugins = ["skit_testing.postgres"]

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_run(run_id: str = "run-a", **changes: object) -> Run:
    run = Run(
        id=run_id,
        pipeline="random-sample-calls",
        pipeline_version="sha256:abc",
        parameters={"call_quantity": 5},
        labels={"team": "slu"},
        state=RunState.QUEUED,
        create_time=T0,
        update_time=T0,
        revision=1,
    )
    return replace(run, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        store: RunStore = SqliteRunStore(tmp_path / "runs.db", history_limit=50)
    else:
        store = await PostgresRunStore.open(
            request.getfixturevalue("postgres_dsn"), history_limit=50
        )
    yield store
    await store.close()


def set_state(state: RunState):
    return lambda run: replace(run, state=state)


async def test_create_and_get_round_trip(store: RunStore) -> None:
    step = Step(
        name="fetch-calls", component="comp-fetch-calls", state=StepState.RUNNING, start_time=T0
    )
    run = make_run(steps=(step,), output_parameters={"n": 3})
    outcome = await store.create_run(run)
    assert outcome.created
    assert await store.get_run("run-a") == run


async def test_get_unknown_run_is_not_found(store: RunStore) -> None:
    with pytest.raises(NotFound) as caught:
        await store.get_run("nope")
    assert caught.value.reason == "RUN_NOT_FOUND"


async def test_taken_id_is_already_exists(store: RunStore) -> None:
    await store.create_run(make_run())
    with pytest.raises(AlreadyExists):
        await store.create_run(make_run())


async def test_request_id_returns_the_earlier_run_with_its_hash(store: RunStore) -> None:
    first = await store.create_run(make_run(request_id="req-1"), request_hash="h1")
    again = await store.create_run(make_run("run-b", request_id="req-1"), request_hash="h2")
    assert first.created and not again.created
    assert again.run.id == "run-a" and again.request_hash == "h1"
    with pytest.raises(NotFound):
        await store.get_run("run-b")


async def test_request_id_belongs_to_the_principal_that_sent_it(store: RunStore) -> None:
    mine = await store.create_run(make_run(request_id="req-1", creator="alice"), "h1")
    theirs = await store.create_run(make_run("run-b", request_id="req-1", creator="bob"), "h2")
    assert mine.created and theirs.created
    replayed = await store.create_run(make_run("run-c", request_id="req-1", creator="bob"), "h3")
    assert not replayed.created
    assert replayed.run.id == "run-b" and replayed.request_hash == "h2"


async def test_update_bumps_revision_and_logs_every_revision(store: RunStore) -> None:
    await store.create_run(make_run())
    r2 = await store.update_run("run-a", set_state(RunState.RUNNING))
    r3 = await store.update_run("run-a", set_state(RunState.SUCCEEDED))
    assert (r2.revision, r3.revision) == (2, 3)
    assert r3.update_time > T0
    replay = await store.revisions_after("run-a", 1)
    assert [(r.revision, r.state) for r in replay] == [
        (2, RunState.RUNNING),
        (3, RunState.SUCCEEDED),
    ]
    assert await store.revisions_after("run-a", 3) == []


async def test_unchanged_update_writes_no_revision(store: RunStore) -> None:
    await store.create_run(make_run())
    same = await store.update_run("run-a", lambda run: run)
    assert same.revision == 1


async def test_failed_mutation_leaves_run_untouched(store: RunStore) -> None:
    await store.create_run(make_run())

    def broken(run: Run) -> Run:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.update_run("run-a", broken)
    assert (await store.get_run("run-a")).revision == 1


async def test_history_beyond_limit_is_too_old_to_replay(store: RunStore) -> None:
    await store.create_run(make_run())
    for i in range(60):
        await store.update_run("run-a", lambda run, i=i: replace(run, output_parameters={"i": i}))
    assert await store.revisions_after("run-a", 2) is None
    recent = await store.revisions_after("run-a", 55)
    assert [r.revision for r in recent] == [56, 57, 58, 59, 60, 61]


async def test_list_filters_and_pages_newest_first(store: RunStore) -> None:
    for i in range(7):
        await store.create_run(
            make_run(
                f"run-{i}",
                create_time=T0 + timedelta(minutes=i),
                pipeline="a" if i % 2 else "b",
                labels={"n": str(i % 3)},
                state=RunState.SUCCEEDED if i < 3 else RunState.QUEUED,
            )
        )
    page = await store.list_runs(RunQuery(page_size=3))
    assert [r.id for r in page.runs] == ["run-6", "run-5", "run-4"] and page.more
    last = page.runs[-1]
    page2 = await store.list_runs(
        RunQuery(page_size=3, after=(sortable_time(last.create_time), last.id))
    )
    assert [r.id for r in page2.runs] == ["run-3", "run-2", "run-1"] and page2.more
    assert [r.id for r in (await store.list_runs(RunQuery(pipeline="a"))).runs] == [
        "run-5",
        "run-3",
        "run-1",
    ]
    states = await store.list_runs(RunQuery(states=frozenset({RunState.SUCCEEDED})))
    assert [r.id for r in states.runs] == ["run-2", "run-1", "run-0"]
    labelled = await store.list_runs(RunQuery(labels={"n": "0"}))
    assert [r.id for r in labelled.runs] == ["run-6", "run-3", "run-0"]
    window = await store.list_runs(
        RunQuery(created_after=T0 + timedelta(minutes=2), created_before=T0 + timedelta(minutes=4))
    )
    assert [r.id for r in window.runs] == ["run-3", "run-2"]


async def test_unfinished_runs_for_recovery(store: RunStore) -> None:
    await store.create_run(make_run("done", state=RunState.SUCCEEDED))
    await store.create_run(make_run("queued", create_time=T0 + timedelta(seconds=1)))
    await store.create_run(
        make_run("running", state=RunState.RUNNING, create_time=T0 + timedelta(seconds=2))
    )
    assert [r.id for r in await store.list_unfinished_runs()] == ["queued", "running"]


async def collect(stream, queue: asyncio.Queue) -> None:
    async for run in stream:
        await queue.put(run)
    await queue.put(None)


async def test_watch_sends_snapshot_then_every_revision_and_ends_at_terminal(
    store: RunStore,
) -> None:
    await store.create_run(make_run())
    queue: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(collect(store.watch("run-a"), queue))
    assert (await asyncio.wait_for(queue.get(), 5)).revision == 1
    await store.update_run("run-a", set_state(RunState.RUNNING))
    await store.update_run("run-a", lambda r: replace(r, output_parameters={"x": 1}))
    await store.update_run("run-a", set_state(RunState.SUCCEEDED))
    seen = [await asyncio.wait_for(queue.get(), 5) for _ in range(3)]
    assert [r.revision for r in seen] == [2, 3, 4]
    assert await asyncio.wait_for(queue.get(), 5) is None
    await task
    assert store.hub.watcher_count() == 0


async def test_watch_after_revision_replays_exactly_once(store: RunStore) -> None:
    await store.create_run(make_run())
    for state in (RunState.RUNNING, RunState.CANCELLING, RunState.CANCELLED):
        await store.update_run("run-a", set_state(state))
    revisions = [r.revision async for r in store.watch("run-a", after_revision=2)]
    assert revisions == [3, 4]
    assert [r.revision async for r in store.watch("run-a", after_revision=4)] == []


async def test_watch_with_too_old_or_bogus_cursor_gets_current_snapshot(
    store: RunStore,
) -> None:
    await store.create_run(make_run())
    for i in range(60):
        await store.update_run("run-a", lambda run, i=i: replace(run, output_parameters={"i": i}))
    await store.update_run("run-a", set_state(RunState.FAILED))
    assert [r.revision async for r in store.watch("run-a", after_revision=1)] == [62]
    assert [r.revision async for r in store.watch("run-a", after_revision=999)] == [62]


async def test_follower_takes_revisions_published_before_it_asks_without_waiting(
    store: RunStore,
) -> None:
    await store.create_run(make_run())
    follower = RunFollower(store, "run-a")
    assert [r.revision for r in await follower.first()] == [1]
    assert follower.take() is None
    await store.update_run("run-a", set_state(RunState.RUNNING))
    await store.update_run("run-a", set_state(RunState.SUCCEEDED))
    taken = follower.take()
    assert taken is not None and [r.revision for r in taken] == [2, 3]
    assert follower.done
    follower.close()
    follower.close()
    assert store.hub.watcher_count() == 0


async def test_follower_next_waits_for_the_next_revision(store: RunStore) -> None:
    await store.create_run(make_run())
    follower = RunFollower(store, "run-a")
    await follower.first()
    waiting = asyncio.create_task(follower.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    await store.update_run("run-a", set_state(RunState.RUNNING))
    assert [r.revision for r in await asyncio.wait_for(waiting, 5)] == [2]
    assert not follower.done
    follower.close()
    assert store.hub.watcher_count() == 0


async def test_follower_reads_the_store_when_memory_no_longer_holds_the_revisions(
    tmp_path: Path,
) -> None:
    store = SqliteRunStore(tmp_path / "runs.db", hub=RevisionHub(recent_per_run=1))
    await store.create_run(make_run())
    follower = RunFollower(store, "run-a")
    await follower.first()
    for state in (RunState.RUNNING, RunState.CANCELLING, RunState.CANCELLED):
        await store.update_run("run-a", set_state(state))
    assert follower.take() is None  # the hub keeps revision 4 alone
    assert [r.revision for r in await follower.next()] == [2, 3, 4]
    assert follower.done
    follower.close()
    await store.close()


async def test_follower_of_a_closed_hub_is_unavailable_with_where_to_resume(
    store: RunStore,
) -> None:
    await store.create_run(make_run())
    follower = RunFollower(store, "run-a")
    await follower.first()
    await store.hub.close()
    with pytest.raises(Unavailable, match="after_revision = 1"):
        follower.take()
    follower.close()
    assert store.hub.watcher_count() == 0


async def test_watch_unknown_run_raises_and_leaves_no_watcher(store: RunStore) -> None:
    with pytest.raises(NotFound):
        async for _ in store.watch("ghost"):
            pass
    assert store.hub.watcher_count() == 0


async def test_cancelled_watcher_is_removed(store: RunStore) -> None:
    await store.create_run(make_run())
    queue: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(collect(store.watch("run-a"), queue))
    await asyncio.wait_for(queue.get(), 5)
    assert store.hub.watcher_count("run-a") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.hub.watcher_count() == 0


async def test_many_watchers_each_see_every_revision(store: RunStore) -> None:
    await store.create_run(make_run())
    queues = [asyncio.Queue() for _ in range(50)]
    tasks = [asyncio.create_task(collect(store.watch("run-a"), q)) for q in queues]
    for q in queues:
        await asyncio.wait_for(q.get(), 5)
    for i in range(5):
        await store.update_run("run-a", lambda run, i=i: replace(run, output_parameters={"i": i}))
    await store.update_run("run-a", set_state(RunState.SUCCEEDED))
    await asyncio.gather(*tasks)
    for q in queues:
        revisions = []
        while (run := q.get_nowait()) is not None:
            revisions.append(run.revision)
        assert revisions == [2, 3, 4, 5, 6, 7]


async def test_wait_delivered_waits_for_every_watcher_to_take_the_revision(
    store: RunStore,
) -> None:
    """What the executor waits for before its next work (RunWrites): every watcher has been
    sent the latest revision, i.e. has asked for the one after it, or has gone."""
    await store.create_run(make_run())
    await store.hub.wait_delivered("run-a", stall=30, limit=30)  # nobody watches: no wait
    queue: asyncio.Queue = asyncio.Queue()
    prompt = asyncio.create_task(collect(store.watch("run-a"), queue))
    slow = store.watch("run-a")
    assert (await anext(slow)).revision == 1
    assert (await asyncio.wait_for(queue.get(), 5)).revision == 1

    await store.update_run("run-a", set_state(RunState.RUNNING))
    delivered = asyncio.create_task(store.hub.wait_delivered("run-a", stall=30, limit=30))
    assert (await asyncio.wait_for(queue.get(), 5)).revision == 2
    # The prompt watcher has taken revision 2; the slow one has not asked for it yet.
    done, _ = await asyncio.wait({delivered}, timeout=0.2)
    assert not done
    assert (await anext(slow)).revision == 2
    done, _ = await asyncio.wait({delivered}, timeout=0.2)
    assert not done  # handed over, but not asked past (gRPC asks once it has sent it)
    asking = asyncio.create_task(anext(slow))
    await asyncio.wait_for(delivered, 5)
    assert not asking.done()

    # A slow reader holds nobody up for longer than the stall; one that goes away, not
    # at all.
    await store.update_run("run-a", set_state(RunState.CANCELLING))
    assert (await asyncio.wait_for(queue.get(), 5)).revision == 3
    await asyncio.wait_for(store.hub.wait_delivered("run-a", stall=0.05, limit=30), 5)
    assert (await asyncio.wait_for(asking, 5)).revision == 3
    delivered = asyncio.create_task(store.hub.wait_delivered("run-a", stall=30, limit=30))
    await slow.aclose()
    await asyncio.wait_for(delivered, 5)
    prompt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await prompt
    assert store.hub.watcher_count() == 0


async def _watchers_sent_revision_2(store: RunStore, count: int) -> list:
    """`count` watchers of run-a, each handed revision 2 but not yet asking past it."""
    watchers = [store.watch("run-a") for _ in range(count)]
    for watcher in watchers:
        assert (await anext(watcher)).revision == 1
    await store.update_run("run-a", set_state(RunState.RUNNING))
    for watcher in watchers:
        assert (await anext(watcher)).revision == 2
    return watchers


async def _ask_past_one_by_one(watchers: list, gap: float) -> list[asyncio.Task]:
    asking = []
    for watcher in watchers:
        await asyncio.sleep(gap)
        asking.append(asyncio.create_task(anext(watcher)))
    return asking


async def _close(watchers: list, asking: list[asyncio.Task]) -> None:
    for task in asking:
        task.cancel()
    await asyncio.gather(*asking, return_exceptions=True)
    for watcher in watchers:
        await watcher.aclose()


async def test_wait_delivered_waits_for_a_fan_out_still_sending_past_the_stall(
    store: RunStore,
) -> None:
    """5,000 watchers take longer than the stall to be sent a revision, but one of them is
    sent it every few microseconds: the writer waits for all of them (up to the limit)."""
    await store.create_run(make_run())
    watchers = await _watchers_sent_revision_2(store, 6)
    stall = 1.0
    delivered = asyncio.create_task(store.hub.wait_delivered("run-a", stall=stall, limit=30))
    started = asyncio.get_running_loop().time()
    asking = await _ask_past_one_by_one(watchers[:-1], gap=stall / 4)
    # Each gap is a quarter of the stall, all of them together more than the stall.
    assert asyncio.get_running_loop().time() - started > stall
    assert not delivered.done()
    asking.append(asyncio.create_task(anext(watchers[-1])))
    await asyncio.wait_for(delivered, 5)
    assert all(not task.done() for task in asking)
    await _close(watchers, asking)


async def test_wait_delivered_gives_up_at_its_limit(store: RunStore) -> None:
    await store.create_run(make_run())
    watchers = await _watchers_sent_revision_2(store, 6)
    stall = 1.0
    delivered = asyncio.create_task(store.hub.wait_delivered("run-a", stall=stall, limit=stall / 2))
    asking = await _ask_past_one_by_one(watchers[:-1], gap=stall / 4)
    # Still making progress, but the limit passed: the last watcher has not been sent it.
    assert delivered.done()
    await _close(watchers, asking)


async def test_step_cache_round_trip(store: RunStore) -> None:
    assert store.cache_get("k") is None
    store.cache_put("k", {"a": [1, 2]})
    store.cache_put("k", {"a": [3]})
    assert store.cache_get("k") == {"a": [3]}


async def test_a_lease_has_one_owner_until_handed_over_or_released(store: RunStore) -> None:
    await store.create_run(make_run("r1"))
    mine, theirs = store.leases("a", ttl_seconds=30), store.leases("b", ttl_seconds=30)
    assert await mine.acquire("r1")
    assert not await theirs.acquire("r1")
    assert await theirs.claim_expired(10) == []
    await mine.hand_over(["r1"])
    assert await theirs.claim_expired(10) == ["r1"]
    assert await mine.renew(["r1"]) == set()
    await theirs.release("r1")
    assert await mine.acquire("r1")


async def test_delete_removes_the_run_its_revisions_and_its_request_id(store: RunStore) -> None:
    step = Step(name="fetch-calls", component="comp-fetch-calls", state=StepState.SUCCEEDED)
    await store.create_run(make_run(request_id="req-1", creator="ann"), request_hash="h1")
    await store.update_run("run-a", lambda run: replace(run, steps=(step,)))
    await store.update_run("run-a", set_state(RunState.SUCCEEDED))
    assert await store.leases("a", ttl_seconds=30).acquire("run-a")
    await store.create_run(make_run("run-b"))

    await store.delete_run("run-a")

    with pytest.raises(NotFound):
        await store.get_run("run-a")
    with pytest.raises(NotFound):
        await store.revisions_after("run-a", 0)
    page = await store.list_runs(RunQuery(labels={"team": "slu"}))
    assert [r.id for r in page.runs] == ["run-b"]
    # The id and the request_id are free again: a new run, not the deleted one.
    again = await store.create_run(
        make_run(request_id="req-1", creator="ann", parameters={}), request_hash="h2"
    )
    assert again.created and (await store.get_run("run-a")).revision == 1
    assert (await store.get_run("run-a")).steps == ()
    assert await store.revisions_after("run-a", 0) == [again.run]
    assert await store.leases("b", ttl_seconds=30).acquire("run-a"), "the lease went too"
    with pytest.raises(NotFound) as caught:
        await store.delete_run("nope")
    assert caught.value.reason == "RUN_NOT_FOUND"


async def test_a_watch_of_a_deleted_run_ends_with_not_found(store: RunStore) -> None:
    await store.create_run(make_run(state=RunState.SUCCEEDED))
    await store.delete_run("run-a")
    with pytest.raises(NotFound):
        async for _ in store.watch("run-a", after_revision=1):
            pass
    assert store.hub.watcher_count("run-a") == 0


async def test_step_cache_entries_can_be_forgotten(store: RunStore) -> None:
    store.cache_put("k", {"a": 1})
    store.cache_delete("k")
    store.cache_delete("never-stored")
    assert store.cache_get("k") is None


async def test_an_exclusive_task_is_held_by_one_holder_at_a_time(store: RunStore) -> None:
    async with store.exclusive("retention") as held:
        assert held
    async with store.exclusive("retention") as held_again:
        assert held_again, "released at the end of the block"
