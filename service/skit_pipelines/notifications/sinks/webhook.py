"""Webhooks: a POST of the run as JSON, signed like Stripe's and GitHub's webhooks.

The body is the API's Run in proto3 JSON (json_format, the shape `GetRun` answers in
JSON). The header `Skit-Signature: t=<unix seconds>,v1=<hex>` carries
HMAC-SHA256(key=signing secret, message=f"{t}." + body): a receiver recomputes it over
the raw body, compares in constant time, and refuses timestamps older than a few minutes
(replays). `Skit-Delivery` names the delivery, the same on every attempt: deliveries are
at least once, so receivers deduplicate on it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from google.protobuf import json_format

from skit_pipelines import convert
from skit_pipelines.domain import Run
from skit_pipelines.notifications.model import Delivery, Subscription, WebhookSink
from skit_pipelines.notifications.secrets import SecretNotFound, Secrets
from skit_pipelines.notifications.sinks.base import Sender, SendResult

if TYPE_CHECKING:
    import urllib.request

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Skit-Signature"
DELIVERY_HEADER = "Skit-Delivery"
SUBSCRIPTION_HEADER = "Skit-Subscription"
SIGNATURE_TOLERANCE_SECONDS = 300
"""How old a signed timestamp verify() accepts (replay protection)."""
SEND_TIMEOUT_SECONDS = 10.0
"""The most one POST may take, connection included."""
USER_AGENT = "skit-pipelines-notifications/1"


def payload(run: Run) -> bytes:
    """The body: the run as the API's Run in proto3 JSON, compact."""
    data = json_format.MessageToDict(convert.run(run))
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The Skit-Signature header value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does (README's snippet): whether `header` signs `body` with
    `secret` and its timestamp is within `tolerance` seconds of now."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), parts.get("v1", "")):
        return False
    return abs((time.time() if now is None else now) - timestamp) <= tolerance


def where(url: str) -> str:
    """The part of a URL safe to log: scheme and host (paths and queries may hold tokens,
    as a Slack incoming-webhook URL does)."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname or '?'}{f':{parsed.port}' if parsed.port else ''}"


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    # Built at the first send: urllib.request (with http.client and email) takes ~10 ms
    # to import, which the server's start would pay before any webhook is due.
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        """A redirect is an answer, not a new target: urllib would re-send a POST as a GET."""

        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    return urllib.request.build_opener(NoRedirects())


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
    import urllib.error
    import urllib.request

    opener = _opener()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return SendResult(outcome=f"connection failed: {reason}")
    return SendResult(outcome=f"HTTP {status}", http_status=status, delivered=200 <= status < 300)


class WebhookSender(Sender):
    """POSTs in a worker thread (urllib), so a slow receiver holds a thread, not the loop;
    the worker bounds how many run at once."""

    def __init__(
        self,
        secrets: Secrets,
        *,
        timeout: float = SEND_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets = secrets
        self._timeout = timeout
        self._clock = clock

    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        sink = subscription.sink
        assert isinstance(sink, WebhookSink)
        try:
            secret = self._secrets.get(sink.signing_secret)
        except SecretNotFound:
            # Retried: an operator can add the secret back.
            return SendResult(outcome=f"secret {sink.signing_secret!r} is not configured")
        body = payload(delivery.run)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, body, int(self._clock())),
            DELIVERY_HEADER: delivery.name,
            SUBSCRIPTION_HEADER: subscription.name,
        }
        return await asyncio.to_thread(_post, sink.url, body, headers, self._timeout)
