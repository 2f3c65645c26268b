"""The rule judge: deterministic and offline, from the policy's phrases, patterns,
disclosures and calling hours."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skit_components import cli

from .calls import Call, Turn
from .judgements import EVIDENCE_CHARS, JUDGED, Finding, Judgement
from .policy import Policy


def check_hours(policy: Policy, call: Call) -> list[Finding]:
    """Calling-hours breaches: the call started outside an applicable window."""
    started = call.started_at
    if started is None or started.tzinfo is None:
        return []
    zone = _zone(call.timezone or policy.timezone)
    local = started.astimezone(zone)
    findings = []
    for rule in policy.hours:
        if rule.scope.covers(call) and not rule.allows(local):
            evidence = (
                f"call started {local:%a %Y-%m-%d %H:%M} {zone.key}, allowed "
                f"{rule.start:%H:%M}-{rule.end:%H:%M}"
            )
            audio = call.turns[0].audio_url if call.turns else ""
            findings.append(Finding(rule.id, rule.severity, 0, evidence, audio))
    return findings


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise cli.BadInput(f"unknown timezone {name!r} in the calls data") from None


def check_phrases(policy: Policy, call: Call) -> list[Finding]:
    """Phrase-rule breaches (at most one per rule: the first turn that breaks it) and
    missing required disclosures."""
    findings = []
    for rule in policy.rules:
        if not rule.scope.covers(call):
            continue
        for turn in call.turns:
            evidence = _first_match(rule.matchers, _spoken(turn, rule.speaker))
            if evidence is not None:
                findings.append(
                    Finding(rule.id, rule.severity, turn.index, evidence, turn.audio_url)
                )
                break
    for disclosure in policy.disclosures:
        if not disclosure.scope.covers(call):
            continue
        bot_turns = [t for t in call.turns if t.bot.strip()][: disclosure.within_bot_turns]
        said = any(_first_match(disclosure.matchers, (t.bot,)) is not None for t in bot_turns)
        if not said:
            evidence = f"not said in the first {disclosure.within_bot_turns} bot turn(s)"
            audio = bot_turns[0].audio_url if bot_turns else ""
            findings.append(Finding(disclosure.id, disclosure.severity, None, evidence, audio))
    return findings


def _spoken(turn: Turn, speaker: str) -> tuple[str, ...]:
    if speaker == "bot":
        return (turn.bot,)
    if speaker == "caller":
        return (turn.caller,)
    return (turn.bot, turn.caller)


def _first_match(matchers: Sequence[re.Pattern[str]], texts: Iterable[str]) -> str | None:
    """The evidence of the first phrase or pattern found in `texts`, or None."""
    for text in texts:
        if not text:
            continue
        for matcher in matchers:
            match = matcher.search(text)
            if match:
                return _excerpt(text, match.start(), match.end())
    return None


def _excerpt(text: str, start: int, end: int) -> str:
    margin = max(0, (EVIDENCE_CHARS - (end - start)) // 2)
    left, right = max(0, start - margin), min(len(text), end + margin)
    return ("…" if left else "") + text[left:right].strip() + ("…" if right < len(text) else "")


def judge_with_rules(policy: Policy, calls: Sequence[Call]) -> list[Judgement]:
    return [
        Judgement(call, JUDGED, tuple(check_hours(policy, call) + check_phrases(policy, call)))
        for call in calls
    ]
