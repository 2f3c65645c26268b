"""The store's half of notifications, against SQLite and PostgreSQL alike: the cursor's
compare-and-set with its deliveries in one transaction, one delivery per run and state,
claims, attempts, paging, and deletion."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import AlreadyExists, NotFound
from skit_pipelines.notifications.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    RunFilter,
    Subscription,
    WebhookSink,
)
from skit_pipelines.store import PostgresRunStore, RunStore, SqliteRunStore

pytest_plugins = ["skit_testing.postgres"]

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        store: RunStore = SqliteRunStore(tmp_path / "runs.db")
    else:
        store = await PostgresRunStore.open(request.getfixturevalue("postgres_dsn"))
    yield store
    await store.close()


def _subscription(sub_id: str = "hooks", **changes: object) -> Subscription:
    subscription = Subscription(
        id=sub_id,
        filter=RunFilter(labels={"team": "slu"}),
        notify_states=frozenset({RunState.SUCCEEDED}),
        sink=WebhookSink(url="https://h.test/", signing_secret="hook-key"),
        creator="ana",
        create_time=T0,
        cursor=0,
    )
    return replace(subscription, **changes)  # type: ignore[arg-type]


def _delivery(cursor: int, run_id: str = "r1", state: RunState = RunState.SUCCEEDED) -> Delivery:
    run = Run(
        id=run_id,
        pipeline="typed",
        pipeline_version="v",
        parameters={},
        labels={"team": "slu"},
        state=state,
        create_time=T0,
        update_time=T0,
        revision=cursor,
    )
    return Delivery(
        subscription_id="hooks",
        cursor=cursor,
        run=run,
        state=DeliveryState.PENDING,
        create_time=T0,
        next_attempt_time=T0,
    )


async def test_subscriptions_round_trip_with_request_ids(store: RunStore) -> None:
    created = await store.create_subscription(_subscription(request_id="q1"), "hash-1")
    assert created.created
    again = await store.create_subscription(_subscription("other", request_id="q1"), "hash-2")
    assert not again.created and again.subscription.id == "hooks"
    assert again.request_hash == "hash-1"
    with pytest.raises(AlreadyExists):
        await store.create_subscription(_subscription())
    got = await store.get_subscription("hooks")
    assert got.filter == RunFilter(labels={"team": "slu"})
    assert got.sink == WebhookSink(url="https://h.test/", signing_secret="hook-key")
    assert got.notify_states == {RunState.SUCCEEDED}
    for index in range(3):
        await store.create_subscription(_subscription(f"s{index}"))
    first = await store.list_subscriptions(2)
    assert [s.id for s in first.subscriptions] == ["hooks", "s0"] and first.more
    rest = await store.list_subscriptions(2, "s0")
    assert [s.id for s in rest.subscriptions] == ["s1", "s2"] and not rest.more


async def test_the_cursor_moves_only_from_where_it_was_with_its_deliveries(
    store: RunStore,
) -> None:
    await store.create_subscription(_subscription())
    assert await store.advance_subscription("hooks", 0, 5, [_delivery(2), _delivery(4, "r2")])
    # A stale pass (it read cursor 0) stores nothing.
    assert not await store.advance_subscription("hooks", 0, 7, [_delivery(6, "r3")])
    # The same run entering the same state again makes no second delivery.
    assert await store.advance_subscription("hooks", 5, 9, [_delivery(8, "r1")])
    assert not await store.advance_subscription("gone", 0, 1, [])
    got = await store.get_subscription("hooks")
    assert got.cursor == 9 and got.health.pending == 2
    page = await store.list_deliveries("hooks", 10)
    assert [d.cursor for d in page.deliveries] == [4, 2]
    older = await store.list_deliveries("hooks", 1, before_cursor=4)
    assert [d.cursor for d in older.deliveries] == [2] and not older.more
    with pytest.raises(NotFound):
        await store.list_deliveries("gone", 10)


async def test_claims_attempts_and_health(store: RunStore) -> None:
    await store.create_subscription(_subscription())
    deliveries = [_delivery(c, f"r{c}") for c in range(1, 7)]
    await store.advance_subscription("hooks", 0, 6, deliveries)
    now = T0 + timedelta(seconds=1)
    later = now + timedelta(minutes=2)
    claimed = await store.claim_deliveries(now, later, 10, per_subscription=4)
    assert [d.cursor for d in claimed] == [1, 2, 3, 4]
    assert [d.cursor for d in await store.claim_deliveries(now, later, 10)] == [5, 6]
    assert await store.claim_deliveries(now, later, 10) == []
    assert await store.claim_deliveries(now, later, 10, skip=["hooks"]) == []
    # Claims expire: a dead claimer's deliveries are due again.
    assert len(await store.claim_deliveries(later, later, 10, per_subscription=10)) == 6

    first = claimed[0]
    failed = first.attempted(
        DeliveryAttempt(now, "HTTP 503", 503), DeliveryState.PENDING, now + timedelta(seconds=30)
    )
    assert await store.record_attempt(failed)
    done = failed.attempted(DeliveryAttempt(later, "HTTP 200", 200), DeliveryState.DELIVERED, None)
    assert await store.record_attempt(done)
    assert not await store.record_attempt(done)  # no longer PENDING: a late duplicate
    gave_up = claimed[1].attempted(
        DeliveryAttempt(now, "connection failed: refused"), DeliveryState.FAILED, None
    )
    assert await store.record_attempt(gave_up)
    got = await store.get_subscription("hooks")
    assert (got.health.pending, got.health.delivered, got.health.failed) == (4, 1, 1)
    assert got.health.last_outcome == "HTTP 200"
    assert got.health.last_attempt_time == later
    (stored,) = [d for d in (await store.list_deliveries("hooks", 10)).deliveries if d.cursor == 1]
    assert [a.outcome for a in stored.attempts] == ["HTTP 503", "HTTP 200"]
    assert stored.state is DeliveryState.DELIVERED

    await store.delete_subscription("hooks")
    with pytest.raises(NotFound):
        await store.get_subscription("hooks")
    with pytest.raises(NotFound):
        await store.delete_subscription("hooks")
    assert await store.claim_deliveries(later + timedelta(hours=1), later, 10) == []
