"""At least once across restarts: the cursor and the deliveries are in the store file, so
a service stopped between a run's end and its notification sends it after the restart —
once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_pipelines.domain import Pipeline, RunState
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.notifications.model import DeliveryState
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_testing.waiting import until
from skit_testing.webhook import WebhookReceiver, webhook_receiver

from .conftest import Notifying, build


def _spec(url: str) -> SubscriptionSpec:
    return SubscriptionSpec(
        notify_states=(int(RunState.SUCCEEDED),),
        sink=SinkSpec(kind="webhook", url=url, signing_secret="hook-key"),
    )


async def _settled(harness: Notifying, receiver: WebhookReceiver, name: str) -> None:
    """Until the worker has read the whole feed and sent everything due."""
    latest = await harness.store.latest_change_cursor()

    async def done() -> bool:
        got = await harness.subscriptions.get_subscription(name)
        return got.cursor >= latest and got.health.pending == 0

    await until(done, what="every change read and every delivery sent")
    await harness.worker.idle()


async def test_a_restart_between_a_runs_end_and_its_notification_delivers_it_once(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    path = tmp_path / "runs.db"
    with webhook_receiver([200]) as receiver:
        first = build(SqliteRunStore(path), typed_pipeline, fake_backend_class())
        subscription = await first.subscriptions.create_subscription(_spec(receiver.url))
        run = await first.new_run()
        await first.finish(run)
        await first.worker.stop()  # the service goes down before any pass
        await first.store.close()
        assert receiver.received() == []

        second = build(SqliteRunStore(path), typed_pipeline, fake_backend_class())
        try:
            second.worker.start()
            await until(lambda: receiver.accepted(), what="the notification after the restart")
            await _settled(second, receiver, subscription.name)
            (request,) = receiver.received()
            assert run.name.encode() in request.body
        finally:
            await second.worker.stop()
            await second.store.close()


async def test_a_crash_after_recording_before_sending_still_delivers_once(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    path = tmp_path / "runs.db"
    with webhook_receiver([200]) as receiver:
        first = build(SqliteRunStore(path), typed_pipeline, fake_backend_class())
        subscription = await first.subscriptions.create_subscription(_spec(receiver.url))
        runs = [await first.new_run() for _ in range(3)]
        for run in runs:
            await first.finish(run)
        assert await first.worker.scan_once() == 1  # deliveries and cursor stored together
        recorded, _ = await first.subscriptions.list_deliveries(subscription.name)
        assert len(recorded) == 3
        await first.store.close()  # killed before sending

        second = build(SqliteRunStore(path), typed_pipeline, fake_backend_class())
        try:
            second.worker.start()
            await until(lambda: len(receiver.accepted()) == 3, what="3 notifications")
            await _settled(second, receiver, subscription.name)
            assert len(receiver.received()) == 3
            assert len({r.headers["Skit-Delivery"] for r in receiver.received()}) == 3
        finally:
            await second.worker.stop()
            await second.store.close()


async def test_a_send_claimed_by_a_worker_that_died_is_sent_once_its_claim_expires(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    path = tmp_path / "runs.db"
    with webhook_receiver([200]) as receiver:
        first = build(SqliteRunStore(path), typed_pipeline, fake_backend_class())
        subscription = await first.subscriptions.create_subscription(_spec(receiver.url))
        await first.finish(await first.new_run())
        await first.worker.scan_once()
        now = datetime.now(UTC)
        # Claimed, then the process died mid-send: no attempt was recorded.
        (claimed,) = await first.store.claim_deliveries(now, now + timedelta(seconds=0.5), 10)
        assert await first.store.claim_deliveries(now, now + timedelta(seconds=0.5), 10) == []
        await first.store.close()

        second = build(SqliteRunStore(path), typed_pipeline, fake_backend_class())
        try:
            second.worker.start()
            await until(lambda: receiver.accepted(), what="the resend after the claim expired")
            await _settled(second, receiver, subscription.name)
            (request,) = receiver.received()
            assert request.headers["Skit-Delivery"] == claimed.name
            (delivery,) = (await second.subscriptions.list_deliveries(subscription.name))[0]
            assert delivery.state is DeliveryState.DELIVERED
            assert len(delivery.attempts) == 1
        finally:
            await second.worker.stop()
            await second.store.close()


async def test_changes_pruned_before_delivery_are_skipped_loudly_and_the_rest_delivered(
    tmp_path: Path,
    typed_pipeline: Pipeline,
    fake_backend_class: type,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SqliteRunStore(tmp_path / "runs.db", change_limit=10)
    harness = build(store, typed_pipeline, fake_backend_class())
    try:
        with webhook_receiver([200]) as receiver:
            subscription = await harness.subscriptions.create_subscription(_spec(receiver.url))
            runs = [await harness.new_run() for _ in range(12)]
            for run in runs:
                await harness.finish(run)  # 36 changes; the feed keeps the last 10
            await harness.worker.scan_once()
            await harness.worker.scan_once()
            assert "no longer holds the changes after cursor" in caplog.text
            deliveries, _ = await harness.subscriptions.list_deliveries(subscription.name)
            # The latest runs' ends are still in the feed and are delivered.
            assert runs[-1].name in {d.run.name for d in deliveries}
            assert 0 < len(deliveries) < len(runs)
            got = await harness.subscriptions.get_subscription(subscription.name)
            assert got.cursor == await store.latest_change_cursor()
    finally:
        await harness.worker.stop()
        await store.close()
