"""The compliance policy: a versioned YAML file of phrase rules, required disclosures and
calling hours, parsed and validated once into frozen values."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from skit_components import cli

from .calls import Call

BUNDLED_POLICY = Path(__file__).resolve().parent.parent / "policy.yaml"
"""The default policy, beside the package in the image folder (and in the image's /app)."""

_SEVERITIES = ("low", "medium", "high")
_SPEAKERS = ("bot", "caller", "any")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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


Rule = PhraseRule | DisclosureRule | HoursRule


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

    @property
    def all_rules(self) -> tuple[Rule, ...]:
        return (*self.rules, *self.disclosures, *self.hours)

    def severity(self, rule_id: str) -> str:
        for rule in self.all_rules:
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
    every: tuple[Rule, ...] = (*rules, *disclosures, *hours)
    for rule in every:
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
