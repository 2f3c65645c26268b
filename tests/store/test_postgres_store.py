"""PostgresRunStore specifics: migrations, several replicas on one database (idempotent
creates, serialized updates, LISTEN/NOTIFY wakeups, leases) and surviving a restart of
PostgreSQL. Each "replica" is a store instance with its own pool and listener."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import Unavailable
from skit_pipelines.store import RunQuery, codec
from skit_pipelines.store.base import sortable_time
from skit_pipelines.store.postgres import MIGRATIONS, PostgresRunStore, RetryPolicy
from skit_testing.waiting import until

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


@pytest.fixture
async def replicas(postgres_dsn: str) -> AsyncIterator[tuple[PostgresRunStore, PostgresRunStore]]:
    a, b = await asyncio.gather(
        PostgresRunStore.open(postgres_dsn), PostgresRunStore.open(postgres_dsn)
    )
    try:
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


def bump(run: Run) -> Run:
    """Reads the counter from the current state: lost updates would show as a short count."""
    return replace(run, output_parameters={"n": run.output_parameters.get("n", 0) + 1})


def watch_into(store: PostgresRunStore, run_id: str) -> tuple[list[int], asyncio.Task[None]]:
    """A watcher whose revisions appear in the returned list as they arrive."""
    seen: list[int] = []

    async def follow() -> None:
        async for run in store.watch(run_id):
            seen.append(run.revision)

    return seen, asyncio.create_task(follow())


async def first_snapshots(*seen: list[int]) -> None:
    while not all(seen):
        await asyncio.sleep(0.01)


async def test_replicas_starting_together_migrate_once(
    replicas: tuple[PostgresRunStore, PostgresRunStore], postgres_dsn: str
) -> None:
    a, _ = replicas
    assert await a.schema_version() == len(MIGRATIONS)
    await a.create_run(make_run())
    reopened = await PostgresRunStore.open(postgres_dsn)
    assert (await reopened.get_run("run-a")).id == "run-a"
    await reopened.close()


async def test_newer_schema_is_refused(postgres_dsn: str) -> None:
    store = await PostgresRunStore.open(postgres_dsn)
    await store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("UPDATE skit_schema SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(RuntimeError, match="newer"):
        await PostgresRunStore.open(postgres_dsn)


async def test_request_ids_stored_before_version_2_belong_to_their_runs_creator(
    postgres_dsn: str,
) -> None:
    earlier = make_run(request_id="req-1", creator="alice")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(MIGRATIONS[0].encode())
        conn.execute("CREATE TABLE skit_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO skit_schema (version) VALUES (1)")
        conn.execute(
            "INSERT INTO runs (id, pipeline, state, create_time, revision, request_id, snapshot)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            ("run-a", earlier.pipeline, 1, T0, 1, "req-1", Jsonb(codec.run_to_dict(earlier))),
        )
        conn.execute("INSERT INTO requests VALUES ('req-1', 'h1', 'run-a')")
    store = await PostgresRunStore.open(postgres_dsn)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        replayed = await store.create_run(make_run("run-b", request_id="req-1", creator="alice"))
        assert (replayed.created, replayed.run.id, replayed.request_hash) == (False, "run-a", "h1")
        other = await store.create_run(make_run("run-c", request_id="req-1", creator="bob"))
        assert other.created
    finally:
        await store.close()


async def test_100_concurrent_creates_with_one_request_id_create_one_run(
    replicas: tuple[PostgresRunStore, PostgresRunStore], postgres_dsn: str
) -> None:
    a, b = replicas
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(
            (a if i % 2 else b).create_run(
                make_run(
                    f"run-{i}", request_id="req-1", create_time=T0 + timedelta(microseconds=i)
                ),
                request_hash="h",
            )
            for i in range(100)
        )
    )
    elapsed = time.perf_counter() - started
    created = [o for o in outcomes if o.created]
    assert len(created) == 1
    assert {o.run.id for o in outcomes} == {created[0].run.id}
    assert all(o.request_hash == "h" for o in outcomes if not o.created)
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (1,)
    print(f"100 concurrent creates over two replicas: {elapsed * 1000:.0f} ms")


async def test_updates_from_two_replicas_serialize_without_lost_updates(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = replicas
    await a.create_run(make_run())
    await asyncio.gather(*(store.update_run("run-a", bump) for store in (a, b) * 25))
    final = await b.get_run("run-a")
    assert final.output_parameters == {"n": 50}
    assert final.revision == 51
    assert [r.revision for r in await a.revisions_after("run-a", 0)] == list(range(1, 52))


async def test_watchers_on_another_replica_see_every_revision_once_in_order(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = replicas
    await a.create_run(make_run())
    watchers = [watch_into(b, "run-a") for _ in range(20)] + [watch_into(a, "run-a")]
    await first_snapshots(*(seen for seen, _ in watchers))
    # From here on, B's watchers must be woken by the listener alone: count any
    # store reads they would make themselves (polling or falling back to the log).
    reads = 0
    original_get, original_after = b.get_run, b.revisions_after

    async def counted_get(run_id: str) -> Run:
        nonlocal reads
        reads += 1
        return await original_get(run_id)

    async def counted_after(run_id: str, revision: int) -> list[Run] | None:
        nonlocal reads
        reads += 1
        return await original_after(run_id, revision)

    b.get_run, b.revisions_after = counted_get, counted_after  # type: ignore[method-assign]
    for _ in range(30):
        await a.update_run("run-a", bump)
    await a.update_run("run-a", lambda run: replace(run, state=RunState.SUCCEEDED))
    await asyncio.wait_for(asyncio.gather(*(task for _, task in watchers)), 10)
    for seen, _ in watchers:
        assert seen == list(range(1, 33))
    assert reads == 0
    assert b.hub.watcher_count() == 0


async def test_writes_from_both_replicas_reach_watchers_on_both(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = replicas
    await a.create_run(make_run())
    (seen_a, on_a), (seen_b, on_b) = watch_into(a, "run-a"), watch_into(b, "run-a")
    await first_snapshots(seen_a, seen_b)
    # Interleaved writers: each replica publishes its own revisions at once and learns
    # the other's later, so its in-memory history has gaps the watch must not skip.
    await asyncio.gather(*(store.update_run("run-a", bump) for store in (a, b) * 20))
    await b.update_run("run-a", lambda run: replace(run, state=RunState.FAILED))
    await asyncio.wait_for(asyncio.gather(on_a, on_b), 10)
    assert seen_a == seen_b == list(range(1, 43))


async def test_replay_is_complete_while_revisions_keep_arriving(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    # A cursor at the latest revision must never look "too old to replay" just because
    # another revision was committed while the log was being read.
    a, b = replicas
    await a.create_run(make_run())
    writing = asyncio.gather(*(a.update_run("run-a", bump) for _ in range(60)))
    known = 1
    while not writing.done():
        newer = await b.revisions_after("run-a", known)
        assert newer is not None, f"revisions after {known} reported as lost"
        assert [r.revision for r in newer] == list(range(known + 1, known + 1 + len(newer)))
        known += len(newer)
    await writing


async def test_leases_have_one_owner_and_move_when_it_stops_renewing(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = replicas
    for run_id in ("r1", "r2"):
        await a.create_run(make_run(run_id))
    mine, theirs = a.leases("a", ttl_seconds=0.5), b.leases("b", ttl_seconds=0.5)
    assert await mine.acquire("r1") and await mine.acquire("r2")
    assert not await theirs.acquire("r1")
    assert await mine.acquire("r1"), "acquiring a lease one holds renews it"
    assert await theirs.claim_expired(10) == []
    await mine.hand_over(["r2"])
    assert await theirs.claim_expired(10) == ["r2"]
    # Unrenewed leases expire: r1 (mine) and r2 (theirs, since its hand-over) are claimed
    # again, each once its own TTL has passed.
    claimed: set[str] = set()

    async def claimed_both() -> bool:
        claimed.update(await theirs.claim_expired(10))
        return claimed == {"r1", "r2"}

    await until(claimed_both, 10, what="both leases expired and were claimed")
    assert await mine.renew(["r1", "r2"]) == set()
    await theirs.release("r1")
    assert await mine.acquire("r1")


async def test_survives_a_postgres_restart_without_losing_events(throwaway_postgres) -> None:
    server = throwaway_postgres
    retry = RetryPolicy(budget_seconds=30, max_seconds=0.5)
    writer = await PostgresRunStore.open(server.dsn, retry=retry)
    reader = await PostgresRunStore.open(server.dsn, retry=retry)
    impatient = await PostgresRunStore.open(
        server.dsn, retry=RetryPolicy(budget_seconds=0.3, max_seconds=0.1)
    )
    try:
        await writer.create_run(make_run())
        seen, watch = watch_into(reader, "run-a")
        await first_snapshots(seen)
        written_at: list[float] = []

        async def write(count: int) -> None:
            for _ in range(count):
                await writer.update_run("run-a", bump)
                written_at.append(time.monotonic())
                await asyncio.sleep(0.02)

        await write(5)
        await asyncio.to_thread(server.shut_down)
        down = asyncio.create_task(write(10))
        with pytest.raises(Unavailable) as caught:
            await impatient.get_run("run-a")
        assert caught.value.reason == "STORE_UNAVAILABLE"
        assert impatient.cache_get("anything") is None
        await asyncio.sleep(0.5)
        before_restart = len(written_at)
        await asyncio.to_thread(server.start_again)
        back = time.monotonic()
        await asyncio.wait_for(down, 30)
        recovery = written_at[before_restart] - back
        await writer.update_run("run-a", lambda run: replace(run, state=RunState.SUCCEEDED))
        await asyncio.wait_for(watch, 30)
        assert seen == list(range(1, 18))
        assert reader.listener_reconnects >= 1
        assert (await impatient.get_run("run-a")).revision == 17
        print(f"first write {recovery * 1000:.0f} ms after PostgreSQL was back")
    finally:
        await asyncio.gather(writer.close(), reader.close(), impatient.close())


async def test_an_exclusive_task_runs_on_one_replica_at_a_time(postgres_dsn: str) -> None:
    first = await PostgresRunStore.open(postgres_dsn)
    second = await PostgresRunStore.open(postgres_dsn)
    try:
        async with first.exclusive("retention") as held:
            assert held
            async with second.exclusive("retention") as elsewhere:
                assert not elsewhere
            async with second.exclusive("another-task") as other:
                assert other
        async with second.exclusive("retention") as taken_over:
            assert taken_over
    finally:
        await first.close()
        await second.close()


async def test_runs_stored_before_version_3_list_by_label_and_state_in_time_order(
    postgres_dsn: str,
) -> None:
    older = [make_run(f"run-{i}", create_time=T0 + timedelta(minutes=i)) for i in range(3)]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for script in MIGRATIONS[:2]:
            conn.execute(script.encode())
        conn.execute("CREATE TABLE skit_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO skit_schema (version) VALUES (2)")
        for run in older:
            conn.execute(
                "INSERT INTO runs (id, pipeline, state, create_time, revision, snapshot)"
                " VALUES (%s, %s, %s, %s, 1, %s)",
                (
                    run.id,
                    run.pipeline,
                    int(run.state),
                    run.create_time,
                    Jsonb(codec.run_to_dict(run)),
                ),
            )
            conn.execute("INSERT INTO run_labels VALUES (%s, 'team', 'slu')", (run.id,))
    store = await PostgresRunStore.open(postgres_dsn)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        await store.create_run(make_run("run-3", create_time=T0 + timedelta(hours=1)))
        by_label = await store.list_runs(RunQuery(labels={"team": "slu"}, page_size=2))
        assert [r.id for r in by_label.runs] == ["run-3", "run-2"] and by_label.more
        last = by_label.runs[-1]
        rest = await store.list_runs(
            RunQuery(labels={"team": "slu"}, after=(sortable_time(last.create_time), last.id))
        )
        assert [r.id for r in rest.runs] == ["run-1", "run-0"]
        by_state = await store.list_runs(RunQuery(states=frozenset({RunState.QUEUED})))
        assert [r.id for r in by_state.runs] == ["run-3", "run-2", "run-1", "run-0"]
    finally:
        await store.close()
