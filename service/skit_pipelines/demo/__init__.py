"""Deterministic, realistic demo data for the calls and metrics databases.

- `generate(calls_db_url, metrics_db_url, seed=..., calls=..., start=..., days=...)` writes
  any amount of it to SQLite or PostgreSQL (the CLI and benchmarks call this).
- `ensure_demo_data(demo_root)` gives the embedded service its two SQLite databases on first
  start and returns the step environment (CALLS_DB_URL, METRICS_DB_URL) pointing at them.
"""

from __future__ import annotations

from skit_pipelines.demo.bootstrap import ensure_demo_data
from skit_pipelines.demo.generator import (
    DEFAULT_CALLS,
    DEFAULT_DAYS,
    DEMO_END,
    DemoDataExists,
    DemoSummary,
    generate,
)

__all__ = [
    "DEFAULT_CALLS",
    "DEFAULT_DAYS",
    "DEMO_END",
    "DemoDataExists",
    "DemoSummary",
    "ensure_demo_data",
    "generate",
]
