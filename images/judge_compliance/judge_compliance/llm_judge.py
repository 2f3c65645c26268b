"""The LLM judge: the policy's phrase rules and disclosures, judged by a chat model on the
whole redacted call; calling hours stay deterministic."""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .calls import Call
from .judgements import EVIDENCE_CHARS, FAILED, JUDGED, Finding, Judgement
from .llm_client import (
    Aborted,
    ChatClient,
    LlmConfig,
    LlmEndpointError,
    Messages,
    RequestFailed,
    Retryable,
)
from .policy import DisclosureRule, PhraseRule, Policy
from .redaction import Redactor
from .rules import check_hours

logger = logging.getLogger(__name__)

_EXAMPLE_PHRASES = 6
"""Example phrases of a rule shown to the model (the rest only make the prompt longer)."""
_SPEAKER_NAMES = {"bot": "the bot", "caller": "the caller", "any": "anyone"}
_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


class LlmJudge:
    """Judges calls through an OpenAI-compatible chat completions endpoint."""

    def __init__(
        self,
        config: LlmConfig,
        policy: Policy,
        *,
        urlopen: Callable[..., Any] = urllib.request.urlopen,
    ) -> None:
        self.config = config
        self.policy = policy
        self.redact = Redactor(policy.redact_names)
        self._client = ChatClient(config, urlopen=urlopen)
        self._fatal: LlmEndpointError | None = None
        self._fatal_lock = threading.Lock()

    def judge(self, calls: Sequence[Call]) -> list[Judgement]:
        """Judges every call; returns them in order.

        Raises:
            LlmEndpointError: the endpoint is unreachable or rejects the configuration.
        """
        with ThreadPoolExecutor(
            max_workers=self.config.concurrency, thread_name_prefix="llm-judge"
        ) as pool:
            futures = [pool.submit(self._judge_one, call) for call in calls]
            results = [future.result() for future in futures]
        if self._fatal is not None:
            raise self._fatal
        return results

    def _judge_one(self, call: Call) -> Judgement:
        hours = check_hours(self.policy, call)
        rules = [r for r in self.policy.rules if r.scope.covers(call)]
        disclosures = [d for d in self.policy.disclosures if d.scope.covers(call)]
        if not rules and not disclosures:
            return Judgement(call, JUDGED, tuple(hours))
        messages = self.messages(call, rules, disclosures)
        allowed = {r.id for r in rules} | {d.id for d in disclosures}
        try:
            findings, tokens = self._client.complete(
                messages, lambda body: self._parse(body, allowed, call)
            )
        except Aborted:
            return Judgement(call, FAILED, tuple(hours), error="aborted: the step is failing")
        except LlmEndpointError as exc:
            # Every other call would fail the same way: stop them at their next attempt.
            with self._fatal_lock:
                if self._fatal is None:
                    self._fatal = exc
            self._client.abort()
            return Judgement(call, FAILED, tuple(hours), error=str(exc))
        except RequestFailed as exc:
            logger.warning("call %s: judgement failed: %s", call.uuid, exc)
            return Judgement(call, FAILED, tuple(hours), error=str(exc))
        return Judgement(call, JUDGED, tuple(hours + findings), tokens=tokens)

    def messages(
        self,
        call: Call,
        rules: Sequence[PhraseRule],
        disclosures: Sequence[DisclosureRule],
    ) -> Messages:
        """The chat messages for one call; every transcript line is redacted."""
        lines = [
            "You audit the phone calls of a company's voice bot for compliance.",
            f'Judge the whole call against these rules of the policy "{self.policy.name}" '
            f"(version {self.policy.version}):",
        ]
        for rule in rules:
            speaker = _SPEAKER_NAMES[rule.speaker]
            examples = "; ".join(f'"{p}"' for p in rule.phrases[:_EXAMPLE_PHRASES])
            lines.append(f"- {rule.id}: {rule.description} (said by {speaker}; e.g. {examples})")
        for disclosure in disclosures:
            lines.append(
                f"- {disclosure.id}: breached when this is missing: {disclosure.description} "
                f"(must be said within the bot's first {disclosure.within_bot_turns} turn(s))"
            )
        lines.append(
            "Personal data in the transcript is replaced by placeholders like [NUMBER] and "
            "[NAME]; they are not breaches. Answer with only a JSON object "
            '{"breaches": [{"rule": "<rule id>", "turn": <turn number>, "evidence": '
            '"<the words that break the rule>"}]}, with an empty list when the call follows '
            "every rule. Use only the rule ids above."
        )
        transcript = [f"Call language: {call.language or 'unknown'}"]
        for turn in call.turns:
            if turn.bot:
                transcript.append(f"turn {turn.index} BOT: {self.redact(turn.bot)}")
            if turn.caller:
                transcript.append(f"turn {turn.index} CALLER: {self.redact(turn.caller)}")
        return [
            {"role": "system", "content": "\n".join(lines)},
            {"role": "user", "content": "\n".join(transcript)},
        ]

    def _parse(
        self, body: dict[str, Any], allowed: set[str], call: Call
    ) -> tuple[list[Finding], int]:
        """The findings and the tokens used, from a chat completions answer.

        Raises:
            Retryable: the answer is not the verdict asked for (the model may do better
                when asked again).
        """
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise Retryable("the answer has no choices[0].message.content") from None
        verdict = _json_object(content)
        breaches = verdict.get("breaches") if verdict is not None else None
        if not isinstance(breaches, list):
            raise Retryable('the model did not answer {"breaches": [...]}')
        turns = {t.index: t for t in call.turns}
        findings: dict[str, Finding] = {}
        for item in breaches:
            if not isinstance(item, dict) or item.get("rule") not in allowed:
                raise Retryable(f"the model named an unknown rule: {str(item)[:80]}")
            turn = item.get("turn")
            turn = turn if isinstance(turn, int) and turn in turns else None
            evidence = str(item.get("evidence") or "")[:EVIDENCE_CHARS]
            audio = turns[turn].audio_url if turn is not None else ""
            rule = item["rule"]
            findings.setdefault(
                rule, Finding(rule, self.policy.severity(rule), turn, evidence, audio)
            )
        usage = body.get("usage") or {}
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else 0
        return list(findings.values()), tokens if isinstance(tokens, int) else 0


def _json_object(content: Any) -> dict[str, Any] | None:
    if not isinstance(content, str):
        return None
    text = content.strip()
    # Some models wrap JSON in a Markdown fence even when asked not to.
    fenced = _FENCED.fullmatch(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
