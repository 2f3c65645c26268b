"""judge_compliance: judge every call of a turns CSV against a versioned compliance policy.

Two judges share the policy (policy.yaml in this folder, or the YAML given as input):

- `rules` (the default, offline, deterministic): phrase and regular-expression rules on
  what the bot or the caller said, required disclosures in the first bot turns, and the
  allowed calling hours in the call's local time.
- `llm`: the same calling-hours check, and an OpenAI-compatible chat endpoint (LLM_BASE_URL,
  LLM_MODEL, LLM_API_KEY) judging the whole call against the phrase rules and disclosures.
  Numbers, phone numbers, e-mail addresses, URLs and the policy's personal names are
  redacted before any text leaves the machine. Calls are judged concurrently (bounded),
  each request retried with exponential backoff; a call whose judgement still fails is
  written out as failed, never dropped. An unreachable endpoint or rejected credentials
  fail the step.

Writes one JSON line per call; the publish_breaches step stores them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from skit_components import cli
from skit_components.outputs import output_path, write_parameter

logger = logging.getLogger("judge_compliance")

BUNDLED_POLICY = Path(__file__).resolve().parent / "policy.yaml"
JUDGES = ("rules", "llm")
LLM_ENV = ("LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY")

REQUIRED_COLUMNS = ("call_uuid", "turn_index", "reftime", "bot_response", "primary_utterance")
_SEVERITIES = ("low", "medium", "high")
_SPEAKERS = ("bot", "caller", "any")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_EVIDENCE_CHARS = 160

BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
"""Exponential backoff between attempts of one LLM request (a Retry-After header wins when
it asks for longer, up to the maximum)."""


# --- the policy ----------------------------------------------------------------------------


class PolicyError(cli.BadInput):
    """The policy file is malformed; the message names the field."""


@dataclass(frozen=True)
class Scope:
    """Which calls a rule applies to; an empty set means any."""

    template_ids: frozenset[int] = frozenset()
    call_types: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    client_ids: frozenset[int] = frozenset()
    flow_ids: frozenset[int] = frozenset()

    def covers(self, call: Call) -> bool:
        return (
            _allows(self.template_ids, call.template_id)
            and _allows(self.call_types, call.call_type)
            and _allows(self.languages, call.language)
            and _allows(self.client_ids, call.client_id)
            and _allows(self.flow_ids, call.flow_id)
        )


def _allows(allowed: frozenset[Any], value: Any) -> bool:
    return not allowed or value in allowed


@dataclass(frozen=True)
class PhraseRule:
    """Something that must never be said."""

    id: str
    description: str
    severity: str
    speaker: str
    phrases: tuple[str, ...]
    """Matched case-insensitively, whitespace-insensitively, anywhere in a turn."""
    matchers: tuple[re.Pattern[str], ...]
    """The phrases as patterns, then the rule's own patterns."""
    scope: Scope


@dataclass(frozen=True)
class DisclosureRule:
    """Something the bot must say within its first `within_bot_turns` turns."""

    id: str
    description: str
    severity: str
    within_bot_turns: int
    phrases: tuple[str, ...]
    matchers: tuple[re.Pattern[str], ...]
    scope: Scope


@dataclass(frozen=True)
class HoursRule:
    """When calls may be placed, in the call's local time; `end` is exclusive and may be
    before `start` (a window over midnight)."""

    id: str
    description: str
    severity: str
    start: time
    end: time
    days: frozenset[int]
    """Weekdays allowed, Monday = 0."""
    scope: Scope

    def allows(self, local: datetime) -> bool:
        if local.weekday() not in self.days:
            return False
        moment = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


@dataclass(frozen=True)
class Policy:
    version: str
    name: str
    timezone: str
    """The calls' local timezone when the calls data does not say."""
    rules: tuple[PhraseRule, ...]
    disclosures: tuple[DisclosureRule, ...]
    hours: tuple[HoursRule, ...]
    redact_names: tuple[str, ...]
    source: str = ""

    def severity(self, rule_id: str) -> str:
        for rule in (*self.rules, *self.disclosures, *self.hours):
            if rule.id == rule_id:
                return rule.severity
        return ""


def load_policy(text: str, source: str) -> Policy:
    """Parses and validates a policy; every problem is a PolicyError naming the field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    reader = _Fields(raw, source)
    reader.only(
        "version",
        "name",
        "timezone",
        "rules",
        "required_disclosures",
        "calling_hours",
        "redaction",
    )
    version = reader.string("version")
    timezone = reader.string("timezone", default="UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"{source}: timezone: unknown timezone {timezone!r}") from None
    rules = tuple(_phrase_rule(item) for item in reader.items("rules"))
    disclosures = tuple(_disclosure_rule(item) for item in reader.items("required_disclosures"))
    hours = tuple(_hours_rule(item) for item in reader.items("calling_hours"))
    redaction = reader.child("redaction")
    redaction.only("names")
    names = redaction.strings("names")
    seen: set[str] = set()
    for rule in (*rules, *disclosures, *hours):
        if rule.id in seen:
            raise PolicyError(f"{source}: rule id {rule.id!r} is used twice")
        seen.add(rule.id)
    if not seen:
        raise PolicyError(f"{source} has no rules, required_disclosures or calling_hours")
    return Policy(
        version=version,
        name=reader.string("name", default=f"compliance policy {version}"),
        timezone=timezone,
        rules=rules,
        disclosures=disclosures,
        hours=hours,
        redact_names=tuple(names),
        source=source,
    )


def read_policy(policy_yaml: str) -> Policy:
    """The policy given as YAML text, or the bundled policy.yaml when the text is empty."""
    if policy_yaml.strip():
        return load_policy(policy_yaml, "policy_yaml")
    try:
        text = BUNDLED_POLICY.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read the bundled policy {BUNDLED_POLICY}: {exc}") from None
    return load_policy(text, BUNDLED_POLICY.name)


class _Fields:
    """Typed access to one mapping of the policy, with errors that name the field path."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise PolicyError(f"{path}: expected a mapping, got {_kind(raw)}")
        self.raw = raw
        self.path = path

    def fail(self, key: str, message: str) -> PolicyError:
        return PolicyError(f"{self.path}: {key}: {message}")

    def only(self, *keys: str) -> None:
        unknown = sorted(set(map(str, self.raw)) - set(keys))
        if unknown:
            raise PolicyError(
                f"{self.path}: unknown field {unknown[0]!r} (known: {', '.join(keys)})"
            )

    def string(self, key: str, *, default: str | None = None) -> str:
        value = self.raw.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if not isinstance(value, str) or not value.strip():
            hint = ' (quote it, e.g. "1.10" or "08:00")' if isinstance(value, int | float) else ""
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}{hint}")
        return value.strip()

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.string(key, default=default)
        if value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, f"expected a positive integer, got {_kind(value)}")
        return value

    def strings(self, key: str) -> list[str]:
        value = self.raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, "expected a list of non-empty strings")
        return [v.strip() for v in value]

    def integers(self, key: str) -> list[int]:
        value = self.raw.get(key) or []
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self.fail(key, "expected a list of integers")
        return list(value)

    def patterns(self, key: str) -> tuple[re.Pattern[str], ...]:
        compiled = []
        for index, pattern in enumerate(self.strings(key)):
            try:
                compiled.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise self.fail(f"{key}[{index}]", f"invalid regular expression: {exc}") from None
        return tuple(compiled)

    def items(self, key: str) -> Iterator[_Fields]:
        value = self.raw.get(key) or []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        for index, item in enumerate(value):
            yield _Fields(item, f"{self.path}: {key}[{index}]")

    def child(self, key: str) -> _Fields:
        return _Fields(self.raw.get(key) or {}, f"{self.path}: {key}")

    def rule_id(self) -> str:
        value = self.string("id")
        if not _RULE_ID.match(value):
            raise self.fail("id", f"{value!r} must be lower_snake_case")
        return value

    def scope(self) -> Scope:
        scope = self.child("applies_to")
        scope.only("template_ids", "call_types", "languages", "client_ids", "flow_ids")
        return Scope(
            template_ids=frozenset(scope.integers("template_ids")),
            call_types=frozenset(s.upper() for s in scope.strings("call_types")),
            languages=frozenset(scope.strings("languages")),
            client_ids=frozenset(scope.integers("client_ids")),
            flow_ids=frozenset(scope.integers("flow_ids")),
        )

    def clock(self, key: str) -> time:
        value = self.string(key)
        try:
            return time.fromisoformat(value)
        except ValueError:
            raise self.fail(key, f"expected a time like 08:00, got {value!r}") from None


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _phrase_rule(f: _Fields) -> PhraseRule:
    f.only("id", "description", "severity", "speaker", "phrases", "patterns", "applies_to")
    phrases, matchers = _matchers(f)
    return PhraseRule(
        id=f.rule_id(),
        description=f.string("description"),
        severity=f.choice("severity", _SEVERITIES, "high"),
        speaker=f.choice("speaker", _SPEAKERS, "bot"),
        phrases=phrases,
        matchers=matchers,
        scope=f.scope(),
    )


def _disclosure_rule(f: _Fields) -> DisclosureRule:
    f.only("id", "description", "severity", "within_bot_turns", "phrases", "patterns", "applies_to")
    phrases, matchers = _matchers(f)
    return DisclosureRule(
        id=f.rule_id(),
        description=f.string("description"),
        severity=f.choice("severity", _SEVERITIES, "medium"),
        within_bot_turns=f.integer("within_bot_turns", 1),
        phrases=phrases,
        matchers=matchers,
        scope=f.scope(),
    )


def _hours_rule(f: _Fields) -> HoursRule:
    f.only("id", "description", "severity", "start", "end", "days", "applies_to")
    days = f.strings("days") or list(_DAYS)
    unknown = [d for d in days if d.lower() not in _DAYS]
    if unknown:
        raise f.fail("days", f"unknown day {unknown[0]!r} (use {', '.join(_DAYS)})")
    start, end = f.clock("start"), f.clock("end")
    if start == end:
        raise f.fail("end", "equals start: the window would be empty")
    return HoursRule(
        id=f.rule_id(),
        description=f.string("description"),
        severity=f.choice("severity", _SEVERITIES, "high"),
        start=start,
        end=end,
        days=frozenset(_DAYS.index(d.lower()) for d in days),
        scope=f.scope(),
    )


def _matchers(f: _Fields) -> tuple[tuple[str, ...], tuple[re.Pattern[str], ...]]:
    phrases = tuple(" ".join(p.split()) for p in f.strings("phrases"))
    patterns = f.patterns("patterns")
    if not phrases and not patterns:
        raise PolicyError(f"{f.path}: needs phrases or patterns")
    # A phrase matches whatever the case and the spacing between its words.
    literal = tuple(
        re.compile(r"\s+".join(map(re.escape, p.split())), re.IGNORECASE) for p in phrases
    )
    return phrases, literal + patterns


# --- calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    index: int
    reftime: datetime | None
    bot: str
    caller: str
    audio_url: str = ""


@dataclass(frozen=True)
class Call:
    uuid: str
    turns: tuple[Turn, ...]
    call_url: str = ""
    flow_uuid: str = ""
    client_uuid: str = ""
    language: str = ""
    template_id: int | None = None
    client_id: int | None = None
    flow_id: int | None = None
    call_type: str = ""
    timezone: str = ""
    """The call's own timezone, when the calls data has one."""
    started: datetime | None = None
    """When the call was placed, when the calls data has it."""

    @property
    def started_at(self) -> datetime | None:
        """When the call started: as the calls data says, else its first turn's time
        (which is a second or two later: the bot's first words)."""
        if self.started is not None:
            return self.started
        return self.turns[0].reftime if self.turns else None


def read_calls(path: Path) -> list[Call]:
    """Groups a turns CSV (one row per turn, a call's turns together, as fetch_calls
    writes it) into calls.

    Raises:
        cli.BadInput: a required column is missing, a value is malformed, or no turns.
    """
    calls: list[Call] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise cli.BadInput(f"the calls CSV has no {', '.join(missing)} column")
        current: list[dict[str, str]] = []
        for line, row in enumerate(reader, start=2):
            if not row["call_uuid"]:
                raise cli.BadInput(f"the calls CSV has no call_uuid on line {line}")
            if current and row["call_uuid"] != current[0]["call_uuid"]:
                calls.append(_call(current))
                current = []
            current.append(row)
        if current:
            calls.append(_call(current))
    uuids = [c.uuid for c in calls]
    if len(set(uuids)) != len(uuids):
        raise cli.BadInput("the calls CSV does not keep each call's turns together")
    if not calls:
        raise cli.BadInput("the calls CSV has no turns")
    return calls


def _call(rows: list[dict[str, str]]) -> Call:
    first = rows[0]
    turns = []
    for row in sorted(rows, key=lambda r: _int(r, "turn_index") or 0):
        turns.append(
            Turn(
                index=_int(row, "turn_index") or 0,
                reftime=_time(row, "reftime"),
                bot=row.get("bot_response") or "",
                caller=row.get("primary_utterance") or "",
                audio_url=row.get("audio_url") or "",
            )
        )
    return Call(
        uuid=first["call_uuid"],
        turns=tuple(turns),
        call_url=first.get("call_url") or "",
        flow_uuid=first.get("flow_uuid") or "",
        client_uuid=first.get("client_uuid") or "",
        language=first.get("language") or "",
        template_id=_int(first, "template_id"),
        client_id=_int(first, "client_id"),
        flow_id=_int(first, "flow_id"),
        call_type=(first.get("call_type") or "").upper(),
        timezone=first.get("timezone") or "",
        started=_time(first, "call_started_at"),
    )


def _time(row: Mapping[str, str], key: str) -> datetime | None:
    value = (row.get(key) or "").strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise cli.BadInput(f"column {key}: expected an ISO 8601 time, got {value!r}") from None


def _int(row: Mapping[str, str], key: str) -> int | None:
    value = (row.get(key) or "").strip()
    if not value:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise cli.BadInput(f"column {key}: expected an integer, got {value!r}") from None


# --- judging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    turn_index: int | None
    evidence: str
    audio_url: str = ""


@dataclass(frozen=True)
class Judgement:
    call: Call
    status: str
    """"judged" or "failed"."""
    findings: tuple[Finding, ...] = ()
    error: str = ""
    tokens: int = 0

    @property
    def is_breach(self) -> bool:
        return bool(self.findings)


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
    margin = max(0, (_EVIDENCE_CHARS - (end - start)) // 2)
    left, right = max(0, start - margin), min(len(text), end + margin)
    return ("…" if left else "") + text[left:right].strip() + ("…" if right < len(text) else "")


def judge_with_rules(policy: Policy, calls: Sequence[Call]) -> list[Judgement]:
    return [
        Judgement(call, "judged", tuple(check_hours(policy, call) + check_phrases(policy, call)))
        for call in calls
    ]


# --- the LLM judge -------------------------------------------------------------------------


_URL = re.compile(r"\bhttps?://\S+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{6,}\d(?!\w)")
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
# \w stops at Indic vowel signs, so a name's end is checked against those scripts too.
_WORD_CHAR = r"[\w\u0900-\u0DFF]"


class Redactor:
    """Replaces personal data with placeholders: URLs, e-mail addresses, phone numbers,
    every other number (any script's digits), and the given names (whole words)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = sorted({n for n in names if n.strip()}, key=len, reverse=True)
        self._names = (
            re.compile(
                rf"(?<!{_WORD_CHAR})(?:{'|'.join(map(re.escape, names))})(?!{_WORD_CHAR})",
                re.IGNORECASE,
            )
            if names
            else None
        )

    def __call__(self, text: str) -> str:
        text = _URL.sub("[URL]", text)
        text = _EMAIL.sub("[EMAIL]", text)
        text = _PHONE.sub("[PHONE]", text)
        text = _NUMBER.sub("[NUMBER]", text)
        if self._names is not None:
            text = self._names.sub("[NAME]", text)
        return text


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
    def judge_name(self) -> str:
        return f"llm:{self.model}"


class _Retryable(Exception):
    """A failure worth another attempt (timeouts, rate limits, server errors, a reply
    that is not the JSON asked for)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Unreachable(_Retryable):
    """No connection to the endpoint at all; fatal once the attempts are used up."""


class _CallFailed(Exception):
    """This call's request was refused (a 4xx other than auth); no retry."""


class LlmEndpointError(cli.ComponentError):
    """The endpoint is unusable for every call: the step fails (exit 13, as an outage may
    pass)."""


class LlmRejected(LlmEndpointError):
    """The endpoint refuses the configuration (credentials, URL, model): exit 2, since
    retrying will not help."""

    exit_code = cli.EXIT_BAD_INPUT


class _Aborted(Exception):
    pass


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
        self._urlopen = urlopen
        self._abort = threading.Event()
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
            return Judgement(call, "judged", tuple(hours))
        messages = self.messages(call, rules, disclosures)
        allowed = {r.id for r in (*rules, *disclosures)}
        try:
            findings, tokens = self._ask(messages, allowed, call)
        except _Aborted:
            return Judgement(call, "failed", tuple(hours), error="aborted: the step is failing")
        except LlmEndpointError as exc:
            # Every other call would fail the same way: stop them at their next attempt.
            with self._fatal_lock:
                if self._fatal is None:
                    self._fatal = exc
            self._abort.set()
            return Judgement(call, "failed", tuple(hours), error=str(exc))
        except (_Retryable, _CallFailed) as exc:
            logger.warning("call %s: judgement failed: %s", call.uuid, exc)
            return Judgement(call, "failed", tuple(hours), error=str(exc))
        return Judgement(call, "judged", tuple(hours + findings), tokens=tokens)

    def messages(
        self,
        call: Call,
        rules: Sequence[PhraseRule],
        disclosures: Sequence[DisclosureRule],
    ) -> list[dict[str, str]]:
        """The chat messages for one call; every transcript line is redacted."""
        lines = [
            "You audit the phone calls of a company's voice bot for compliance.",
            f'Judge the whole call against these rules of the policy "{self.policy.name}" '
            f"(version {self.policy.version}):",
        ]
        for rule in rules:
            speaker = {"bot": "the bot", "caller": "the caller", "any": "anyone"}[rule.speaker]
            examples = "; ".join(f'"{p}"' for p in rule.phrases[:6])
            lines.append(f"- {rule.id}: {rule.description} (said by {speaker}; e.g. {examples})")
        for rule in disclosures:
            lines.append(
                f"- {rule.id}: breached when this is missing: {rule.description} "
                f"(must be said within the bot's first {rule.within_bot_turns} turn(s))"
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

    def _ask(
        self, messages: list[dict[str, str]], allowed: set[str], call: Call
    ) -> tuple[list[Finding], int]:
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=_backoff,
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    body = self._post(messages)
                    return self._parse(body, allowed, call)
        except _Unreachable as exc:
            raise LlmEndpointError(
                f"LLM endpoint {self.config.endpoint} is unreachable after "
                f"{self.config.max_attempts} attempts: {exc}"
            ) from None
        except _Retryable as exc:
            raise _Retryable(f"{exc} (after {self.config.max_attempts} attempts)") from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying always returns or raises

    def _sleep(self, seconds: float) -> None:
        if self._abort.wait(seconds):
            raise _Aborted

    def _post(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        if self._abort.is_set():
            raise _Aborted
        payload = {
            "model": self.config.model,
            "messages": messages,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
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
                raise _Retryable(f"timed out after {self.config.timeout_seconds:g}s") from None
            raise _Unreachable(str(reason)) from None
        except TimeoutError:
            raise _Retryable(f"timed out after {self.config.timeout_seconds:g}s") from None
        except (ConnectionError, OSError) as exc:
            # The server accepted the connection and then dropped it: transient.
            raise _Retryable(f"connection lost: {exc}") from None
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable("the endpoint did not answer with JSON") from None
        if not isinstance(body, dict):
            raise _Retryable("the endpoint's answer is not a JSON object")
        return body

    def _parse(
        self, body: dict[str, Any], allowed: set[str], call: Call
    ) -> tuple[list[Finding], int]:
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _Retryable("the answer has no choices[0].message.content") from None
        verdict = _json_object(content)
        breaches = verdict.get("breaches") if verdict is not None else None
        if not isinstance(breaches, list):
            raise _Retryable('the model did not answer {"breaches": [...]}')
        turns = {t.index: t for t in call.turns}
        findings: dict[str, Finding] = {}
        for item in breaches:
            if not isinstance(item, dict) or item.get("rule") not in allowed:
                raise _Retryable(f"the model named an unknown rule: {str(item)[:80]}")
            turn = item.get("turn")
            turn = turn if isinstance(turn, int) and turn in turns else None
            evidence = str(item.get("evidence") or "")[:_EVIDENCE_CHARS]
            audio = turns[turn].audio_url if turn is not None else ""
            rule = item["rule"]
            findings.setdefault(
                rule, Finding(rule, self.policy.severity(rule), turn, evidence, audio)
            )
        usage = body.get("usage") or {}
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else 0
        return list(findings.values()), tokens if isinstance(tokens, int) else 0


def _http_error(exc: urllib.error.HTTPError, endpoint: str) -> Exception:
    status = exc.code
    if status in (401, 403):
        return LlmRejected(
            f"LLM endpoint rejected the credentials (HTTP {status}): check LLM_API_KEY"
        )
    if status == 404:
        return LlmRejected(
            f"LLM endpoint answered HTTP 404 for {endpoint}: check LLM_BASE_URL and LLM_MODEL"
        )
    if status in (408, 409, 425, 429) or status >= 500:
        return _Retryable(f"HTTP {status}", _retry_after(exc.headers.get("Retry-After")))
    return _CallFailed(f"the endpoint refused the request: HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _backoff(state: RetryCallState) -> float:
    """Exponential (initial * 2^(attempt-1), capped), or a longer Retry-After."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_INITIAL_SECONDS * 2 ** (state.attempt_number - 1))
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, _Retryable) and error.retry_after is not None:
        delay = max(delay, min(BACKOFF_MAX_SECONDS, error.retry_after))
    return delay


def _json_object(content: Any) -> dict[str, Any] | None:
    if not isinstance(content, str):
        return None
    text = content.strip()
    # Some models wrap JSON in a Markdown fence even when asked not to.
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def llm_config(*, timeout_seconds: float, max_attempts: int, concurrency: int) -> LlmConfig:
    """The LLM judge's configuration from its declared environment variables."""
    if timeout_seconds <= 0 or max_attempts < 1 or concurrency < 1:
        raise cli.BadInput(
            "llm_timeout_seconds must be > 0, llm_max_attempts and llm_concurrency >= 1"
        )
    base_url = cli.required_env("LLM_BASE_URL", "an OpenAI-compatible endpoint for judge=llm")
    if not base_url.startswith(("http://", "https://")):
        raise cli.BadInput(f"LLM_BASE_URL must be an http(s) URL, got {base_url!r}")
    return LlmConfig(
        base_url=base_url,
        model=cli.required_env("LLM_MODEL", "the model name for judge=llm"),
        api_key=os.environ.get("LLM_API_KEY", "").strip(),
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        concurrency=concurrency,
    )


# --- output --------------------------------------------------------------------------------


def judgement_record(judgement: Judgement, policy: Policy, judge: str) -> dict[str, Any]:
    """One line of the `judgements` output."""
    call = judgement.call
    started = call.started_at
    return {
        "call_uuid": call.uuid,
        "call_url": call.call_url,
        "audio_url": call.turns[0].audio_url if call.turns else "",
        "flow_uuid": call.flow_uuid,
        "client_uuid": call.client_uuid,
        "reftime": started.isoformat() if started else None,
        "language": call.language,
        "template_id": call.template_id,
        "flow_id": call.flow_id,
        "call_type": call.call_type,
        "turns": len(call.turns),
        "status": judgement.status,
        "is_breach": judgement.is_breach,
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity,
                "turn_index": f.turn_index,
                "evidence": f.evidence,
                "audio_url": f.audio_url,
            }
            for f in judgement.findings
        ],
        "error": judgement.error,
        "tokens": judgement.tokens,
        "judge": judge,
        "policy_version": policy.version,
    }


def judge_calls(
    calls_csv: Path,
    *,
    judge: str,
    policy_yaml: str,
    out: Path,
    llm: Callable[[], LlmConfig] | None = None,
) -> tuple[int, int, str]:
    """Judges every call of `calls_csv`; writes JSON lines to `out`. Returns (judged,
    failed, policy version).

    Raises:
        cli.BadInput: bad policy, judge or calls CSV (checked before any call is judged).
        LlmEndpointError: the LLM endpoint is unusable.
        cli.ComponentError: every call failed to be judged.
    """
    if judge not in JUDGES:
        raise cli.BadInput(f"judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    policy = read_policy(policy_yaml)
    config = llm() if judge == "llm" and llm is not None else None
    if judge == "llm" and config is None:
        raise cli.BadInput("judge=llm needs the LLM configuration")
    calls = read_calls(calls_csv)
    logger.info(
        "judging %d calls against policy %s (version %s) with the %s judge",
        len(calls),
        policy.source,
        policy.version,
        judge,
    )
    if config is None:
        judgements, name = judge_with_rules(policy, calls), "rules"
    else:
        judgements, name = LlmJudge(config, policy).judge(calls), config.judge_name
    failed = [j for j in judgements if j.status == "failed"]
    if failed and len(failed) == len(judgements):
        raise cli.ComponentError(
            f"all {len(failed)} calls failed to be judged; the first: {failed[0].error}"
        )
    with output_path(out).open("w", encoding="utf-8") as f:
        for judgement in judgements:
            record = judgement_record(judgement, policy, name)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    breaches = sum(1 for j in judgements if j.is_breach)
    logger.info(
        "judged %d calls: %d in breach, %d failed",
        len(judgements) - len(failed),
        breaches,
        len(failed),
    )
    return len(judgements) - len(failed), len(failed), policy.version


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="judge_compliance", description=__doc__)
    parser.add_argument("--calls", type=Path, required=True, help="input: the turns CSV")
    parser.add_argument("--judge", default="rules")
    parser.add_argument("--policy-yaml", default="")
    parser.add_argument("--llm-concurrency", type=cli.integer, default=4)
    parser.add_argument("--llm-max-attempts", type=cli.integer, default=4)
    parser.add_argument("--llm-timeout-seconds", type=cli.number, default=60.0)
    parser.add_argument("--judgements", type=Path, required=True, help="output: JSON lines")
    parser.add_argument("--judged-count", type=Path, required=True, help="output")
    parser.add_argument("--failed-count", type=Path, required=True, help="output")
    parser.add_argument("--policy-version", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        judged, failed, version = judge_calls(
            args.calls,
            judge=args.judge.strip(),
            policy_yaml=args.policy_yaml,
            out=args.judgements,
            llm=lambda: llm_config(
                timeout_seconds=args.llm_timeout_seconds,
                max_attempts=args.llm_max_attempts,
                concurrency=args.llm_concurrency,
            ),
        )
        write_parameter(args.judged_count, judged)
        write_parameter(args.failed_count, failed)
        write_parameter(args.policy_version, version)

    return cli.run("judge_compliance", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
