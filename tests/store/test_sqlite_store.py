"""SqliteRunStore specifics: its schema version. The behaviour every store shares is in
test_store_contract.py."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState
from skit_pipelines.store import SqliteRunStore
from skit_pipelines.store.sqlite import MIGRATIONS

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_run(run_id: str = "run-a") -> Run:
    return Run(
        id=run_id,
        pipeline="random-sample-calls",
        pipeline_version="sha256:abc",
        parameters={},
        labels={},
        state=RunState.QUEUED,
        create_time=T0,
        update_time=T0,
        revision=1,
    )


async def test_schema_version_is_recorded_and_reopen_keeps_data(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.db")
    await store.create_run(make_run())
    await store.close()
    version = sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)
    reopened = SqliteRunStore(tmp_path / "runs.db")
    assert (await reopened.get_run("run-a")).id == "run-a"
    await reopened.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        SqliteRunStore(tmp_path / "runs.db")
