"""Signed webhooks end to end: a real HTTP receiver on port 0, the delivery worker, and
the Subscription RPCs over gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import run_pb2, subscription_pb2
from skit_pipelines.domain import Pipeline, Run, RunState
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.notifications.sinks.webhook import payload, sign, verify
from skit_pipelines.notifications.worker import DeliverySettings
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_testing.waiting import until
from skit_testing.webhook import webhook_receiver

from .conftest import HOOK_KEY, SECRETS, NotifyService, build, webhook_request

LOOP_TURNS = 100


def verify_skit_signature(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """The README's verification snippet, verbatim: what a receiver runs."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - timestamp) <= tolerance


def _closed_port_url() -> str:
    """A URL nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def _deliveries(service: NotifyService, name: str) -> list[subscription_pb2.Delivery]:
    response = await service.stub.ListDeliveries(pb.ListDeliveriesRequest(parent=name))
    return list(response.deliveries)


async def test_receiver_failing_three_times_gets_it_on_the_fourth_try_signed(
    notify_service: NotifyService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = notify_service.harness
    with webhook_receiver([500, 503, 502, 200]) as receiver:
        subscription = await notify_service.stub.CreateSubscription(webhook_request(receiver.url))
        run = await harness.new_run()
        await harness.finish(run)
        harness.worker.start()
        await until(lambda: receiver.accepted(), what="an accepted delivery")
        requests = receiver.received()
        assert [r.status for r in requests] == [500, 503, 502, 200]
        last = requests[-1]
        assert verify_skit_signature(HOOK_KEY, last.body, last.headers["Skit-Signature"])
        assert verify(HOOK_KEY, last.body, last.headers["Skit-Signature"])
        assert not verify_skit_signature("another-key", last.body, last.headers["Skit-Signature"])
        assert not verify(HOOK_KEY, last.body + b" ", last.headers["Skit-Signature"])
        # One delivery, the same id on every attempt (receivers deduplicate on it).
        assert len({r.headers["Skit-Delivery"] for r in requests}) == 1
        assert last.headers["Skit-Subscription"] == subscription.name
        assert last.headers["Content-Type"] == "application/json"
        # The body is the API's Run in JSON.
        sent = json_format.Parse(last.body, run_pb2.Run())
        assert sent.name == run.name
        assert sent.state == run_pb2.RUN_STATE_SUCCEEDED
        assert sent.outputs[0].uri.endswith("/out")

        async def delivered() -> list[subscription_pb2.Delivery]:
            found = await _deliveries(notify_service, subscription.name)
            return (
                found
                if found and found[0].state == subscription_pb2.DELIVERY_STATE_DELIVERED
                else []
            )

        (delivery,) = await until(delivered, what="DELIVERED in ListDeliveries")
        assert delivery.run == run.name
        assert delivery.run_state == run_pb2.RUN_STATE_SUCCEEDED
        assert [a.outcome for a in delivery.attempts] == [
            "HTTP 500",
            "HTTP 503",
            "HTTP 502",
            "HTTP 200",
        ]
        assert [a.http_status for a in delivery.attempts] == [500, 503, 502, 200]
        assert not delivery.HasField("next_attempt_time")
        got = await notify_service.stub.GetSubscription(
            pb.GetSubscriptionRequest(name=subscription.name)
        )
        assert got.health.delivered_deliveries == 1
        assert got.health.pending_deliveries == 0
        assert got.health.last_outcome == "HTTP 200"
        assert got.cursor > subscription.cursor
    # Retries were logged, and no secret was.
    assert "HTTP 503" in caplog.text
    for value in SECRETS.values():
        assert value not in caplog.text


async def test_unreachable_webhook_shows_attempts_and_blocks_no_other_subscription(
    notify_service: NotifyService,
) -> None:
    harness = notify_service.harness
    with webhook_receiver([200]) as receiver:
        dead = await notify_service.stub.CreateSubscription(webhook_request(_closed_port_url()))
        alive = await notify_service.stub.CreateSubscription(webhook_request(receiver.url))
        runs = [await harness.new_run() for _ in range(3)]
        for run in runs:
            await harness.finish(run)
        harness.worker.start()
        await until(lambda: len(receiver.accepted()) == 3, what="3 deliveries to the live one")
        assert sorted(json.loads(r.body)["name"] for r in receiver.accepted()) == sorted(
            r.name for r in runs
        )

        async def retried() -> list[subscription_pb2.Delivery]:
            found = await _deliveries(notify_service, dead.name)
            return found if len(found) == 3 and all(len(d.attempts) >= 2 for d in found) else []

        for delivery in await until(retried, what="retried attempts of the dead one"):
            assert delivery.state == subscription_pb2.DELIVERY_STATE_PENDING
            assert delivery.attempts[0].outcome.startswith("connection failed")
            assert delivery.attempts[0].http_status == 0
            assert delivery.HasField("next_attempt_time")
        got = await notify_service.stub.GetSubscription(pb.GetSubscriptionRequest(name=dead.name))
        assert got.health.pending_deliveries == 3
        assert got.health.last_outcome.startswith("connection failed")
        got = await notify_service.stub.GetSubscription(pb.GetSubscriptionRequest(name=alive.name))
        assert got.health.delivered_deliveries == 3
        assert got.health.pending_deliveries == 0


async def test_a_delivery_fails_for_good_once_the_retry_window_is_over(
    typed_pipeline: Pipeline, fake_backend_class: type, tmp_path: Path
) -> None:
    store = SqliteRunStore(tmp_path / "window.db")
    harness = build(
        store,
        typed_pipeline,
        fake_backend_class(),
        settings=DeliverySettings(
            retry_base_seconds=0.05,
            retry_max_seconds=0.1,
            poll_seconds=0.05,
            retry_window=timedelta(seconds=0.5),
        ),
    )
    try:
        with webhook_receiver([500]) as receiver:
            subscription = await harness.subscriptions.create_subscription(
                SubscriptionSpec(
                    notify_states=(int(RunState.FAILED),),
                    sink=SinkSpec(kind="webhook", url=receiver.url, signing_secret="hook-key"),
                )
            )
            run = await harness.new_run()
            await harness.finish(run, RunState.FAILED)
            harness.worker.start()

            async def failed() -> bool:
                got = await harness.subscriptions.get_subscription(subscription.name)
                return got.health.failed == 1

            await until(failed, what="the delivery FAILED")
            deliveries, _ = await harness.subscriptions.list_deliveries(subscription.name)
            (delivery,) = deliveries
            assert len(delivery.attempts) >= 2
            assert delivery.next_attempt_time is None
            assert all(a.outcome == "HTTP 500" for a in delivery.attempts)
            assert len(receiver.received()) == len(delivery.attempts)
    finally:
        await harness.worker.stop()
        await store.close()


async def test_without_subscriptions_run_changes_do_not_wake_the_worker(
    typed_pipeline: Pipeline, fake_backend_class: type, tmp_path: Path
) -> None:
    store = SqliteRunStore(tmp_path / "quiet.db")
    # Polls too rarely to matter here: only wakes can make a pass.
    harness = build(
        store, typed_pipeline, fake_backend_class(), settings=DeliverySettings(poll_seconds=600)
    )
    try:
        harness.worker.start()
        await until(lambda: harness.worker.passes == 1, what="the first pass")
        for _ in range(3):
            await harness.finish(await harness.new_run(), RunState.SUCCEEDED)
        # Enough turns of the event loop for a worker woken by those changes to start a
        # pass (no I/O in between: the store is SQLite, the backend a fake).
        for _ in range(LOOP_TURNS):
            await asyncio.sleep(0)
        assert harness.worker.passes == 1

        with webhook_receiver([200]) as receiver:
            # Creating one wakes the worker, and from then on each run change does.
            await harness.subscriptions.create_subscription(
                SubscriptionSpec(
                    notify_states=(int(RunState.SUCCEEDED),),
                    sink=SinkSpec(kind="webhook", url=receiver.url, signing_secret="hook-key"),
                )
            )
            await until(lambda: harness.worker.passes >= 2, what="the pass the creation woke")
            run = await harness.new_run()
            await harness.finish(run, RunState.SUCCEEDED)
            await until(lambda: receiver.accepted(), what="the delivery of the next run")
            assert [json.loads(r.body)["name"] for r in receiver.received()] == [f"runs/{run.id}"]
    finally:
        await harness.worker.stop()
        await store.close()


async def test_only_matching_runs_and_states_after_creation_are_notified(
    notify_service: NotifyService,
) -> None:
    harness = notify_service.harness
    with webhook_receiver([200]) as receiver:
        before = await harness.new_run({"team": "slu"})
        await harness.finish(before)  # history: not replayed
        subscription = await notify_service.stub.CreateSubscription(
            webhook_request(
                receiver.url, states=(run_pb2.RUN_STATE_FAILED,), labels={"team": "slu"}
            )
        )
        other_team = await harness.new_run({"team": "asr"})
        succeeded = await harness.new_run({"team": "slu"})
        failed = await harness.new_run({"team": "slu"})
        await harness.finish(other_team, RunState.FAILED)
        await harness.finish(succeeded, RunState.SUCCEEDED)
        await harness.finish(failed, RunState.FAILED)
        harness.worker.start()
        await until(lambda: receiver.accepted(), what="a delivery")
        # Everything up to the last change has been read before the cursor moved there.
        latest = await harness.store.latest_change_cursor()

        async def caught_up() -> bool:
            got = await notify_service.stub.GetSubscription(
                pb.GetSubscriptionRequest(name=subscription.name)
            )
            return got.cursor >= latest

        await until(caught_up, what="the cursor at the latest change")
        await harness.worker.idle()
        assert [json.loads(r.body)["name"] for r in receiver.received()] == [failed.name]
        deliveries = await _deliveries(notify_service, subscription.name)
        assert [d.run for d in deliveries] == [failed.name]


def test_signature_format_and_verification() -> None:
    body = b'{"name":"runs/x"}'
    header = sign("key", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    digest = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"
    assert verify("key", body, header, now=1_700_000_100)
    assert not verify("key", body, header, now=1_700_000_000 + 301)  # a replay
    assert not verify("key", body, "v1=abc")
    assert not verify("key", body, "garbage")


def test_payload_is_the_api_run_in_json() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    run = Run(
        id="r1",
        pipeline="typed",
        pipeline_version="v1",
        parameters={"count": 3},
        labels={"team": "slu"},
        state=RunState.SUCCEEDED,
        create_time=now,
        update_time=now,
        revision=4,
    )
    data = json.loads(payload(run))
    assert data["name"] == "runs/r1"
    assert data["pipeline"] == "pipelines/typed"
    assert data["state"] == "RUN_STATE_SUCCEEDED"
    assert data["parameters"] == {"count": 3}
    assert data["labels"] == {"team": "slu"}
