"""Subscriptions and deliveries as values (frozen dataclasses), and their JSON for the store.

Secrets never appear here: a sink holds only the NAME of its secret, resolved from the
server's configuration each time it sends (secrets.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from skit_pipelines.domain import Run, RunFilter, RunState


class DeliveryState(enum.IntEnum):
    """Mirrors skit.pipelines.v1.DeliveryState (same numbers)."""

    UNSPECIFIED = 0
    PENDING = 1
    DELIVERED = 2
    FAILED = 3


@dataclass(frozen=True)
class SlackSink:
    channel: str
    token_secret: str
    """The secret's name, never its value."""
    thread_ts: str = ""


@dataclass(frozen=True)
class WebhookSink:
    url: str
    signing_secret: str
    """The secret's name, never its value."""


Sink = SlackSink | WebhookSink


@dataclass(frozen=True)
class SubscriptionHealth:
    pending: int = 0
    failed: int = 0
    delivered: int = 0
    last_outcome: str = ""
    last_attempt_time: datetime | None = None


@dataclass(frozen=True)
class Subscription:
    id: str
    filter: RunFilter
    notify_states: frozenset[RunState]
    sink: Sink
    creator: str
    create_time: datetime
    cursor: int
    """The feed position up to which changes have become deliveries."""
    request_id: str = ""
    health: SubscriptionHealth = field(default_factory=SubscriptionHealth)

    @property
    def name(self) -> str:
        return f"subscriptions/{self.id}"

    def wants(self, run: Run) -> bool:
        """Whether a change of `run` (to its current state) is notified."""
        return run.state in self.notify_states and self.filter.matches(run)


@dataclass(frozen=True)
class DeliveryAttempt:
    time: datetime
    outcome: str
    """"HTTP 200", "HTTP 503", "slack: channel_not_found", "connection refused"..."""
    http_status: int = 0


@dataclass(frozen=True)
class Delivery:
    """One change of one run for one subscription, with its attempts. Its id is the
    change's cursor (a subscription has at most one delivery per change)."""

    subscription_id: str
    cursor: int
    run: Run
    """The run as it was at the change: what is sent, whatever happened to it since."""
    state: DeliveryState
    create_time: datetime
    next_attempt_time: datetime | None
    attempts: tuple[DeliveryAttempt, ...] = ()

    @property
    def name(self) -> str:
        return f"subscriptions/{self.subscription_id}/deliveries/{self.cursor}"

    @property
    def dedupe_key(self) -> str:
        """One notification per run (incarnation) and state it entered: a run storing
        further revisions in the same state is not notified again."""
        return f"{self.run.id}/{self.run.create_time.isoformat()}/{int(self.run.state)}"

    def attempted(
        self, attempt: DeliveryAttempt, state: DeliveryState, next_time: datetime | None
    ) -> Delivery:
        return replace(
            self, attempts=(*self.attempts, attempt), state=state, next_attempt_time=next_time
        )


# JSON for the store.


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def subscription_to_dict(sub: Subscription) -> dict[str, Any]:
    sink: dict[str, Any]
    if isinstance(sub.sink, SlackSink):
        sink = {
            "slack": {
                "channel": sub.sink.channel,
                "thread_ts": sub.sink.thread_ts,
                "token_secret": sub.sink.token_secret,
            }
        }
    else:
        sink = {"webhook": {"url": sub.sink.url, "signing_secret": sub.sink.signing_secret}}
    return {
        "id": sub.id,
        "filter": {
            "pipeline": sub.filter.pipeline,
            "states": sorted(int(s) for s in sub.filter.states),
            "labels": dict(sub.filter.labels),
            "created_after": _time(sub.filter.created_after),
            "created_before": _time(sub.filter.created_before),
        },
        "notify_states": sorted(int(s) for s in sub.notify_states),
        "sink": sink,
        "creator": sub.creator,
        "create_time": _time(sub.create_time),
        "cursor": sub.cursor,
        "request_id": sub.request_id,
        "health": {
            "pending": sub.health.pending,
            "failed": sub.health.failed,
            "delivered": sub.health.delivered,
            "last_outcome": sub.health.last_outcome,
            "last_attempt_time": _time(sub.health.last_attempt_time),
        },
    }


def subscription_from_dict(data: Mapping[str, Any]) -> Subscription:
    flt = data["filter"]
    sink_data = data["sink"]
    sink: Sink
    if "slack" in sink_data:
        slack = sink_data["slack"]
        sink = SlackSink(
            channel=slack["channel"],
            token_secret=slack["token_secret"],
            thread_ts=slack["thread_ts"],
        )
    else:
        hook = sink_data["webhook"]
        sink = WebhookSink(url=hook["url"], signing_secret=hook["signing_secret"])
    health = data.get("health") or {}
    created = _parse_time(data["create_time"])
    assert created is not None
    return Subscription(
        id=data["id"],
        filter=RunFilter(
            pipeline=flt["pipeline"],
            states=frozenset(RunState(s) for s in flt["states"]),
            labels=dict(flt["labels"]),
            created_after=_parse_time(flt["created_after"]),
            created_before=_parse_time(flt["created_before"]),
        ),
        notify_states=frozenset(RunState(s) for s in data["notify_states"]),
        sink=sink,
        creator=data["creator"],
        create_time=created,
        cursor=int(data["cursor"]),
        request_id=data.get("request_id", ""),
        health=SubscriptionHealth(
            pending=int(health.get("pending", 0)),
            failed=int(health.get("failed", 0)),
            delivered=int(health.get("delivered", 0)),
            last_outcome=str(health.get("last_outcome", "")),
            last_attempt_time=_parse_time(health.get("last_attempt_time")),
        ),
    )


def delivery_to_dict(delivery: Delivery) -> dict[str, Any]:
    # Imported here: the store's codec imports nothing of this package.
    from skit_pipelines.store import codec

    return {
        "subscription_id": delivery.subscription_id,
        "cursor": delivery.cursor,
        "run": codec.run_to_dict(delivery.run),
        "state": int(delivery.state),
        "create_time": _time(delivery.create_time),
        "next_attempt_time": _time(delivery.next_attempt_time),
        "attempts": [
            {"time": _time(a.time), "outcome": a.outcome, "http_status": a.http_status}
            for a in delivery.attempts
        ],
    }


def delivery_from_dict(data: Mapping[str, Any]) -> Delivery:
    from skit_pipelines.store import codec

    created = _parse_time(data["create_time"])
    assert created is not None
    attempts = []
    for item in data["attempts"]:
        time = _parse_time(item["time"])
        assert time is not None
        attempts.append(DeliveryAttempt(time, item["outcome"], int(item["http_status"])))
    return Delivery(
        subscription_id=data["subscription_id"],
        cursor=int(data["cursor"]),
        run=codec.run_from_dict(data["run"]),
        state=DeliveryState(data["state"]),
        create_time=created,
        next_attempt_time=_parse_time(data["next_attempt_time"]),
        attempts=tuple(attempts),
    )


@dataclass(frozen=True)
class SubscriptionOutcome:
    """What create_subscription did: made `subscription`, or found an earlier one with the
    same request_id from the same principal."""

    subscription: Subscription
    created: bool
    request_hash: str = ""
    """With created=False: the hash stored with the earlier request."""


@dataclass(frozen=True)
class SubscriptionPage:
    subscriptions: tuple[Subscription, ...]
    more: bool


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: tuple[Delivery, ...]
    more: bool
