"""The Slack sink against the Slack Web API stand-in (skit_testing.slack): messages in a
channel and a thread, Retry-After after a 429, errors a retry cannot fix, and a failing
Slack that delays no other subscription."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from skit_pipelines.domain import Pipeline, RunState
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.notifications.model import DeliveryState
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_testing.slack import FakeSlack
from skit_testing.waiting import until
from skit_testing.webhook import webhook_receiver

from .conftest import SECRETS, SLACK_TOKEN, Notifying, build

CHANNEL = "C0000000042"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN, channels={CHANNEL: "ml-runs"}) as fake:
        yield fake


@pytest.fixture
async def harness(tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type, slack):
    store = SqliteRunStore(tmp_path / "runs.db")
    notifying = build(store, typed_pipeline, fake_backend_class(), slack_url=slack.base_url)
    try:
        yield notifying
    finally:
        await notifying.worker.stop()
        await store.close()


def _slack(channel: str = CHANNEL, *, thread_ts: str = "", secret: str = "slack-token") -> SinkSpec:
    return SinkSpec(kind="slack", channel=channel, thread_ts=thread_ts, token_secret=secret)


async def _only_delivery(harness: Notifying, name: str, state: DeliveryState):
    async def settled():
        deliveries, _ = await harness.subscriptions.list_deliveries(name)
        return deliveries if deliveries and deliveries[0].state is state else None

    (delivery,) = await until(settled, what=f"a {state.name} delivery")
    return delivery


async def test_a_run_end_is_posted_once_after_a_429_and_a_500(
    harness: Notifying, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    subscription = await harness.subscriptions.create_subscription(
        SubscriptionSpec(notify_states=(int(RunState.FAILED),), sink=_slack("#ml-runs"))
    )
    slack.rate_limit("chat.postMessage", retry_after=1)
    slack.fail("chat.postMessage", "internal_error", status=500)
    run = await harness.new_run()
    await harness.finish(run, RunState.FAILED)
    harness.worker.start()
    (message,) = await slack.wait_for_messages_async(1, channel=CHANNEL)
    assert message.text.startswith(":x: *typed* FAILED in ")
    assert f"`{run.name}`" in message.text
    assert "• error: step train failed: OOM" in message.text
    assert 'greeting="hello"' in message.text.splitlines()[1]
    delivery = await _only_delivery(harness, subscription.name, DeliveryState.DELIVERED)
    assert [a.outcome for a in delivery.attempts] == [
        "slack: ratelimited",
        "slack: internal_error",
        "slack: ok",
    ]
    assert [a.http_status for a in delivery.attempts] == [429, 500, 200]
    # Retry-After is honoured: the retry after the 429 waited at least its second.
    assert (delivery.attempts[1].time - delivery.attempts[0].time).total_seconds() >= 1
    posts = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert len(posts) == 3 and all(c.token == SLACK_TOKEN for c in posts)
    await harness.worker.idle()
    assert len(slack.messages(channel=CHANNEL)) == 1
    for value in SECRETS.values():
        assert value not in caplog.text


async def test_posts_into_a_thread(harness: Notifying, slack: FakeSlack) -> None:
    parent = slack.add_user_message(CHANNEL, "U0001", "nightly retrains report here")
    await harness.subscriptions.create_subscription(
        SubscriptionSpec(notify_states=(int(RunState.SUCCEEDED),), sink=_slack(thread_ts=parent))
    )
    run = await harness.new_run()
    await harness.finish(run)
    harness.worker.start()
    (reply,) = await slack.wait_for_messages_async(1, channel=CHANNEL, thread_ts=parent)
    assert reply.thread_ts == parent
    assert reply.text.startswith(":white_check_mark: *typed* SUCCEEDED")
    assert f"• outputs: file:///artifacts/{run.id}/out" in reply.text


async def test_slack_errors_fail_visibly_and_block_no_other_subscription(
    harness: Notifying, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with webhook_receiver([200]) as receiver:
        lost = await harness.subscriptions.create_subscription(
            SubscriptionSpec(notify_states=(int(RunState.SUCCEEDED),), sink=_slack("C0NOSUCH"))
        )
        hook = await harness.subscriptions.create_subscription(
            SubscriptionSpec(
                notify_states=(int(RunState.SUCCEEDED),),
                sink=SinkSpec(kind="webhook", url=receiver.url, signing_secret="hook-key"),
            )
        )
        run = await harness.new_run()
        await harness.finish(run)
        harness.worker.start()
        failed = await _only_delivery(harness, lost.name, DeliveryState.FAILED)
        # A retry cannot bring a channel into being: given up at the first answer.
        assert [a.outcome for a in failed.attempts] == ["slack: channel_not_found"]
        await _only_delivery(harness, hook.name, DeliveryState.DELIVERED)
        assert len(receiver.accepted()) == 1
        got = await harness.subscriptions.get_subscription(lost.name)
        assert (got.health.failed, got.health.pending) == (1, 0)
        assert got.health.last_outcome == "slack: channel_not_found"
    assert "gave up on" in caplog.text and "channel_not_found" in caplog.text
    assert SLACK_TOKEN not in caplog.text


async def test_a_token_slack_refuses_fails_the_delivery(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    with FakeSlack(token="xoxb-another-workspace", channels=[CHANNEL]) as slack:
        store = SqliteRunStore(tmp_path / "runs.db")
        harness = build(store, typed_pipeline, fake_backend_class(), slack_url=slack.base_url)
        try:
            subscription = await harness.subscriptions.create_subscription(
                SubscriptionSpec(notify_states=(int(RunState.SUCCEEDED),), sink=_slack())
            )
            await harness.finish(await harness.new_run())
            harness.worker.start()
            delivery = await _only_delivery(harness, subscription.name, DeliveryState.FAILED)
            assert [a.outcome for a in delivery.attempts] == ["slack: invalid_auth"]
            assert slack.messages() == []
        finally:
            await harness.worker.stop()
            await store.close()
