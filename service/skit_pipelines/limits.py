"""What one CreateRun may carry: parameter and label limits, checked before anything is
stored, so that no run is too big to list, to watch or to hand to a step's argv."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from skit_pipelines.errors import FieldViolation, InvalidArgument

LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]*$")

_KIB = 1024


@dataclass(frozen=True)
class RequestLimits:
    """Sizes and counts a request may not exceed; ServerConfig carries the configured ones."""

    max_parameter_bytes: int = 64 * _KIB
    """One parameter value: a string's UTF-8 bytes, any other value's compact JSON. Below
    Linux's 128 KiB limit on one argument, since values reach steps as arguments."""
    max_parameters: int = 100
    """Parameters in one request, known or not."""
    max_parameters_bytes: int = 256 * _KIB
    """All parameter names and values of one request together."""
    max_labels: int = 64
    """Labels on one run."""
    max_label_key_length: int = 63
    """Characters of a label key."""
    max_label_value_length: int = 63
    """Characters of a label value."""


def value_size(value: Any) -> int:
    """What a parameter value weighs: a string's UTF-8 bytes, any other value's JSON."""
    if isinstance(value, str):
        return len(value.encode())
    return len(json.dumps(value, separators=(",", ":")).encode())


def _nul_paths(value: Any, path: str) -> Iterator[str]:
    """Where a value holds a NUL character (in a string or an object key)."""
    if isinstance(value, str):
        if "\0" in value:
            yield path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if "\0" in key:
                yield path
            else:
                yield from _nul_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}[{index}]")


def check_parameters(
    parameters: Mapping[str, Any], limits: RequestLimits, *, field: str = "run.parameters"
) -> None:
    """InvalidArgument, with a field violation per offending parameter, when there are too
    many parameters, when one value or all of them are too large, or when a value holds a
    NUL character (no argv, no PostgreSQL text can carry one)."""
    if len(parameters) > limits.max_parameters:
        raise InvalidArgument(
            f"at most {limits.max_parameters} parameters, got {len(parameters)}",
            field=field,
            reason="TOO_MANY_PARAMETERS",
        )
    violations: list[FieldViolation] = []
    total = 0
    for name, value in parameters.items():
        size = value_size(value)
        total += len(name.encode()) + size
        if size > limits.max_parameter_bytes:
            violations.append(
                FieldViolation(
                    f"{field}.{name}",
                    f"the value is {size} bytes; at most {limits.max_parameter_bytes}",
                )
            )
            continue
        violations.extend(
            FieldViolation(path, "must not contain NUL characters")
            for path in _nul_paths(value, f"{field}.{name}")
        )
    if violations:
        raise InvalidArgument(
            "invalid parameters: " + "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=violations,
            reason="INVALID_PARAMETERS",
        )
    if total > limits.max_parameters_bytes:
        raise InvalidArgument(
            f"the parameters are {total} bytes together; at most {limits.max_parameters_bytes}",
            field=field,
            reason="PARAMETERS_TOO_LARGE",
        )


def check_labels(
    labels: Mapping[str, str], limits: RequestLimits, *, field: str = "run.labels"
) -> None:
    """InvalidArgument naming the first bad label: too many, a key that is not
    [a-z][a-z0-9_-]* or too long, a value too long or holding a NUL character."""
    if len(labels) > limits.max_labels:
        raise InvalidArgument(f"at most {limits.max_labels} labels, got {len(labels)}", field=field)
    for key, value in labels.items():
        if not LABEL_KEY.match(key) or len(key) > limits.max_label_key_length:
            raise InvalidArgument(
                f"label key {key[:100]!r} must match {LABEL_KEY.pattern} and have at most"
                f" {limits.max_label_key_length} characters",
                field=f"{field}.{key[:100]}",
            )
        if len(value) > limits.max_label_value_length:
            raise InvalidArgument(
                f"label value is longer than {limits.max_label_value_length} characters",
                field=f"{field}.{key}",
            )
        if "\0" in value:
            raise InvalidArgument(
                "label value must not contain NUL characters", field=f"{field}.{key}"
            )
