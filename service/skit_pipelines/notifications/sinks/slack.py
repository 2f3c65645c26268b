"""Slack: one concise chat.postMessage per notification, through slack_sdk's WebClient.

The WebClient is synchronous (urllib), so each call runs in a worker thread. Behaviour
follows slack_sdk and the Web API documentation: a response with `"ok": false` raises
SlackApiError whose response carries `error` (e.g. "channel_not_found"); rate limiting
is HTTP 429 with a Retry-After header in seconds
(https://api.slack.com/apis/rate-limits). base_url points tests at a local stand-in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
from typing import TYPE_CHECKING, Any

from skit_pipelines.domain import Run, RunState
from skit_pipelines.notifications.model import Delivery, SlackSink, Subscription
from skit_pipelines.notifications.secrets import SecretNotFound, Secrets
from skit_pipelines.notifications.sinks.base import Sender, SendResult

if TYPE_CHECKING:
    from slack_sdk.errors import SlackApiError

logger = logging.getLogger(__name__)

SLACK_API_URL = "https://slack.com/api/"
SEND_TIMEOUT_SECONDS = 10
MAX_LISTED = 5
"""Outputs and parameters shown in a message; more are counted."""
MAX_VALUE_CHARS = 80
MAX_ERROR_CHARS = 500

PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "restricted_action",
        "msg_too_long",
        "invalid_arguments",
    }
)
"""chat.postMessage errors that a retry cannot fix (from its documented error list)."""

_SDK_LOGGER = logging.getLogger(__name__ + ".sdk")
# slack_sdk logs every request at DEBUG; it redacts the Authorization header, but
# nothing it says about a send is worth more than the delivery's own record.
_SDK_LOGGER.setLevel(logging.WARNING)

_ICONS = {
    RunState.SUCCEEDED: ":white_check_mark:",
    RunState.FAILED: ":x:",
    RunState.CANCELLED: ":no_entry_sign:",
    RunState.CANCELLING: ":hourglass:",
    RunState.RUNNING: ":arrow_forward:",
    RunState.QUEUED: ":clock3:",
}


def _duration(run: Run) -> str:
    if run.start_time is None:
        return ""
    end = run.end_time or run.update_time
    seconds = max(int((end - run.start_time).total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (
        f"{hours}h {minutes}m" if hours else f"{minutes}m {seconds}s" if minutes else f"{seconds}s"
    )
    return f" in {text}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def message_text(run: Run) -> str:
    """The message: pipeline, state, duration and run name on the first line; then
    outputs, parameters, the error and the Kubeflow link, each when there is one."""
    icon = _ICONS.get(run.state, ":grey_question:")
    lines = [f"{icon} *{run.pipeline}* {run.state.name}{_duration(run)} · `{run.name}`"]
    outputs = [a.uri for a in run.outputs if a.uri]
    if outputs:
        lines.append(f"• outputs: {_listed(outputs)}")
    if run.parameters:
        values = [
            f"{key}={_clip(json.dumps(value, default=str), MAX_VALUE_CHARS)}"
            for key, value in sorted(run.parameters.items())
        ]
        lines.append(f"• parameters: `{_listed(values)}`")
    if run.error is not None and run.error.message:
        lines.append(f"• error: {_clip(run.error.message, MAX_ERROR_CHARS)}")
    if run.backend_run_url:
        lines.append(f"• <{run.backend_run_url}|open in Kubeflow>")
    return "\n".join(lines)


def _response_value(error: SlackApiError, key: str) -> Any:
    try:
        return error.response.get(key)
    except AttributeError:
        return None


class SlackSender(Sender):
    def __init__(
        self,
        secrets: Secrets,
        *,
        base_url: str = SLACK_API_URL,
        timeout: int = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self._secrets = secrets
        self._base_url = base_url
        self._timeout = timeout

    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        sink = subscription.sink
        assert isinstance(sink, SlackSink)
        try:
            token = self._secrets.get(sink.token_secret)
        except SecretNotFound:
            return SendResult(outcome=f"secret {sink.token_secret!r} is not configured")
        return await asyncio.to_thread(self._post, token, sink, message_text(delivery.run))

    def _post(self, token: str, sink: SlackSink, text: str) -> SendResult:
        # Imported at the first send: slack_sdk takes ~25 ms to import, which the server's
        # start would pay even where no subscription ever names Slack.
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        client = WebClient(
            token=token,
            base_url=self._base_url,
            timeout=self._timeout,
            logger=_SDK_LOGGER,
            # Attempts are the worker's to make and record, one per call.
            retry_handlers=[],
        )
        try:
            response = client.chat_postMessage(
                channel=sink.channel,
                text=text,
                thread_ts=sink.thread_ts or None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as error:
            code = str(_response_value(error, "error") or "unknown_error")
            status = int(getattr(error.response, "status_code", 0) or 0)
            retry_after = None
            if status == 429:
                headers = getattr(error.response, "headers", {}) or {}
                raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
                try:
                    retry_after = float(raw[0] if isinstance(raw, list) else raw)
                except ValueError:
                    retry_after = 1.0
            return SendResult(
                outcome=f"slack: {code}",
                http_status=status,
                permanent=code in PERMANENT_ERRORS,
                retry_after=retry_after,
            )
        except (urllib.error.URLError, OSError) as error:
            return SendResult(outcome=f"connection failed: {getattr(error, 'reason', error)}")
        return SendResult(outcome="slack: ok", http_status=response.status_code, delivered=True)
