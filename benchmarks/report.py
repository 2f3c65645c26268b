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


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def render(figures: Sequence[Figure]) -> str:
    lines = [
        "| benchmark | value | baseline | detail | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        baseline = f"{f.baseline:.2f}" if f.baseline is not None else "-"
        lines.append(
            f"| {f.name} | {f.value:.2f} {f.unit} | {baseline} | {f.detail} | {f.target} | "
            f"{'yes' if f.met else 'NO'} |"
        )
    return "\n".join(lines)
