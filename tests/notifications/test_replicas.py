"""Two replicas on one PostgreSQL: every notification is delivered exactly once, with
both workers running (feed passes take turns; sends are claimed row by row)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from skit_pipelines.domain import Pipeline, RunState
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.notifications.model import DeliveryState
from skit_pipelines.notifications.worker import DeliverySettings
from skit_pipelines.store.postgres import PostgresRunStore
from skit_testing.waiting import until
from skit_testing.webhook import webhook_receiver

from .conftest import build

pytest_plugins = ["skit_testing.postgres"]
pytestmark = pytest.mark.postgres

RUNS = 20


async def test_two_replicas_deliver_each_notification_exactly_once(
    postgres_dsn: str, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    stores = [await PostgresRunStore.open(postgres_dsn) for _ in range(2)]
    replicas = [build(store, typed_pipeline, fake_backend_class()) for store in stores]
    a, b = replicas
    # Every third attempt fails, so retries (and their claims) move between replicas too.
    with webhook_receiver([200, 200, 500] * 100 + [200]) as receiver:
        try:
            subscription = await a.subscriptions.create_subscription(
                SubscriptionSpec(
                    notify_states=(int(RunState.SUCCEEDED), int(RunState.FAILED)),
                    sink=SinkSpec(kind="webhook", url=receiver.url, signing_secret="hook-key"),
                )
            )
            for replica in replicas:
                replica.worker.start()
            runs = []
            for index in range(RUNS):
                replica = replicas[index % 2]
                run = await replica.new_run()
                runs.append(run)
                await replica.finish(run, RunState.SUCCEEDED if index % 3 else RunState.FAILED)
            await until(
                lambda: len(receiver.accepted()) >= RUNS, timeout=30, what="every notification"
            )

            async def settled() -> bool:
                got = await b.subscriptions.get_subscription(subscription.name)
                return got.health.delivered == RUNS and got.health.pending == 0

            await until(settled, timeout=30, what="every delivery DELIVERED")
            for replica in replicas:
                await replica.worker.idle()
            accepted = receiver.accepted()
            assert len(accepted) == RUNS
            per_run = Counter(json.loads(r.body)["name"] for r in accepted)
            assert per_run == Counter(run.name for run in runs)
            assert len({r.headers["Skit-Delivery"] for r in accepted}) == RUNS
            deliveries, _ = await a.subscriptions.list_deliveries(subscription.name, 1000)
            assert len(deliveries) == RUNS
            assert all(d.state is DeliveryState.DELIVERED for d in deliveries)
            # Every attempt a receiver saw is recorded once, by whichever replica made it.
            assert sum(len(d.attempts) for d in deliveries) == len(receiver.received())
            assert a.worker.attempts + b.worker.attempts == len(receiver.received())
        finally:
            for replica in replicas:
                await replica.worker.stop()
            for store in stores:
                await store.close()


async def test_replicas_claiming_at_the_same_moment_take_different_deliveries(
    postgres_dsn: str, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    stores = [await PostgresRunStore.open(postgres_dsn) for _ in range(3)]
    try:
        a = build(stores[0], typed_pipeline, fake_backend_class())
        subscriptions = [
            await a.subscriptions.create_subscription(
                SubscriptionSpec(
                    notify_states=(int(RunState.SUCCEEDED),),
                    sink=SinkSpec(
                        kind="webhook", url=f"http://h{i}.test/", signing_secret="hook-key"
                    ),
                )
            )
            for i in range(3)
        ]
        for _ in range(10):
            await a.finish(await a.new_run())
        # Two feed passes at once: the advisory lock lets one in, the cursor CAS keeps
        # even a stale second pass from recording anything twice.
        await asyncio.gather(
            *(build(s, typed_pipeline, fake_backend_class()).worker.scan_once() for s in stores)
        )
        await a.worker._scan()
        now = datetime.now(UTC)
        until_time = now + timedelta(minutes=5)
        claims = await asyncio.gather(
            *(
                store.claim_deliveries(now, until_time, 100, per_subscription=100)
                for store in stores
                for _ in range(4)
            )
        )
        claimed = [d.name for batch in claims for d in batch]
        assert len(claimed) == len(set(claimed)) == 30
        assert {d.subscription_id for batch in claims for d in batch} == {
            s.id for s in subscriptions
        }
    finally:
        for store in stores:
            await store.close()


async def test_a_replica_that_dies_mid_send_is_taken_over_and_idle_replicas_do_not_spin(
    postgres_dsn: str, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    slow = DeliverySettings(
        retry_base_seconds=0.05, retry_max_seconds=0.2, poll_seconds=0.2, claim_seconds=1.0
    )
    stores = [await PostgresRunStore.open(postgres_dsn) for _ in range(2)]
    dead, alive = (
        build(store, typed_pipeline, fake_backend_class(), settings=slow) for store in stores
    )
    with webhook_receiver([200]) as receiver:
        try:
            subscription = await dead.subscriptions.create_subscription(
                SubscriptionSpec(
                    notify_states=(int(RunState.SUCCEEDED),),
                    sink=SinkSpec(kind="webhook", url=receiver.url, signing_secret="hook-key"),
                )
            )
            await dead.finish(await dead.new_run())
            await dead.worker.scan_once()
            now = datetime.now(UTC)
            # The dying replica claimed the delivery and never sent it.
            (claimed,) = await stores[0].claim_deliveries(now, now + timedelta(seconds=1), 10)
            await stores[0].close()
            alive.worker.start()
            await until(lambda: receiver.accepted(), timeout=10, what="the takeover's send")
            (request,) = receiver.received()
            assert request.headers["Skit-Delivery"] == claimed.name

            async def delivered() -> bool:
                got = await alive.subscriptions.get_subscription(subscription.name)
                return got.health.delivered == 1

            await until(delivered, what="DELIVERED")

            # A replica whose peer holds the feed waits for news instead of looping.
            other = build(
                await PostgresRunStore.open(postgres_dsn),
                typed_pipeline,
                fake_backend_class(),
                settings=slow,
            )
            stores.append(other.store)
            async with stores[1].exclusive("notifier"):
                other.worker.start()
                await asyncio.sleep(1.0)
                assert other.worker.passes <= 1.0 / slow.poll_seconds + 2
            await other.worker.stop()
        finally:
            await alive.worker.stop()
            for store in stores[1:]:
                await store.close()
