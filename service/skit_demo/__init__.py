"""Deterministic, realistic demo data for the calls, metrics and annotations databases.

- `generate(calls_db_url, metrics_db_url, seed=..., calls=..., start=..., days=...,
  annotations_db_url=...)` writes any amount of it to SQLite or PostgreSQL (the CLI and
  benchmarks call this); `write_annotations` adds the annotation store to a calls database.
- `ensure_demo_data(demo_root)` gives the embedded service its SQLite databases on first
  start and returns the step environment (CALLS_DB_URL, METRICS_DB_URL, ANNOTATIONS_DB_URL)
  pointing at them, with MODEL_REGISTRY_URL: the model registry `demo_root/models` holding
  the production SLU model (`slu_model.ensure_demo_models`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from skit_demo.bootstrap import ensure_demo_data

if TYPE_CHECKING:
    from skit_demo.generator import (
        DEFAULT_CALLS,
        DEFAULT_DAYS,
        DEMO_END,
        DemoDataExists,
        DemoSummary,
        generate,
        write_annotations,
    )

_FROM_GENERATOR = frozenset(
    {
        "DEFAULT_CALLS",
        "DEFAULT_DAYS",
        "DEMO_END",
        "DemoDataExists",
        "DemoSummary",
        "generate",
        "write_annotations",
    }
)


def __getattr__(name: str) -> Any:
    # The generator is imported on first use: a service starting on a home that has its
    # demo data already needs only ensure_demo_data, and the generator is slow to import.
    if name in _FROM_GENERATOR:
        from skit_demo import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CALLS",
    "DEFAULT_DAYS",
    "DEMO_END",
    "DemoDataExists",
    "DemoSummary",
    "ensure_demo_data",
    "generate",
    "write_annotations",
]
