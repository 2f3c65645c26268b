"""The exit-code contract of component entrypoints, and argument types for typed inputs.

A component fails with exactly one line on stderr and a non-zero exit: 2 when its input or
configuration is wrong (retrying will not help), 13 for anything else (the gRPC INTERNAL
code, as google-cloud-pipeline-components does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import NoReturn

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 13


class ComponentError(Exception):
    """A failure the component explains in one line; exits with `exit_code`."""

    exit_code = EXIT_INTERNAL


class BadInput(ComponentError):
    """Wrong parameters, configuration or data: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are `BadInput` instead of a multi-line exit."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def run(name: str, body: Callable[[], None]) -> int:
    """Runs a component body and turns its failure into one stderr line and an exit code."""
    try:
        body()
    except ComponentError as exc:
        _fail(name, str(exc))
        return exc.exit_code
    except Exception as exc:
        _fail(name, f"internal error: {type(exc).__name__}: {exc}{_origin(exc)}")
        return EXIT_INTERNAL
    return EXIT_OK


def _fail(name: str, message: str) -> None:
    # Executors show the last stderr line as the step's error, so keep it to one line.
    print(f"{name}: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _origin(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {Path(last.filename).name}:{last.lineno})"


def integer(text: str) -> int:
    """An Integer input. KFP may render integral defaults as "200.0", so those are accepted."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def boolean(text: str) -> bool:
    """A Boolean input ("true"/"false", as KFP renders them; also 1/0)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def number(text: str) -> float:
    """A Float input."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def iso_date_or_empty(text: str) -> date | None:
    """An ISO date (YYYY-MM-DD), or "" for no bound."""
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-10-31, got {text!r}") from None


def json_list(item_type: type[int] | type[str]) -> Callable[[str], list[int | str]]:
    """A JsonArray input whose items all have `item_type`; "" is the empty list.

    Integer items may arrive as integral floats ([1.0, 2.0]): list parameters travel as
    google.protobuf.Value, whose only number type is a double.
    """

    def parse(text: str) -> list[int | str]:
        if not text.strip():
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise argparse.ArgumentTypeError(f"expected a JSON array, got {text!r}") from None
        if not isinstance(value, list):
            raise argparse.ArgumentTypeError(f"expected a JSON array, got {text!r}")
        items: list[int | str] = []
        bad: list[object] = []
        for v in value:
            item = _as(item_type, v)
            if item is None:
                bad.append(v)
            else:
                items.append(item)
        if bad:
            raise argparse.ArgumentTypeError(
                f"expected a JSON array of {item_type.__name__}, got items {bad!r}"
            )
        return items

    parse.__name__ = f"json_list[{item_type.__name__}]"
    return parse


def _as(item_type: type[int] | type[str], value: object) -> int | str | None:
    # bool is an int subclass; true/false are not ids.
    if isinstance(value, bool):
        return None
    if item_type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, item_type) else None


def required_env(name: str, purpose: str) -> str:
    """The value of an env var the component declares (`skit.ai/env`); BadInput when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise BadInput(f"{name} is not set: the step needs {purpose}")
    return value
