"""The change feed (RunStore.changes_after / wait_for_change), run against SQLite and
PostgreSQL: one change per committed write, in order, bounded, with deletions."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState
from skit_pipelines.store import PostgresRunStore, RunStore, SqliteRunStore
from skit_pipelines.store.base import ChangePage

pytest_plugins = ["skit_testing.postgres"]

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

CHANGE_LIMIT = 20
"""Small, so that retention is reached within a test (prunes every 2 changes)."""


def make_run(run_id: str, **changes: object) -> Run:
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
        store: RunStore = SqliteRunStore(tmp_path / "runs.db", change_limit=CHANGE_LIMIT)
    else:
        store = await PostgresRunStore.open(
            request.getfixturevalue("postgres_dsn"), change_limit=CHANGE_LIMIT
        )
    yield store
    await store.close()


def set_state(state: RunState):
    return lambda run: replace(run, state=state)


async def test_an_empty_feed(store: RunStore) -> None:
    page = await store.changes_after(0, 10)
    assert page == ChangePage(changes=[], oldest_cursor=1, latest_cursor=0, after_cursor=0)
    assert not page.too_old
    assert await store.latest_change_cursor() == 0


async def test_every_write_is_one_change_in_order(store: RunStore) -> None:
    await store.create_run(make_run("run-a"))
    await store.create_run(make_run("run-b"))
    await store.update_run("run-a", set_state(RunState.RUNNING))
    await store.update_run("run-a", set_state(RunState.RUNNING))  # unchanged: no change
    await store.update_run("run-b", set_state(RunState.CANCELLED))
    await store.delete_run("run-b")

    page = await store.changes_after(0, 100)
    assert [(c.cursor, c.run.id, c.run.revision, c.deleted) for c in page.changes] == [
        (1, "run-a", 1, False),
        (2, "run-b", 1, False),
        (3, "run-a", 2, False),
        (4, "run-b", 2, False),
        (5, "run-b", 2, True),
    ]
    assert page.changes[2].run == await store.get_run("run-a")
    assert page.changes[4].run.state is RunState.CANCELLED
    assert (page.oldest_cursor, page.latest_cursor) == (1, 5)
    assert await store.latest_change_cursor() == 5


async def test_pages_resume_after_a_cursor(store: RunStore) -> None:
    for n in range(7):
        await store.create_run(make_run(f"run-{n}"))
    first = await store.changes_after(0, 3)
    assert [c.cursor for c in first.changes] == [1, 2, 3]
    rest = await store.changes_after(first.changes[-1].cursor, 100)
    assert [c.cursor for c in rest.changes] == [4, 5, 6, 7]
    assert not rest.too_old
    assert (await store.changes_after(7, 10)).changes == []


async def test_a_failed_write_adds_no_change(store: RunStore) -> None:
    await store.create_run(make_run("run-a"))

    def boom(run: Run) -> Run:
        raise RuntimeError("mutation failed")

    with pytest.raises(RuntimeError):
        await store.update_run("run-a", boom)
    await store.update_run("run-a", set_state(RunState.RUNNING))
    assert [c.cursor for c in (await store.changes_after(0, 10)).changes] == [1, 2]


async def test_the_feed_is_bounded_and_an_old_cursor_is_too_old(store: RunStore) -> None:
    await store.create_run(make_run("run-a"))
    for n in range(3 * CHANGE_LIMIT):
        await store.update_run("run-a", lambda run, n=n: replace(run, output_parameters={"n": n}))
    latest = 1 + 3 * CHANGE_LIMIT
    page = await store.changes_after(0, 1000)
    held = len(page.changes)
    assert CHANGE_LIMIT <= held <= CHANGE_LIMIT + CHANGE_LIMIT // 10
    assert page.too_old
    assert page.latest_cursor == latest
    assert page.oldest_cursor == latest - held + 1 == page.changes[0].cursor
    # Right before the oldest held is still complete.
    assert not (await store.changes_after(page.oldest_cursor - 1, 1)).too_old
    assert (await store.changes_after(page.oldest_cursor - 2, 1)).too_old


async def test_a_cursor_from_the_future_is_too_old(store: RunStore) -> None:
    """As from another (or a recreated) store: the reader must re-list."""
    await store.create_run(make_run("run-a"))
    assert (await store.changes_after(99, 10)).too_old


async def test_wait_for_change_wakes_on_a_commit_and_times_out(store: RunStore) -> None:
    await store.create_run(make_run("run-a"))
    # Already there: returns at once.
    await asyncio.wait_for(store.wait_for_change(0, timeout=30), 5)
    # Nothing newer: returns after the timeout, without raising.
    await store.wait_for_change(1, timeout=0.05)
    waiter = asyncio.ensure_future(store.wait_for_change(1, timeout=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.update_run("run-a", set_state(RunState.RUNNING))
    await asyncio.wait_for(waiter, 5)


async def test_a_reopened_store_knows_the_latest_cursor(tmp_path: Path) -> None:
    first = SqliteRunStore(tmp_path / "runs.db")
    await first.create_run(make_run("run-a"))
    await first.close()
    again = SqliteRunStore(tmp_path / "runs.db")
    try:
        await asyncio.wait_for(again.wait_for_change(0, timeout=30), 5)
        await again.create_run(make_run("run-b"))
        assert [c.cursor for c in (await again.changes_after(0, 10)).changes] == [1, 2]
    finally:
        await again.close()
