"""SqliteRunStore specifics: its schema version. The behaviour every store shares is in
test_store_contract.py."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState
from skit_pipelines.store import RunQuery, SqliteRunStore, codec
from skit_pipelines.store.base import sortable_time
from skit_pipelines.store.sqlite import MIGRATIONS, StoreInUse

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


async def test_request_ids_stored_before_version_2_belong_to_their_runs_creator(
    tmp_path: Path,
) -> None:
    db = sqlite3.connect(tmp_path / "runs.db")
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version=1")
    earlier = replace(make_run(), request_id="req-1", creator="alice")
    db.execute(
        "INSERT INTO runs (id, pipeline, state, create_time, revision, request_id, snapshot)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            "run-a",
            "random-sample-calls",
            1,
            T0.isoformat(),
            1,
            "req-1",
            json.dumps(codec.run_to_dict(earlier)),
        ),
    )
    db.execute("INSERT INTO requests VALUES ('req-1', 'h1', 'run-a')")
    db.commit()
    db.close()
    store = SqliteRunStore(tmp_path / "runs.db")
    replayed = await store.create_run(
        replace(make_run("run-b"), request_id="req-1", creator="alice")
    )
    assert (replayed.created, replayed.run.id, replayed.request_hash) == (False, "run-a", "h1")
    other = await store.create_run(replace(make_run("run-c"), request_id="req-1", creator="bob"))
    assert other.created
    await store.close()


async def test_runs_stored_before_version_3_list_by_label_and_state_in_time_order(
    tmp_path: Path,
) -> None:
    db = sqlite3.connect(tmp_path / "runs.db")
    for script in MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("PRAGMA user_version=2")
    older = [
        replace(make_run(f"run-{i}"), create_time=T0 + timedelta(minutes=i), labels={"team": "slu"})
        for i in range(3)
    ]
    for run in older:
        db.execute(
            "INSERT INTO runs (id, pipeline, state, create_time, revision, request_id, snapshot)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?)",
            (
                run.id,
                run.pipeline,
                int(run.state),
                sortable_time(run.create_time),
                1,
                json.dumps(codec.run_to_dict(run)),
            ),
        )
        db.execute("INSERT INTO run_labels VALUES (?, 'team', 'slu')", (run.id,))
    db.commit()
    db.close()
    store = SqliteRunStore(tmp_path / "runs.db")
    try:
        newer = replace(
            make_run("run-3"), create_time=T0 + timedelta(hours=1), labels=older[0].labels
        )
        await store.create_run(newer)
        by_label = await store.list_runs(RunQuery(labels={"team": "slu"}, page_size=2))
        assert [r.id for r in by_label.runs] == ["run-3", "run-2"] and by_label.more
        last = by_label.runs[-1]
        rest = await store.list_runs(
            RunQuery(labels={"team": "slu"}, after=(sortable_time(last.create_time), last.id))
        )
        assert [r.id for r in rest.runs] == ["run-1", "run-0"]
        by_state = await store.list_runs(RunQuery(states=frozenset({RunState.QUEUED})))
        assert [r.id for r in by_state.runs] == ["run-3", "run-2", "run-1", "run-0"]
    finally:
        await store.close()
    version = sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)


async def test_reading_a_run_leaves_no_read_snapshot_open(tmp_path: Path) -> None:
    """Statements share one cursor: a read must end its statement, or the file's WAL
    could not be checkpointed (and would grow) while the server idles after it."""
    writer = SqliteRunStore(tmp_path / "runs.db")
    await writer.create_run(make_run())
    await writer.close()
    store = SqliteRunStore(tmp_path / "runs.db")
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    other.execute("CREATE TABLE probe (x)")
    try:
        for _ in range(2):  # the first read queries and decodes, the second remembers
            await store.get_run("run-a")
            other.execute("INSERT INTO probe VALUES (1)")
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
    finally:
        other.close()
        await store.close()


async def test_a_run_read_or_written_before_is_read_without_a_statement(tmp_path: Path) -> None:
    """GetRun polling reads the same runs over and over: the store is the file's only
    writer, so what it wrote or read last is what the file holds."""
    store = SqliteRunStore(tmp_path / "runs.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        created = (await store.create_run(make_run("run-a"))).run
        await store.create_run(make_run("run-b"))
        updated = await store.update_run("run-a", lambda r: replace(r, state=RunState.RUNNING))
        written = len(statements)
        assert await store.get_run("run-a") is updated is not created
        assert (await store.get_run("run-b")).id == "run-b"
        assert statements[written:] == []
    finally:
        await store.close()
    reopened = SqliteRunStore(tmp_path / "runs.db")
    reopened._db.set_trace_callback(statements.append)
    try:
        read = len(statements)
        assert (await reopened.get_run("run-a")).state is RunState.RUNNING
        assert len(statements) == read + 1
        await reopened.get_run("run-a")
        assert len(statements) == read + 1
    finally:
        await reopened.close()


async def test_a_second_store_on_the_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    first = SqliteRunStore(tmp_path / "runs.db")
    await first.create_run(make_run())
    with pytest.raises(StoreInUse, match=f"held by process {os.getpid()}"):
        SqliteRunStore(tmp_path / "runs.db")
    await first.close()
    await first.close()
    second = SqliteRunStore(tmp_path / "runs.db")
    try:
        assert (await second.get_run("run-a")).id == "run-a"
    finally:
        await second.close()


async def test_the_file_is_refused_while_another_process_holds_it_and_freed_when_killed(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            " from skit_pipelines.store import SqliteRunStore;"
            " store = SqliteRunStore(Path(sys.argv[1])); print('open', flush=True);"
            " sys.stdin.read()",
            str(tmp_path / "runs.db"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StoreInUse, match=f"held by process {holder.pid}:"):
            SqliteRunStore(tmp_path / "runs.db")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    await SqliteRunStore(tmp_path / "runs.db").close()
