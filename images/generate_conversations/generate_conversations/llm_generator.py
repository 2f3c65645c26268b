"""The LLM generator: one chat completions request per conversation, concurrently
(bounded), asking for structured JSON output (conversation.RESPONSE_FORMAT) and checking
every answer against the same schema. Rate limits, server errors, timeouts and malformed
answers are retried with backoff (skit_components.llm); a conversation still failing is
dropped and counted, never silently. An unreachable endpoint or rejected credentials end
the step."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from skit_components.llm import (
    Aborted,
    ChatClient,
    LlmConfig,
    LlmEndpointError,
    RequestFailed,
    Retryable,
)

from .conversation import RESPONSE_FORMAT, Conversation, Malformed, Turn, parse_conversation
from .prompts import SYSTEM, PromptTemplate
from .situations import Situation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drop:
    """A conversation that was asked for and not produced."""

    situation_id: int
    index: int
    reason: str


@dataclass
class Generated:
    """What the generator produced and what it dropped, in request order."""

    conversations: list[Conversation] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    """Retried attempts by cause (HTTP 429, malformed output, timed out, ...)."""


class LlmGenerator:
    def __init__(
        self,
        config: LlmConfig,
        template: PromptTemplate,
        *,
        temperature: float,
        urlopen: Callable[..., Any] = urllib.request.urlopen,
    ) -> None:
        self.config = config
        self.template = template
        self.temperature = temperature
        self._client = ChatClient(config, urlopen=urlopen)
        self._fatal: LlmEndpointError | None = None
        self._lock = threading.Lock()
        self._retries: Counter[str] = Counter()

    @property
    def name(self) -> str:
        return self.config.label

    def generate(self, situations: Sequence[Situation], count: int) -> Generated:
        """`count` conversations per situation.

        Raises:
            LlmEndpointError: the endpoint is unreachable or rejects the configuration.
        """
        jobs = [(s, i) for s in situations for i in range(count)]
        with ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="llm-generate"
        ) as pool:
            futures = [pool.submit(self._one, s, i, count) for s, i in jobs]
            results = [future.result() for future in futures]
        if self._fatal is not None:
            raise self._fatal
        generated = Generated(retries=Counter(self._retries))
        for result in results:
            if isinstance(result, Drop):
                generated.drops.append(result)
            else:
                generated.conversations.append(result)
        return generated

    def _one(self, situation: Situation, index: int, count: int) -> Conversation | Drop:
        user = self.template.render(situation, index, count)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        try:
            turns, tokens = self._client.complete(
                messages,
                _parse,
                temperature=self.temperature,
                response_format=RESPONSE_FORMAT,
                on_retry=self._count_retry,
            )
        except Aborted:
            return Drop(situation.id, index, "aborted: the endpoint became unusable")
        except LlmEndpointError as exc:
            with self._lock:
                if self._fatal is None:
                    self._fatal = exc
            self._client.abort()
            return Drop(situation.id, index, str(exc))
        except RequestFailed as exc:
            logger.warning("dropped conversation %d of situation %d: %s", index, situation.id, exc)
            return Drop(situation.id, index, str(exc))
        return Conversation(
            situation, index, turns, self.name, f"{SYSTEM}\n\n{user}", tokens=tokens
        )

    def _count_retry(self, error: Retryable) -> None:
        cause = str(error).split(":", 1)[0]
        with self._lock:
            self._retries[cause] += 1


def _parse(body: dict[str, Any]) -> tuple[tuple[Turn, ...], int]:
    """The turns and total tokens of a chat completion; Retryable when unusable."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise Retryable("malformed output: no choices[0].message in the answer") from None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        raise Retryable(f"malformed output: no content ({refusal or 'empty message'})")
    try:
        turns = parse_conversation(content)
    except Malformed as exc:
        raise Retryable(f"malformed output: {exc}") from None
    usage = body.get("usage")
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return turns, tokens if isinstance(tokens, int) else 0
