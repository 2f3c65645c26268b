"""Figures and the table `make bench` prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None
    """The baseline's figure, measured in the same run; None when the target is absolute."""
    detail: str
    target: str
    met: bool
    spread: str = ""
    """The value's range over the repetitions (min-max), when it was repeated."""


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def spread(values: Sequence[float]) -> str:
    """min-max of repeated measurements, in the figures' format."""
    if len(values) < 2:
        return "one run"
    return f"{_number(min(values))}-{_number(max(values))}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "skipped"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def render(figures: Sequence[Figure]) -> str:
    lines = [
        "| benchmark | value | spread | baseline (same run) | detail | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        value = _number(f.value) + ("" if math.isnan(f.value) else f" {f.unit}")
        baseline = f"{_number(f.baseline)} {f.unit}" if f.baseline is not None else "-"
        lines.append(
            f"| {f.name} | {value} | {f.spread or '-'} | {baseline} | {f.detail} | {f.target} | "
            f"{'yes' if f.met else 'target missed'} |"
        )
    return "\n".join(lines)
