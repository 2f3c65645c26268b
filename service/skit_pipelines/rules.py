"""Parameter rules: what a pipeline's parameter values must meet besides their types.

A pipeline module declares them beside its `@dsl.pipeline` function, as a module-level
`rules` dict from parameter name to one rule or a list of them:

    from skit_pipelines.rules import Date, Each, OneOf, Range, TimeZone

    rules = {
        "start_date": Date(allow_empty=True),
        "end_date": Date(allow_empty=True, not_before="start_date"),
        "timezone": TimeZone(),
        "call_type": OneOf("INBOUND", "OUTBOUND", allow_empty=True),
        "flow_ids": Each(Range(minimum=1, integer=True)),
        "call_quantity": Range(minimum=1),
    }

The catalog reads them when it compiles the module, checks that they fit the parameters
(and that every default meets them), keeps them with the compiled IR, and CreateRun
refuses a value that breaks one with INVALID_ARGUMENT naming `run.parameters.<name>`: a
value its step would reject never becomes a FAILED run. GetPipeline shows them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_SHOWN_CHARS = 80
"""A value longer than this is cut in messages: they name it, they need not repeat it."""
_MAX_LISTED = 20
"""How many known names `unknown_name_hint` lists before it stops."""
_CLOSE_MATCH_CUTOFF = 0.6
"""difflib's similarity from which a known name is offered as "did you mean"."""


def shown(value: Any) -> str:
    """A value as it reads in a message: JSON, whole numbers without a fraction (every
    number arrives as a double, so 5 would read 5.0), long values cut."""
    text = json.dumps(_whole(value), ensure_ascii=False)
    if len(text) > _MAX_SHOWN_CHARS:
        return text[: _MAX_SHOWN_CHARS - 1] + "…"
    return text


def _whole(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    return value


def did_you_mean(word: str, known: Iterable[str]) -> str | None:
    """The known name `word` was most likely meant to be, if one is close enough."""
    candidates = list(known)
    folded = {candidate.casefold(): candidate for candidate in candidates}
    if word.casefold() in folded:
        return folded[word.casefold()]
    # Imported here: only an error message needs it, and it is 2-4 ms of the server's start.
    import difflib

    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=_CLOSE_MATCH_CUTOFF)
    return matches[0] if matches else None


def unknown_name_hint(word: str, known: Sequence[str]) -> str:
    """What follows "unknown X": "did you mean Y? known: a, b, c" (the list cut when long)."""
    listed = ", ".join(known[:_MAX_LISTED]) or "none"
    if len(known) > _MAX_LISTED:
        listed += f" and {len(known) - _MAX_LISTED} more"
    guess = did_you_mean(word, known)
    return f"did you mean {guess}? known: {listed}" if guess else f"known: {listed}"


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@dataclass(frozen=True)
class Problem:
    """A value breaking a rule: why, and where below the parameter (e.g. "[2]")."""

    description: str
    where: str = ""


# Every rule below has:
#   description: what a value must be, in words ("a date YYYY-MM-DD (or empty)");
#   problems(value, parameters): what is wrong with `value`, none when it meets the rule
#     (`parameters` are the run's other values, for a rule that compares with them);
#   to_json(): the rule as JSON, which `rule_from_json` reads back (the catalog's cache).


def _string_problem(value: Any) -> Problem | None:
    """Why a string rule cannot even look at `value` (None when it can)."""
    if not isinstance(value, str):
        return Problem(f"must be a string, got {shown(value)}")
    return None


def _or_empty(text: str, allow_empty: bool) -> str:
    return f"{text} (or empty)" if allow_empty else text


@dataclass(frozen=True)
class Date:
    """A calendar date written YYYY-MM-DD (the steps' --start-date and --end-date)."""

    allow_empty: bool = False
    """"" passes too (the steps read it as "no bound")."""
    not_before: str = ""
    """Another date parameter this one may not precede, when both are set."""
    kind: ClassVar[str] = "date"

    @property
    def description(self) -> str:
        text = _or_empty("a date YYYY-MM-DD", self.allow_empty)
        if self.not_before:
            text += f", not before {self.not_before}"
        return text

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        problem = _string_problem(value)
        if problem is not None:
            return [problem]
        if value == "" and self.allow_empty:
            return []
        day = _parse_date(value)
        if day is None:
            return [Problem(f"must be {self.description}, got {shown(value)}")]
        other = _parse_date(parameters.get(self.not_before)) if self.not_before else None
        if other is not None and day < other:
            return [
                Problem(
                    f"must not be before {self.not_before} ({other.isoformat()}),"
                    f" got {shown(value)}"
                )
            ]
        return []

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "allow_empty": self.allow_empty, "not_before": self.not_before}


def _parse_date(value: Any) -> dt.date | None:
    # Strictly YYYY-MM-DD: date.fromisoformat also takes 20261031 and 2026-W44-6.
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class TimeZone:
    """An IANA time zone name, e.g. Asia/Kolkata or UTC, as zoneinfo knows it."""

    allow_empty: bool = False
    kind: ClassVar[str] = "time_zone"

    @property
    def description(self) -> str:
        return _or_empty("an IANA time zone such as Asia/Kolkata or UTC", self.allow_empty)

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        problem = _string_problem(value)
        if problem is not None:
            return [problem]
        if (value == "" and self.allow_empty) or _is_time_zone(value):
            return []
        text = f"must be {self.description}, got {shown(value)}"
        guess = did_you_mean(value, sorted(_time_zones()))
        if guess:
            text += f"; did you mean {guess}?"
        return [Problem(text)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "allow_empty": self.allow_empty}


def _is_time_zone(name: str) -> bool:
    # What the steps do (ZoneInfo(name)), for names the tz database lists: ZoneInfo also
    # loads any file below the zoneinfo directory, such as "posixrules". Without a list
    # (no tz database found) ZoneInfo alone decides, as it does in the steps.
    if not _surely_listed(name):
        zones = _time_zones()
        if zones and name not in zones:
            return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
_ZONE_FILE_MAGIC = b"TZif"
_UNLISTED_ZONE_DIRS = frozenset({"right", "posix"})


def _surely_listed(name: str) -> bool:
    """Whether zoneinfo.available_timezones() lists `name`, told from the key's own file:
    the listing opens every file of the tz database (~30 ms), and the catalog checks the
    pipelines' time zone defaults at every start. False means "ask the listing". It
    follows the listing's walk of each zoneinfo directory: top-level right/ and posix/
    and symlinked directories skipped, files starting with TZif, "posixrules" dropped."""
    parts = name.split("/")
    if name == "posixrules" or parts[0] in _UNLISTED_ZONE_DIRS or not _ZONE_KEY.fullmatch(name):
        return False
    for root in zoneinfo.TZPATH:
        path = os.path.join(root, name)
        directories = (os.path.join(root, *parts[:i]) for i in range(1, len(parts)))
        if any(os.path.islink(d) for d in directories):
            continue
        try:
            with open(path, "rb") as file:
                if file.read(len(_ZONE_FILE_MAGIC)) == _ZONE_FILE_MAGIC:
                    return True
        except OSError:
            continue
    return False


@dataclass(frozen=True, init=False)
class OneOf:
    """One of a fixed set of strings (compared exactly)."""

    values: tuple[str, ...]
    allow_empty: bool = False
    kind: ClassVar[str] = "one_of"

    def __init__(self, *values: str, allow_empty: bool = False) -> None:
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError("OneOf needs at least one string value")
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "allow_empty", allow_empty)

    @property
    def description(self) -> str:
        return _or_empty(f"one of {', '.join(self.values)}", self.allow_empty)

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        problem = _string_problem(value)
        if problem is not None:
            return [problem]
        if (value == "" and self.allow_empty) or value in self.values:
            return []
        text = f"must be {self.description}, got {shown(value)}"
        guess = did_you_mean(value, self.values)
        if guess:
            text += f"; did you mean {guess}?"
        return [Problem(text)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values), "allow_empty": self.allow_empty}


@dataclass(frozen=True)
class Range:
    """A number from `minimum` to `maximum`, both included (either may be left open)."""

    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    """Whole numbers only: for the items of a list[int] (an INTEGER parameter's type
    already says so)."""
    kind: ClassVar[str] = "range"

    def __post_init__(self) -> None:
        if self.minimum is None and self.maximum is None:
            raise ValueError("Range needs a minimum, a maximum or both")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"Range minimum {self.minimum} is above its maximum {self.maximum}")

    @property
    def description(self) -> str:
        low, high = _number(self.minimum), _number(self.maximum)
        # The parameter's type names the kind of number; `integer` is said for list items.
        if low is not None and high is not None:
            text = f"from {low} to {high}"
        elif low is not None:
            text = f"at least {low}"
        else:
            text = f"at most {high}"
        if not self.integer:
            return text
        return f"an integer {text}" if text.startswith("from") else f"an integer of {text}"

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if (
            not is_number
            or not math.isfinite(value)
            or (self.integer and not float(value).is_integer())
            or (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            return [Problem(f"must be {self.description}, got {shown(value)}")]
        return []

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "integer": self.integer,
        }


def _number(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Pattern:
    """A string the regular expression (Python `re` syntax) matches in full."""

    regex: str
    allow_empty: bool = False
    meaning: str = ""
    """What the pattern stands for, in words ("a language code such as en"): messages
    say it rather than the expression."""
    kind: ClassVar[str] = "pattern"

    def __post_init__(self) -> None:
        re.compile(self.regex)  # a typo in a rule fails when the catalog loads

    @property
    def description(self) -> str:
        return _or_empty(self.meaning or f"a string matching {self.regex}", self.allow_empty)

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        problem = _string_problem(value)
        if problem is not None:
            return [problem]
        if (value == "" and self.allow_empty) or _compiled(self.regex).fullmatch(value):
            return []
        return [Problem(f"must be {self.description}, got {shown(value)}")]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "regex": self.regex,
            "allow_empty": self.allow_empty,
            "meaning": self.meaning,
        }


@functools.cache
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


@dataclass(frozen=True)
class NonEmpty:
    """A list with at least one item."""

    kind: ClassVar[str] = "non_empty"

    @property
    def description(self) -> str:
        return "a list of at least one item"

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        if isinstance(value, list) and value:
            return []
        return [Problem("must not be empty" if value == [] else f"must be {self.description}")]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind}


_ITEM_RULES = (Date, TimeZone, OneOf, Range, Pattern)


@dataclass(frozen=True)
class Each:
    """`rule` applied to every item of a list parameter."""

    rule: Date | TimeZone | OneOf | Range | Pattern
    kind: ClassVar[str] = "each"

    def __post_init__(self) -> None:
        if not isinstance(self.rule, _ITEM_RULES):
            raise ValueError(f"Each takes a rule for one value, not {self.rule!r}")

    @property
    def description(self) -> str:
        return f"each item: {self.rule.description}"

    def problems(self, value: Any, parameters: Mapping[str, Any]) -> list[Problem]:
        if not isinstance(value, list):
            return [Problem(f"must be a list, got {shown(value)}")]
        return [
            Problem(problem.description, f"[{index}]{problem.where}")
            for index, item in enumerate(value)
            for problem in self.rule.problems(item, parameters)
        ]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "rule": self.rule.to_json()}


ParameterRule = Date | TimeZone | OneOf | Range | Pattern | NonEmpty | Each
"""Every kind of rule."""

STRING_RULES = (Date, TimeZone, OneOf, Pattern)
"""The rules of a STRING parameter (or, in Each, of a list's string items)."""
NUMBER_RULES = (Range,)
"""The rules of an INTEGER or DOUBLE parameter (or, in Each, of a list's number items)."""
LIST_RULES = (NonEmpty, Each)
"""The rules of a LIST parameter."""


def rule_from_json(data: Mapping[str, Any]) -> ParameterRule:
    """Reads what `Rule.to_json` wrote."""
    kind = data.get("kind")
    if kind == Date.kind:
        return Date(allow_empty=bool(data["allow_empty"]), not_before=str(data["not_before"]))
    if kind == TimeZone.kind:
        return TimeZone(allow_empty=bool(data["allow_empty"]))
    if kind == OneOf.kind:
        return OneOf(*(str(v) for v in data["values"]), allow_empty=bool(data["allow_empty"]))
    if kind == Range.kind:
        return Range(
            minimum=data["minimum"], maximum=data["maximum"], integer=bool(data["integer"])
        )
    if kind == Pattern.kind:
        return Pattern(
            str(data["regex"]), allow_empty=bool(data["allow_empty"]), meaning=str(data["meaning"])
        )
    if kind == NonEmpty.kind:
        return NonEmpty()
    if kind == Each.kind:
        inner = rule_from_json(data["rule"])
        if not isinstance(inner, _ITEM_RULES):
            raise ValueError(f"Each of {inner!r}")
        return Each(inner)
    raise ValueError(f"unknown parameter rule kind {kind!r}")


def declared_rules(declared: Any, source: str) -> dict[str, tuple[ParameterRule, ...]]:
    """A module's `rules` as parameter name -> rules; ValueError naming `source` when it
    is not a dict of rules."""
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise ValueError(f"{source}: `rules` must be a dict of parameter name to rules")
    rules: dict[str, tuple[ParameterRule, ...]] = {}
    for name, value in declared.items():
        items = tuple(value) if isinstance(value, list | tuple) else (value,)
        for item in items:
            if not isinstance(item, ParameterRule):
                raise ValueError(f"{source}: rules[{name!r}] holds {item!r}, which is no rule")
        rules[str(name)] = items
    return rules
