"""A client of an OpenAI-compatible chat completions endpoint (`POST <base>/chat/completions`),
shared by the components that call an LLM (judge_compliance, generate_conversations).

One request per attempt, retried with exponential backoff (tenacity) on timeouts, dropped
connections, rate limits, server errors and answers the caller cannot use; failures are
sorted into the ones that end one request and the ones that make the endpoint unusable.

Needs `tenacity`: an image importing this module lists it in its requirements.in.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from skit_components import cli

LLM_ENV = ("LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY")
"""The environment an LLM step reads (its component.yaml declares it in `skit.ai/env`)."""

JSON_OBJECT: dict[str, Any] = {"type": "json_object"}
"""OpenAI's JSON mode: the reply is one JSON object (any shape)."""

BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
"""Exponential backoff between attempts of one LLM request (a Retry-After header wins when
it asks for longer, up to the maximum)."""

_REJECTED = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})
_RETRYABLE = frozenset(
    {
        HTTPStatus.REQUEST_TIMEOUT,
        HTTPStatus.CONFLICT,
        HTTPStatus.TOO_EARLY,
        HTTPStatus.TOO_MANY_REQUESTS,
    }
)
"""Besides every 5xx: statuses that say "try again later", not "this request is wrong"."""

Messages = list[dict[str, str]]
"""Chat messages: {"role": ..., "content": ...}."""

T = TypeVar("T")


@dataclass(frozen=True)
class LlmConfig:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout_seconds: float = 60.0
    max_attempts: int = 4
    concurrency: int = 4

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def label(self) -> str:
        """How outputs name what produced them: `llm:<model>`."""
        return f"llm:{self.model}"


class Retryable(Exception):
    """A failure worth another attempt (timeouts, rate limits, server errors, a reply
    that is not the JSON asked for)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after: float | None = retry_after
        """Seconds the server asked to wait (Retry-After), if it did."""


class Unreachable(Retryable):
    """No connection to the endpoint at all; fatal once the attempts are used up."""


class RequestFailed(Exception):
    """This request failed: refused (a 4xx other than auth), or still failing after every
    attempt. Other requests may fare better."""


class LlmEndpointError(cli.ComponentError):
    """The endpoint is unusable for every call: the step fails (exit 13, as an outage may
    pass)."""


class LlmRejected(LlmEndpointError):
    """The endpoint refuses the configuration (credentials, URL, model): exit 2, since
    retrying will not help."""

    exit_code = cli.EXIT_BAD_INPUT


class Aborted(Exception):
    """The client was aborted (another request found the endpoint unusable)."""


class ChatClient:
    """Sends chat completions requests; safe to share between threads."""

    def __init__(
        self,
        config: LlmConfig,
        *,
        urlopen: Callable[..., Any] = urllib.request.urlopen,
    ) -> None:
        self.config = config
        self._urlopen = urlopen
        self._abort = threading.Event()

    def abort(self) -> None:
        """Makes every request in flight or to come raise Aborted at its next attempt or
        backoff."""
        self._abort.set()

    def complete(
        self,
        messages: Messages,
        parse: Callable[[dict[str, Any]], T],
        *,
        temperature: float = 0.0,
        response_format: dict[str, Any] | None = JSON_OBJECT,
        on_retry: Callable[[Retryable], None] | None = None,
    ) -> T:
        """Posts `messages` and returns `parse` of the answer's JSON body. `parse` raises
        Retryable when the answer is not what was asked for, which is retried like a
        failed request.

        `response_format` is sent as it is (JSON mode by default; OpenAI's
        `{"type": "json_schema", ...}` for structured output; None sends none).
        `on_retry` is told about every failed attempt that is retried (for counting).

        Raises:
            RequestFailed: refused, or still failing after `max_attempts`.
            LlmEndpointError: the endpoint is unreachable or rejects the configuration.
            Aborted: `abort()` was called.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=_backoff,
            retry=retry_if_exception_type(Retryable),
            sleep=self._sleep,
            before_sleep=_notify(on_retry),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return parse(self._post(messages, temperature, response_format))
        except Unreachable as exc:
            raise LlmEndpointError(
                f"LLM endpoint {self.config.endpoint} is unreachable after "
                f"{self.config.max_attempts} attempts: {exc}"
            ) from None
        except Retryable as exc:
            raise RequestFailed(f"{exc} (after {self.config.max_attempts} attempts)") from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying always returns or raises

    def _sleep(self, seconds: float) -> None:
        if self._abort.wait(seconds):
            raise Aborted

    def _post(
        self, messages: Messages, temperature: float, response_format: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self._abort.is_set():
            raise Aborted
        payload: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": temperature,
        }
        if response_format is not None:
            payload["response_format"] = response_format
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(
            self.config.endpoint,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        try:
            with self._urlopen(request, timeout=self.config.timeout_seconds) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, self.config.endpoint) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise Retryable(f"timed out after {self.config.timeout_seconds:g}s") from None
            raise Unreachable(str(reason)) from None
        except TimeoutError:
            raise Retryable(f"timed out after {self.config.timeout_seconds:g}s") from None
        except (ConnectionError, OSError) as exc:
            # The server accepted the connection and then dropped it: transient.
            raise Retryable(f"connection lost: {exc}") from None
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Retryable("the endpoint did not answer with JSON") from None
        if not isinstance(body, dict):
            raise Retryable("the endpoint's answer is not a JSON object")
        return body


def _http_error(exc: urllib.error.HTTPError, endpoint: str) -> Exception:
    status = exc.code
    if status in _REJECTED:
        return LlmRejected(
            f"LLM endpoint rejected the credentials (HTTP {status}): check LLM_API_KEY"
        )
    if status == HTTPStatus.NOT_FOUND:
        return LlmRejected(
            f"LLM endpoint answered HTTP 404 for {endpoint}: check LLM_BASE_URL and LLM_MODEL"
        )
    if status in _RETRYABLE or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return Retryable(f"HTTP {status}", _retry_after(exc.headers.get("Retry-After")))
    return RequestFailed(f"the endpoint refused the request: HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _notify(on_retry: Callable[[Retryable], None] | None) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if on_retry is not None and isinstance(error, Retryable):
            on_retry(error)

    return before_sleep


def _backoff(state: RetryCallState) -> float:
    """Exponential (initial * 2^(attempt-1), capped), or a longer Retry-After."""
    attempt: int = state.attempt_number
    delay: float = min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2 ** (attempt - 1))
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, Retryable) and error.retry_after is not None:
        delay = max(delay, min(BACKOFF_MAX_SECONDS, error.retry_after))
    return delay


def llm_config(
    *, purpose: str, timeout_seconds: float, max_attempts: int, concurrency: int
) -> LlmConfig:
    """The configuration from the declared environment variables (LLM_ENV); `purpose` ends
    the message naming a missing one ("... the step needs an OpenAI-compatible endpoint
    for <purpose>").

    Raises:
        cli.BadInput: a limit out of range, LLM_BASE_URL or LLM_MODEL unset, a non-http URL.
    """
    if timeout_seconds <= 0 or max_attempts < 1 or concurrency < 1:
        raise cli.BadInput(
            "llm_timeout_seconds must be > 0, llm_max_attempts and llm_concurrency >= 1"
        )
    base_url = cli.required_env("LLM_BASE_URL", f"an OpenAI-compatible endpoint for {purpose}")
    if not base_url.startswith(("http://", "https://")):
        raise cli.BadInput(f"LLM_BASE_URL must be an http(s) URL, got {base_url!r}")
    return LlmConfig(
        base_url=base_url,
        model=cli.required_env("LLM_MODEL", f"the model name for {purpose}"),
        api_key=os.environ.get("LLM_API_KEY", "").strip(),
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        concurrency=concurrency,
    )


def endpoint_configured() -> bool:
    """Whether LLM_BASE_URL is set (a step may then choose the LLM over an offline default)."""
    return bool(os.environ.get("LLM_BASE_URL", "").strip())
