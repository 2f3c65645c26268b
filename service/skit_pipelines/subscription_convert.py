"""Subscription and Delivery messages <-> values (the servicer's half for notifications).

A sink's secrets appear only by name, in both directions: there is nothing else to
leak."""

from __future__ import annotations

from typing import cast

from skit.pipelines.v1 import run_pb2, subscription_pb2
from skit_pipelines import convert
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.notifications.model import Delivery, SlackSink, Subscription


def spec(message: subscription_pb2.Subscription) -> SubscriptionSpec:
    flt = message.filter
    kind = message.sink.WhichOneof("kind") or ""
    sink = SinkSpec(
        kind=kind,
        channel=message.sink.slack.channel,
        thread_ts=message.sink.slack.thread_ts,
        token_secret=message.sink.slack.token_secret,
        url=message.sink.webhook.url,
        signing_secret=message.sink.webhook.signing_secret,
    )
    return SubscriptionSpec(
        pipeline=flt.pipeline,
        states=tuple(flt.states),
        labels=dict(flt.labels),
        created_after=convert.from_timestamp(
            flt.create_time_after, field="subscription.filter.create_time_after"
        )
        if flt.HasField("create_time_after")
        else None,
        created_before=convert.from_timestamp(
            flt.create_time_before, field="subscription.filter.create_time_before"
        )
        if flt.HasField("create_time_before")
        else None,
        notify_states=tuple(message.notify_states),
        sink=sink,
    )


def _state(value: int) -> run_pb2.RunState:
    return cast("run_pb2.RunState", value)


def subscription(item: Subscription) -> subscription_pb2.Subscription:
    flt = item.filter
    message = subscription_pb2.Subscription(
        name=item.name,
        filter=subscription_pb2.RunFilter(
            pipeline=f"pipelines/{flt.pipeline}" if flt.pipeline else "",
            states=sorted(_state(int(s)) for s in flt.states),
            labels=dict(flt.labels),
            create_time_after=convert.timestamp(flt.created_after),
            create_time_before=convert.timestamp(flt.created_before),
        ),
        notify_states=sorted(_state(int(s)) for s in item.notify_states),
        creator=item.creator,
        create_time=convert.timestamp(item.create_time),
        cursor=item.cursor,
        health=subscription_pb2.SubscriptionHealth(
            pending_deliveries=item.health.pending,
            failed_deliveries=item.health.failed,
            delivered_deliveries=item.health.delivered,
            last_outcome=item.health.last_outcome,
            last_attempt_time=convert.timestamp(item.health.last_attempt_time),
        ),
    )
    if isinstance(item.sink, SlackSink):
        message.sink.slack.channel = item.sink.channel
        message.sink.slack.thread_ts = item.sink.thread_ts
        message.sink.slack.token_secret = item.sink.token_secret
    else:
        message.sink.webhook.url = item.sink.url
        message.sink.webhook.signing_secret = item.sink.signing_secret
    return message


def delivery(item: Delivery) -> subscription_pb2.Delivery:
    return subscription_pb2.Delivery(
        name=item.name,
        run=item.run.name,
        run_state=_state(int(item.run.state)),
        cursor=item.cursor,
        state=cast("subscription_pb2.DeliveryState", int(item.state)),
        attempts=[
            subscription_pb2.DeliveryAttempt(
                time=convert.timestamp(a.time), outcome=a.outcome, http_status=a.http_status
            )
            for a in item.attempts
        ],
        next_attempt_time=convert.timestamp(item.next_attempt_time),
        create_time=convert.timestamp(item.create_time),
    )
