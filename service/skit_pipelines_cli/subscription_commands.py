"""The `subscriptions` commands: one function per subcommand (dispatched by commands.py)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TextIO

from google.protobuf import json_format

from skit_pipelines_cli.exits import EXIT_OK
from skit_pipelines_client import Delivery, PipelinesClient, Subscription


def _when(value: datetime | None) -> str:
    return (
        value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"
    )


def _sink(subscription: Subscription) -> str:
    if subscription.sink == "slack":
        thread = f" thread {subscription.slack_thread_ts}" if subscription.slack_thread_ts else ""
        return f"slack {subscription.slack_channel}{thread}"
    return f"webhook {subscription.webhook_url}"


def _states(states: tuple[object, ...]) -> str:
    return ",".join(str(s) for s in states) or "any"


def describe_subscription(subscription: Subscription) -> list[str]:
    """A subscription for people: what it watches, where it sends, how that goes."""
    labels = ",".join(f"{k}={v}" for k, v in sorted(subscription.labels.items())) or "any"
    return [
        f"{subscription.name}  {_sink(subscription)}  on {_states(subscription.notify_states)}",
        f"  filter:       pipeline {subscription.pipeline or 'any'}, states"
        f" {_states(subscription.states)}, labels {labels}",
        f"  secret:       {subscription.secret_name} (by name)",
        f"  deliveries:   {subscription.delivered_deliveries} delivered,"
        f" {subscription.pending_deliveries} pending, {subscription.failed_deliveries} failed",
        f"  last attempt: {_when(subscription.last_attempt_time)}"
        f"  {subscription.last_outcome or '-'}",
        f"  cursor:       {subscription.cursor}  created {_when(subscription.create_time)}"
        f" by {subscription.creator or '-'}",
    ]


def describe_delivery(delivery: Delivery) -> list[str]:
    last = delivery.attempts[-1].outcome if delivery.attempts else "-"
    next_time = f"  next {_when(delivery.next_attempt_time)}" if delivery.state == "PENDING" else ""
    return [
        f"{delivery.name}  {delivery.run} {delivery.run_state}  {delivery.state}"
        f"  {len(delivery.attempts)} attempts, last: {last}{next_time}"
    ]


def _show(
    args: argparse.Namespace, out: TextIO, subscriptions: list[Subscription], lines: list[str]
) -> int:
    if args.output == "json":
        data = [json_format.MessageToDict(s.raw) for s in subscriptions]
        print(json.dumps(data[0] if len(data) == 1 and args.single else data, indent=2), file=out)
    else:
        print("\n".join(lines), file=out)
    return EXIT_OK


def subscriptions_create(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`subscriptions create`: --slack-channel with --slack-token-secret, or --webhook-url
    with --signing-secret; secrets by the NAME the server knows them by."""
    subscription = client.create_subscription(
        notify_states=args.notify or ["SUCCEEDED", "FAILED"],
        slack_channel=args.slack_channel or "",
        slack_thread_ts=args.slack_thread_ts or "",
        slack_token_secret=args.slack_token_secret or "",
        webhook_url=args.webhook_url or "",
        webhook_signing_secret=args.signing_secret or "",
        pipeline=args.pipeline or "",
        states=args.states,
        labels=dict(args.labels),
        subscription_id=args.subscription_id,
        request_id=args.request_id,
    )
    args.single = True
    return _show(args, out, [subscription], describe_subscription(subscription))


def subscriptions_get(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    subscription = client.get_subscription(args.name)
    args.single = True
    return _show(args, out, [subscription], describe_subscription(subscription))


def subscriptions_list(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    subscriptions = client.list_subscriptions()
    args.single = False
    lines = [
        f"{s.name}  {_sink(s)}  on {_states(s.notify_states)}  {s.pending_deliveries} pending,"
        f" {s.failed_deliveries} failed"
        for s in subscriptions
    ]
    return _show(args, out, subscriptions, lines)


def subscriptions_delete(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    client.delete_subscription(args.name)
    if args.output != "json":
        print(f"deleted {args.name}", file=out)
    return EXIT_OK


def subscriptions_deliveries(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`subscriptions deliveries`: newest first, with each attempt's outcome."""
    deliveries = client.list_deliveries(args.name, args.limit)
    if args.output == "json":
        data = [json_format.MessageToDict(d.raw) for d in deliveries]
        print(json.dumps(data, indent=2), file=out)
        return EXIT_OK
    for delivery in deliveries:
        print("\n".join(describe_delivery(delivery)), file=out)
        if args.attempts:
            for attempt in delivery.attempts:
                print(f"    {_when(attempt.time)}  {attempt.outcome}", file=out)
    return EXIT_OK
