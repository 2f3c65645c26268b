"""Run stores: SQLite (embedded default); PostgreSQL for replicas."""

from __future__ import annotations

from typing import Any

from skit_pipelines.store.base import CreateOutcome, RevisionHub, RunPage, RunQuery, RunStore
from skit_pipelines.store.sqlite import SqliteRunStore

__all__ = [
    "CreateOutcome",
    "PostgresRunStore",
    "RevisionHub",
    "RunPage",
    "RunQuery",
    "RunStore",
    "SqliteRunStore",
]


def __getattr__(name: str) -> Any:
    # psycopg and its pool load only when PostgreSQL is used.
    if name == "PostgresRunStore":
        from skit_pipelines.store.postgres import PostgresRunStore

        return PostgresRunStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
