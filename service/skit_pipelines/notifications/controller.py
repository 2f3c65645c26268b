"""The controller behind the Subscription RPCs: validates, stores, lists and deletes
subscriptions and lists their deliveries. worker.py delivers."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlparse

from skit_pipelines import names
from skit_pipelines.domain import ANONYMOUS_ADMIN, Principal, RunFilter, RunState
from skit_pipelines.errors import AlreadyExists, FieldViolation, InvalidArgument, PermissionDenied
from skit_pipelines.limits import RequestLimits, check_labels
from skit_pipelines.notifications.model import (
    Delivery,
    Sink,
    SlackSink,
    Subscription,
    WebhookSink,
    subscription_to_dict,
)
from skit_pipelines.notifications.secrets import Secrets
from skit_pipelines.store.base import RunStore

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_URL_LENGTH = 2048
MAX_CHANNEL_LENGTH = 200
MAX_THREAD_TS_LENGTH = 64

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SinkSpec:
    """A sink as a request gives it (unchecked): kind is "slack", "webhook" or ""."""

    kind: str = ""
    channel: str = ""
    thread_ts: str = ""
    token_secret: str = ""
    url: str = ""
    signing_secret: str = ""


@dataclass(frozen=True)
class SubscriptionSpec:
    """A subscription's settable fields, as a request gives them (unchecked)."""

    pipeline: str = ""
    """"pipelines/{pipeline}" or empty."""
    states: Sequence[int] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    notify_states: Sequence[int] = ()
    sink: SinkSpec = field(default_factory=SinkSpec)


def _states(numbers: Sequence[int], field: str) -> tuple[frozenset[RunState], list[FieldViolation]]:
    states: set[RunState] = set()
    violations = []
    for index, number in enumerate(numbers):
        if number not in RunState.__members__.values() or number == RunState.UNSPECIFIED:
            violations.append(FieldViolation(f"{field}[{index}]", f"unknown run state {number}"))
        else:
            states.add(RunState(number))
    return frozenset(states), violations


class SubscriptionController:
    def __init__(
        self,
        store: RunStore,
        secrets: Secrets,
        *,
        clock: Clock = _utcnow,
        limits: RequestLimits | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._clock = clock
        self._limits = limits or RequestLimits()
        self._on_change = on_change or (lambda: None)

    def set_on_change(self, on_change: Callable[[], None]) -> None:
        """Called after a subscription is created or deleted (the worker wakes up)."""
        self._on_change = on_change

    def _checked_sink(self, spec: SinkSpec, violations: list[FieldViolation]) -> Sink | None:
        prefix = "subscription.sink"
        if spec.kind == "slack":
            if not spec.channel.strip():
                violations.append(
                    FieldViolation(f"{prefix}.slack.channel", "a Slack channel is required")
                )
            elif len(spec.channel) > MAX_CHANNEL_LENGTH or not spec.channel.isprintable():
                violations.append(
                    FieldViolation(f"{prefix}.slack.channel", "is not a Slack channel id or name")
                )
            if len(spec.thread_ts) > MAX_THREAD_TS_LENGTH:
                violations.append(FieldViolation(f"{prefix}.slack.thread_ts", "is too long"))
            self._check_secret(spec.token_secret, f"{prefix}.slack.token_secret", violations)
            return SlackSink(
                channel=spec.channel.strip(),
                thread_ts=spec.thread_ts,
                token_secret=spec.token_secret,
            )
        if spec.kind == "webhook":
            field_name = f"{prefix}.webhook.url"
            parsed = urlparse(spec.url)
            if len(spec.url) > MAX_URL_LENGTH:
                violations.append(
                    FieldViolation(field_name, f"at most {MAX_URL_LENGTH} characters")
                )
            elif parsed.scheme not in ("http", "https") or not parsed.hostname:
                violations.append(
                    FieldViolation(
                        field_name,
                        "must be an http:// or https:// URL with a host, got"
                        f" {(parsed.scheme or 'no scheme')!r}",
                    )
                )
            self._check_secret(spec.signing_secret, f"{prefix}.webhook.signing_secret", violations)
            return WebhookSink(url=spec.url, signing_secret=spec.signing_secret)
        violations.append(
            FieldViolation(
                prefix,
                "a sink is required: slack {channel, token_secret} or"
                " webhook {url, signing_secret}",
            )
        )
        return None

    def _check_secret(self, name: str, field_name: str, violations: list[FieldViolation]) -> None:
        try:
            self._secrets.check_name(name, field=field_name)
        except InvalidArgument as error:
            violations.extend(error.violations)

    def _checked(self, spec: SubscriptionSpec) -> tuple[RunFilter, frozenset[RunState], Sink]:
        """Every violation at once, so a client fixes its request in one go."""
        violations: list[FieldViolation] = []
        pipeline_id = ""
        if spec.pipeline:
            try:
                pipeline_id = names.parse_name(
                    spec.pipeline, "pipelines", field="subscription.filter.pipeline"
                )
            except InvalidArgument as error:
                violations.extend(error.violations)
        states, bad = _states(spec.states, "subscription.filter.states")
        violations.extend(bad)
        try:
            check_labels(spec.labels, self._limits, field="subscription.filter.labels")
        except InvalidArgument as error:
            violations.extend(error.violations)
        if (
            spec.created_after is not None
            and spec.created_before is not None
            and spec.created_before <= spec.created_after
        ):
            violations.append(
                FieldViolation(
                    "subscription.filter.create_time_before", "must be after create_time_after"
                )
            )
        notify, bad = _states(spec.notify_states, "subscription.notify_states")
        violations.extend(bad)
        if not spec.notify_states:
            violations.append(
                FieldViolation(
                    "subscription.notify_states",
                    "at least one run state to notify on is required, e.g. SUCCEEDED and FAILED",
                )
            )
        elif states and not bad and not (notify & states):
            violations.append(
                FieldViolation(
                    "subscription.notify_states",
                    "no state here is in filter.states, so nothing would ever be notified",
                )
            )
        sink = self._checked_sink(spec.sink, violations)
        if violations or sink is None:
            raise InvalidArgument(
                "invalid subscription: "
                + "; ".join(f"{v.field}: {v.description}" for v in violations[:5]),
                violations=violations,
                reason="INVALID_SUBSCRIPTION",
            )
        run_filter = RunFilter(
            pipeline=pipeline_id,
            states=states,
            labels=dict(spec.labels),
            created_after=spec.created_after,
            created_before=spec.created_before,
        )
        return run_filter, notify, sink

    async def create_subscription(
        self,
        spec: SubscriptionSpec,
        *,
        subscription_id: str = "",
        request_id: str = "",
        principal: Principal = ANONYMOUS_ADMIN,
    ) -> Subscription:
        if subscription_id:
            names.check_id(subscription_id, field="subscription_id")
        if request_id:
            names.check_request_id(request_id)
        run_filter, notify, sink = self._checked(spec)
        # From now on: the changes already in the feed are history, not notified.
        cursor = await self._store.latest_change_cursor()
        subscription = Subscription(
            id=subscription_id or names.new_run_id("sub"),
            filter=run_filter,
            notify_states=notify,
            sink=sink,
            creator=principal.name,
            create_time=self._clock(),
            cursor=cursor,
            request_id=request_id,
        )
        body = subscription_to_dict(subscription)
        for key in ("id", "create_time", "cursor", "creator", "request_id", "health"):
            body.pop(key)
        request_hash = hashlib.sha256(
            json.dumps([subscription_id, body], sort_keys=True, default=str).encode()
        ).hexdigest()
        outcome = await self._store.create_subscription(subscription, request_hash)
        if not outcome.created:
            if outcome.request_hash != request_hash:
                raise AlreadyExists(
                    f"request_id {request_id!r} was already used for a different request,"
                    f" which created {outcome.subscription.name}",
                    resource_name=outcome.subscription.name,
                    reason="REQUEST_ID_REUSED",
                )
            return outcome.subscription
        logger.info("created %s (%s sink) from cursor %s", subscription.name, _kind(sink), cursor)
        self._on_change()
        return subscription

    async def get_subscription(self, name: str) -> Subscription:
        return await self._store.get_subscription(names.parse_name(name, "subscriptions"))

    async def list_subscriptions(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Subscription], str]:
        size = _page_size(page_size)
        after = str(_decode_token(page_token)) if page_token else ""
        page = await self._store.list_subscriptions(size, after)
        found = list(page.subscriptions)
        token = _encode_token(found[-1].id) if page.more and found else ""
        return found, token

    async def delete_subscription(
        self, name: str, *, principal: Principal = ANONYMOUS_ADMIN
    ) -> None:
        subscription = await self.get_subscription(name)
        if not principal.may_act_on(subscription.creator):
            raise PermissionDenied(
                f"{principal.name} may not delete {subscription.name}, which"
                f" {subscription.creator or 'another'} created; only its creator or an admin may",
                reason="NOT_SUBSCRIPTION_OWNER",
            )
        await self._store.delete_subscription(subscription.id)
        logger.info("deleted %s", subscription.name)
        self._on_change()

    async def list_deliveries(
        self, parent: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Delivery], str]:
        subscription_id = names.parse_name(parent, "subscriptions", field="parent")
        size = _page_size(page_size)
        before = None
        if page_token:
            position = _decode_token(page_token)
            if not isinstance(position, int):
                raise InvalidArgument("page_token is malformed", field="page_token")
            before = position
        page = await self._store.list_deliveries(subscription_id, size, before)
        found = list(page.deliveries)
        token = _encode_token(found[-1].cursor) if page.more and found else ""
        return found, token


def _kind(sink: Sink) -> str:
    return "slack" if isinstance(sink, SlackSink) else "webhook"


def _page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(after: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def _decode_token(token: str) -> str | int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["after"]
        if not isinstance(after, str | int) or isinstance(after, bool):
            raise TypeError
        return after
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not a token this server issued", field="page_token"
        ) from None
