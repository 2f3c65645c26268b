"""The change feed on PostgreSQL with several replicas: cursors in commit order (a
reader never skips a change that commits later with a smaller cursor), wake-ups across
replicas through NOTIFY, and what numbering under the lock costs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from skit_pipelines.domain import Run, RunState
from skit_pipelines.store import codec
from skit_pipelines.store.postgres import PostgresRunStore
from skit_testing.waiting import until

pytest_plugins = ["skit_testing.postgres"]

logger = logging.getLogger(__name__)

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


def bump(run: Run) -> Run:
    return replace(run, output_parameters={"n": run.output_parameters.get("n", 0) + 1})


@pytest.fixture
async def replicas(postgres_dsn: str) -> AsyncIterator[tuple[PostgresRunStore, PostgresRunStore]]:
    a, b = await asyncio.gather(
        PostgresRunStore.open(postgres_dsn), PostgresRunStore.open(postgres_dsn)
    )
    try:
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


async def _lock_waiters(dsn: str, pid: int) -> bool:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
        ).fetchone()
    return bool(row and row[0])


async def test_a_change_numbered_later_waits_for_the_earlier_commit(
    postgres_dsn: str, replicas: tuple[PostgresRunStore, PostgresRunStore]
) -> None:
    """The race a sequence loses: A numbers its change, B numbers one after it and would
    commit first, so a reader at B's cursor would never see A's. Under the lock, B's
    numbering waits until A has committed."""
    a, b = replicas
    await a.create_run(make_run("run-a"))
    await a.create_run(make_run("run-b"))
    run_a, run_b = await a.get_run("run-a"), await a.get_run("run-b")
    conn_a = await AsyncConnection.connect(postgres_dsn, autocommit=True)
    conn_b = await AsyncConnection.connect(postgres_dsn, autocommit=True)
    try:
        txn_a = conn_a.transaction()
        await txn_a.__aenter__()
        cursor_a = await a._append_change(
            conn_a, run_a, Jsonb(codec.run_to_dict(run_a), dumps=codec.dumps)
        )

        async def write_b() -> int:
            async with conn_b.transaction():
                return await b._append_change(
                    conn_b, run_b, Jsonb(codec.run_to_dict(run_b), dumps=codec.dumps)
                )

        task_b = asyncio.ensure_future(write_b())
        await until(lambda: _lock_waiters(postgres_dsn, conn_b.info.backend_pid), what="B waits")
        assert not task_b.done()
        # Nothing after cursor 2 is visible while A is open: a reader cannot get ahead.
        assert (await a.changes_after(2, 10)).changes == []
        await txn_a.__aexit__(None, None, None)
        cursor_b = await asyncio.wait_for(task_b, 10)
        assert (cursor_a, cursor_b) == (3, 4)
        page = await b.changes_after(2, 10)
        assert [(c.cursor, c.run.id) for c in page.changes] == [(3, "run-a"), (4, "run-b")]
    finally:
        await conn_a.close()
        await conn_b.close()


async def test_a_reader_never_skips_while_two_replicas_write(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = replicas
    runs = [f"run-{n}" for n in range(20)]
    for run_id in runs:
        await a.create_run(make_run(run_id))
    start = await a.latest_change_cursor()
    writes_per_run = 10
    done = asyncio.Event()
    seen: list[tuple[int, str, int]] = []

    async def read() -> None:
        position = start
        while True:
            finished = done.is_set()
            page = await b.changes_after(position, 50)
            assert not page.too_old
            for change in page.changes:
                # Contiguous: whatever commits later never has a smaller cursor.
                assert change.cursor == position + 1, (change.cursor, position)
                seen.append((change.cursor, change.run.id, change.run.revision))
                position = change.cursor
            if finished and not page.changes:
                return
            if not page.changes:
                await b.wait_for_change(position, timeout=0.2)

    async def write(store: PostgresRunStore, run_id: str) -> None:
        for _ in range(writes_per_run // 2):
            await store.update_run(run_id, bump)

    reader = asyncio.ensure_future(read())
    await asyncio.gather(*(write(s, r) for r in runs for s in (a, b)))
    done.set()
    await asyncio.wait_for(reader, 30)
    assert len(seen) == len(runs) * writes_per_run
    for run_id in runs:
        revisions = [rev for _, rid, rev in seen if rid == run_id]
        assert revisions == list(range(2, 2 + writes_per_run))


async def test_a_change_on_one_replica_wakes_a_waiter_on_the_other(
    replicas: tuple[PostgresRunStore, PostgresRunStore],
) -> None:
    a, b = replicas
    await a.create_run(make_run("run-a"))
    await until(lambda: b.change_signal.latest == 1, what="b hears the create")
    waiter = asyncio.ensure_future(b.wait_for_change(1, timeout=30))
    await asyncio.sleep(0)
    await a.update_run("run-a", bump)
    await asyncio.wait_for(waiter, 5)
    assert b.change_signal.latest == 2
    await a.update_run("run-a", lambda run: replace(run, state=RunState.CANCELLED))
    await a.delete_run("run-a")
    await until(lambda: b.change_signal.latest == 4, what="b hears the delete")
    page = await b.changes_after(2, 10)
    assert [(c.cursor, c.deleted) for c in page.changes] == [(3, False), (4, True)]


async def test_a_restarted_listener_catches_up_the_latest_cursor(
    replicas: tuple[PostgresRunStore, PostgresRunStore], postgres_dsn: str
) -> None:
    a, b = replicas
    await a.create_run(make_run("run-a"))
    await until(lambda: b.change_signal.latest == 1)
    # Kill b's LISTEN connection, write meanwhile; b reconnects and learns cursor 2.
    async with await AsyncConnection.connect(postgres_dsn, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
        )
    await a.update_run("run-a", bump)
    await until(lambda: b.change_signal.latest == 2, what="b catches up")


async def _updates_per_second(
    store: PostgresRunStore, concurrency: int, seconds: float, prefix: str
) -> float:
    runs = [f"{prefix}-{n}" for n in range(concurrency)]
    for run_id in runs:
        await store.create_run(make_run(run_id))
    count = 0
    deadline = time.monotonic() + seconds

    async def loop(run_id: str) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await store.update_run(run_id, bump)
            count += 1

    begin = time.monotonic()
    await asyncio.gather(*(loop(r) for r in runs))
    return count / (time.monotonic() - begin)


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_update_throughput_with_the_change_lock(
    postgres_dsn: str, concurrency: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a pass/fail benchmark: prints updates/s with the feed as built, with each
    change numbered by a sequence instead (no lock: what commit order costs), and with
    no change row at all (what the feed costs). Rounds
    alternate, and the best of each counts, so warm-up and neighbours' noise cancel out."""
    store = await PostgresRunStore.open(postgres_dsn, pool_size=10)
    locked = PostgresRunStore._append_change

    async def unordered(
        self: PostgresRunStore, conn: AsyncConnection[Any], run: Run, snapshot: Any, **_: Any
    ) -> int:
        row = await (
            await conn.execute(
                "WITH change AS (INSERT INTO bench_changes"
                " (cursor, run_id, revision, deleted, snapshot)"
                " VALUES (nextval('bench_changes_cursor'), %s, %s, false, %s) RETURNING cursor)"
                " SELECT cursor, pg_notify('bench', cursor::text) FROM change",
                (run.id, run.revision, snapshot),
            )
        ).fetchone()
        assert row is not None
        return int(row[0])

    async def no_feed(
        self: PostgresRunStore, conn: AsyncConnection[Any], run: Run, snapshot: Any, **_: Any
    ) -> int:
        await conn.execute("SELECT pg_notify('bench', %s)", (run.id,))
        return 0

    results: dict[str, list[float]] = {"lock": [], "sequence": [], "none": []}
    try:
        async with await AsyncConnection.connect(postgres_dsn, autocommit=True) as admin:
            # Its own table: the rounds with the lock number theirs MAX(cursor) + 1.
            await admin.execute("CREATE TABLE bench_changes (LIKE run_changes INCLUDING ALL)")
            await admin.execute("CREATE SEQUENCE bench_changes_cursor")
        for round_ in range(3):
            for name, append in (("lock", locked), ("sequence", unordered), ("none", no_feed)):
                monkeypatch.setattr(PostgresRunStore, "_append_change", append)
                results[name].append(
                    await _updates_per_second(store, concurrency, 1.0, f"{name}-{round_}")
                )
    finally:
        await store.close()
    with_lock, without_lock = max(results["lock"]), max(results["sequence"])
    message = (
        f"update_run with {concurrency} concurrent writers: {with_lock:.0f}/s with the change"
        f" lock, {without_lock:.0f}/s with a sequence ({with_lock / without_lock:.2f} x),"
        f" {max(results['none']):.0f}/s with no change feed at all"
    )
    logger.warning(message)
    print(message)
    assert with_lock > 0 and without_lock > 0
