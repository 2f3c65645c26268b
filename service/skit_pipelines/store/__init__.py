"""Run stores: SQLite (embedded default); PostgreSQL for replicas."""

from skit_pipelines.store.base import CreateOutcome, RevisionHub, RunPage, RunQuery, RunStore
from skit_pipelines.store.sqlite import SqliteRunStore

__all__ = ["CreateOutcome", "RevisionHub", "RunPage", "RunQuery", "RunStore", "SqliteRunStore"]
