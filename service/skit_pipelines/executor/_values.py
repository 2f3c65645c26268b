"""Parameter values as the IR types them: coercion, command-line text, output files."""

from __future__ import annotations

import json
from typing import Any


class ParameterTypeError(ValueError):
    """A value does not fit its declared parameter type."""


def coerce(value: Any, parameter_type: str | None) -> Any:
    """Converts a value to the Python type of an IR parameterType.

    The IR stores every number as a double (an int default of 200 reads back as 200.0)
    and loop items or upstream outputs may arrive as JSON text, so inputs are
    normalised before they reach a command line or a condition.
    """
    if value is None or parameter_type is None:
        return value
    try:
        match parameter_type:
            case "STRING":
                return value if isinstance(value, str) else json.dumps(value)
            case "NUMBER_INTEGER":
                return _to_int(value)
            case "NUMBER_DOUBLE":
                if isinstance(value, bool):
                    raise ParameterTypeError("a boolean is not a number")
                return float(value)
            case "BOOLEAN":
                return _to_bool(value)
            case "LIST":
                return _to_container(value, list)
            case "STRUCT":
                return _to_container(value, dict)
    except (TypeError, ValueError) as exc:
        raise ParameterTypeError(f"{value!r} is not a valid {parameter_type}: {exc}") from None
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ParameterTypeError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.strip()
        try:
            return int(value)
        except ValueError:
            value = float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ParameterTypeError("not an integral number")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise ParameterTypeError("not a boolean")


def _to_container(value: Any, kind: type) -> Any:
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, tuple) and kind is list:
        value = list(value)
    if not isinstance(value, kind):
        raise ParameterTypeError(f"not a {kind.__name__}")
    return value


def to_text(value: Any) -> str:
    """The command-line form: strings raw, numbers and booleans as JSON, containers as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value)


def parse_output(text: str, parameter_type: str | None) -> Any:
    """Reads an output parameter file's content as its declared type."""
    if parameter_type in (None, "STRING"):
        return text
    stripped = text.strip()
    if parameter_type in ("LIST", "STRUCT"):
        return coerce(json.loads(stripped), parameter_type)
    return coerce(stripped, parameter_type)
