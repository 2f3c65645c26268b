"""Subscriptions and their deliveries as the client returns them (frozen dataclasses), and
their requests. A sink's secrets appear by name only: the service never returns values."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from google.protobuf import timestamp_pb2

from skit.pipelines.v1 import pipeline_service_pb2, run_pb2, subscription_pb2
from skit_pipelines_client.resources import RunState

SUBSCRIPTIONS_PREFIX = "subscriptions/"


def subscription_name(subscription: str) -> str:
    """Returns "subscriptions/{subscription}" for either "x" or "subscriptions/x"."""
    if subscription.startswith(SUBSCRIPTIONS_PREFIX):
        return subscription
    return SUBSCRIPTIONS_PREFIX + subscription


def _time(value: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def _state(value: RunState | int | str) -> run_pb2.RunState:
    if isinstance(value, str):
        return cast("run_pb2.RunState", int(RunState[value.upper().removeprefix("RUN_STATE_")]))
    return cast("run_pb2.RunState", int(value))


@dataclass(frozen=True)
class Subscription:
    """Notifications of the runs matching a filter, on some states, to Slack or a webhook."""

    name: str
    pipeline: str
    """The filter's pipeline, "" for any."""
    states: tuple[RunState, ...]
    """The filter's states, () for any."""
    labels: Mapping[str, str]
    notify_states: tuple[RunState, ...]
    sink: str
    """"slack" or "webhook"."""
    slack_channel: str
    slack_thread_ts: str
    webhook_url: str
    secret_name: str
    """The name of the sink's secret (Slack token or signing key), never its value."""
    creator: str
    create_time: datetime | None
    cursor: int
    pending_deliveries: int
    failed_deliveries: int
    delivered_deliveries: int
    last_outcome: str
    last_attempt_time: datetime | None
    raw: subscription_pb2.Subscription = field(repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.name.removeprefix(SUBSCRIPTIONS_PREFIX)

    @classmethod
    def of(cls, message: subscription_pb2.Subscription) -> Subscription:
        kind = message.sink.WhichOneof("kind") or ""
        health = message.health
        return cls(
            name=message.name,
            pipeline=message.filter.pipeline,
            states=tuple(RunState(s) for s in message.filter.states),
            labels=dict(message.filter.labels),
            notify_states=tuple(RunState(s) for s in message.notify_states),
            sink=kind,
            slack_channel=message.sink.slack.channel,
            slack_thread_ts=message.sink.slack.thread_ts,
            webhook_url=message.sink.webhook.url,
            secret_name=message.sink.slack.token_secret or message.sink.webhook.signing_secret,
            creator=message.creator,
            create_time=_time(message.create_time, message.HasField("create_time")),
            cursor=message.cursor,
            pending_deliveries=health.pending_deliveries,
            failed_deliveries=health.failed_deliveries,
            delivered_deliveries=health.delivered_deliveries,
            last_outcome=health.last_outcome,
            last_attempt_time=_time(health.last_attempt_time, health.HasField("last_attempt_time")),
            raw=message,
        )


@dataclass(frozen=True)
class DeliveryAttempt:
    time: datetime | None
    outcome: str
    """"HTTP 200", "HTTP 503", "slack: channel_not_found", "connection failed: ..."."""
    http_status: int


@dataclass(frozen=True)
class Delivery:
    """One notification of one run state to one subscription, with every attempt."""

    name: str
    run: str
    run_state: RunState
    cursor: int
    state: str
    """"PENDING", "DELIVERED" or "FAILED"."""
    attempts: tuple[DeliveryAttempt, ...]
    next_attempt_time: datetime | None
    create_time: datetime | None
    raw: subscription_pb2.Delivery = field(repr=False, compare=False)

    @classmethod
    def of(cls, message: subscription_pb2.Delivery) -> Delivery:
        return cls(
            name=message.name,
            run=message.run,
            run_state=RunState(message.run_state),
            cursor=message.cursor,
            state=subscription_pb2.DeliveryState.Name(message.state).removeprefix(
                "DELIVERY_STATE_"
            ),
            attempts=tuple(
                DeliveryAttempt(_time(a.time, a.HasField("time")), a.outcome, a.http_status)
                for a in message.attempts
            ),
            next_attempt_time=_time(
                message.next_attempt_time, message.HasField("next_attempt_time")
            ),
            create_time=_time(message.create_time, message.HasField("create_time")),
            raw=message,
        )


def create_subscription_request(
    *,
    notify_states: Iterable[RunState | int | str],
    slack_channel: str = "",
    slack_thread_ts: str = "",
    slack_token_secret: str = "",
    webhook_url: str = "",
    webhook_signing_secret: str = "",
    pipeline: str = "",
    states: Iterable[RunState | int | str] = (),
    labels: Mapping[str, str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    subscription_id: str | None = None,
    request_id: str | None = None,
) -> pipeline_service_pb2.CreateSubscriptionRequest:
    """A CreateSubscriptionRequest: a Slack sink when slack_channel or slack_token_secret
    is given, a webhook when webhook_url or webhook_signing_secret is, neither otherwise
    (which the service refuses). A request_id is made up when none is given, so a retry
    of this request does not create a second subscription."""
    subscription = subscription_pb2.Subscription(
        notify_states=[_state(s) for s in notify_states],
        filter=subscription_pb2.RunFilter(
            pipeline=(
                pipeline
                if not pipeline or pipeline.startswith("pipelines/")
                else f"pipelines/{pipeline}"
            ),
            states=[_state(s) for s in states],
            labels=dict(labels or {}),
        ),
    )
    if created_after is not None:
        subscription.filter.create_time_after.FromDatetime(created_after)
    if created_before is not None:
        subscription.filter.create_time_before.FromDatetime(created_before)
    if slack_channel or slack_token_secret:
        subscription.sink.slack.channel = slack_channel
        subscription.sink.slack.thread_ts = slack_thread_ts
        subscription.sink.slack.token_secret = slack_token_secret
    elif webhook_url or webhook_signing_secret:
        subscription.sink.webhook.url = webhook_url
        subscription.sink.webhook.signing_secret = webhook_signing_secret
    return pipeline_service_pb2.CreateSubscriptionRequest(
        subscription=subscription,
        subscription_id=subscription_id or "",
        request_id=request_id or str(uuid.uuid4()),
    )
