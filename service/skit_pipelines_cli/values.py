"""Values on the command line: --param and --label assignments, run states, times, counts."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any, cast

from skit.pipelines.v1 import run_pb2


class UsageError(Exception):
    """Bad input found after argument parsing (e.g. an unreadable --param-json file)."""


def parse_value(text: str) -> Any:
    """A --param value: JSON when it parses (5, true, [1,2], {"a":1}, null), else the text.

    NaN and Infinity stay text: Python's json accepts them, but they are not JSON and
    no parameter type takes them.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE with the value parsed by parse_value."""
    key, value = _split_assignment(text)
    return key, parse_value(value)


def parse_label(text: str) -> tuple[str, str]:
    """KEY=VALUE with the value kept as text."""
    return _split_assignment(text)


def _split_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_run_state(text: str) -> run_pb2.RunState:
    """A RunState from "running", "RUNNING" or "RUN_STATE_RUNNING"."""
    label = text.strip().upper().removeprefix("RUN_STATE_")
    names = run_pb2.RunState.keys()
    if label != "UNSPECIFIED" and f"RUN_STATE_{label}" in names:
        # protoc's .pyi types the values as RunState, and EnumTypeWrapper.Value as int.
        return cast(run_pb2.RunState, run_pb2.RunState.Value(f"RUN_STATE_{label}"))
    choices = ", ".join(
        name.removeprefix("RUN_STATE_").lower() for name in names if name != "RUN_STATE_UNSPECIFIED"
    )
    raise argparse.ArgumentTypeError(f"unknown state {text!r}; choose from {choices}")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-26T10:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
