"""The embedded RunStore: one SQLite file in WAL mode.

All statements run on the event loop's thread through one connection: with WAL and
synchronous=NORMAL a write is a fraction of a millisecond, cheaper than a thread hop, and
a single writer keeps every read-modify-write atomic without extra locking.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import AlreadyExists, NotFound
from skit_pipelines.store import codec
from skit_pipelines.store.base import (
    CreateOutcome,
    RevisionHub,
    RunMutation,
    RunPage,
    RunQuery,
    RunStore,
    ScheduleMutation,
    ScheduleOutcome,
    SchedulePage,
    schedule_exists,
    schedule_not_found,
    sortable_time,
)
from skit_pipelines.store.leases import LeaseTable, LocalRunLeases
from skit_pipelines.store.listing import Dialect, list_runs_statement
from skit_pipelines.triggers import Schedule, schedule_from_dict, schedule_to_dict

logger = logging.getLogger(__name__)

_DECODED_RUNS = 1024
"""How many decoded runs stay in memory (the least recently read go first)."""

# Versioned migrations: index i brings the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        pipeline TEXT NOT NULL,
        state INTEGER NOT NULL,
        create_time TEXT NOT NULL,
        revision INTEGER NOT NULL,
        request_id TEXT,
        snapshot TEXT NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (create_time DESC, id DESC);
    CREATE INDEX runs_by_pipeline ON runs (pipeline, create_time DESC, id DESC);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE run_labels (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    CREATE INDEX run_labels_by_value ON run_labels (key, value);
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        state INTEGER NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE run_events (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        revision INTEGER NOT NULL,
        snapshot TEXT NOT NULL,
        PRIMARY KEY (run_id, revision)
    );
    CREATE TABLE requests (
        request_id TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE
    );
    CREATE TABLE step_cache (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        create_time TEXT NOT NULL
    );
    """,
    # 2: a request_id belongs to the principal that sent it (the run's creator), so one
    # principal can neither replay nor find out another's.
    """
    CREATE TABLE principal_requests (
        principal TEXT NOT NULL,
        request_id TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        PRIMARY KEY (principal, request_id)
    );
    INSERT INTO principal_requests (principal, request_id, request_hash, run_id)
        SELECT COALESCE(json_extract(r.snapshot, '$.creator'), ''), q.request_id,
            q.request_hash, q.run_id
        FROM requests q JOIN runs r ON r.id = q.run_id;
    DROP TABLE requests;
    ALTER TABLE principal_requests RENAME TO requests;
    """,
    # 3: ListRuns reads one index range per page (see store/listing.py): runs_by_state in
    # time order, and run_labels carries its run's create_time for run_labels_by_value.
    """
    CREATE TABLE labels_with_time (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        create_time TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    INSERT INTO labels_with_time (run_id, key, value, create_time)
        SELECT l.run_id, l.key, l.value, r.create_time
        FROM run_labels l JOIN runs r ON r.id = l.run_id;
    DROP TABLE run_labels;
    ALTER TABLE labels_with_time RENAME TO run_labels;
    CREATE INDEX run_labels_by_value ON run_labels (key, value, create_time DESC, run_id DESC);
    DROP INDEX runs_by_state;
    CREATE INDEX runs_by_state ON runs (state, create_time DESC, id DESC);
    """,
    # 4: schedules (issue 18), each one row holding its whole value; its request_id is
    # scoped to its creator, as a run's is.
    """
    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        creator TEXT NOT NULL,
        request_id TEXT,
        request_hash TEXT NOT NULL,
        snapshot TEXT NOT NULL
    );
    CREATE UNIQUE INDEX schedules_by_request ON schedules (creator, request_id);
    """,
)

_DIALECT = Dialect(placeholder="?", time_value=sortable_time, label_join="CROSS JOIN")


def _now() -> datetime:
    return datetime.now(UTC)


class SqliteRunStore(RunStore):
    def __init__(
        self, path: Path, *, history_limit: int = 10_000, hub: RevisionHub | None = None
    ) -> None:
        super().__init__(hub)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._history_limit = history_limit
        self._decoded: OrderedDict[str, Run] = OrderedDict()
        self._leases: LeaseTable = {}
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"run store schema version {version} is newer than this service "
                f"({len(MIGRATIONS)}); upgrade the service"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            logger.info("migrating run store to schema version %s", target)
            with self._transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={target}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    async def close(self) -> None:
        self._db.close()

    def leases(self, owner: str, ttl_seconds: float) -> LocalRunLeases:
        # One process uses a SQLite store, so its memory is where every lease is.
        return LocalRunLeases(owner, ttl_seconds, self._leases)

    async def create_run(self, run: Run, request_hash: str = "") -> CreateOutcome:
        with self._transaction():
            if run.request_id:
                row = self._db.execute(
                    "SELECT r.snapshot, q.request_hash FROM requests q"
                    " JOIN runs r ON r.id = q.run_id"
                    " WHERE q.principal = ? AND q.request_id = ?",
                    (run.creator, run.request_id),
                ).fetchone()
                if row is not None:
                    earlier = codec.run_from_dict(json.loads(row[0]))
                    return CreateOutcome(run=earlier, created=False, request_hash=row[1])
            exists = self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run.id,)).fetchone()
            if exists:
                raise AlreadyExists(
                    f"run runs/{run.id} already exists",
                    resource_name=f"runs/{run.id}",
                    reason="RUN_ALREADY_EXISTS",
                )
            snapshot = codec.dumps(codec.run_to_dict(run))
            create_time = sortable_time(run.create_time)
            self._db.execute(
                "INSERT INTO runs"
                " (id, pipeline, state, create_time, revision, request_id, snapshot)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.pipeline,
                    int(run.state),
                    create_time,
                    run.revision,
                    run.request_id or None,
                    snapshot,
                ),
            )
            self._db.executemany(
                "INSERT INTO run_labels (run_id, key, value, create_time) VALUES (?, ?, ?, ?)",
                [(run.id, k, v, create_time) for k, v in run.labels.items()],
            )
            self._write_steps(run, previous=None)
            self._db.execute(
                "INSERT INTO run_events (run_id, revision, snapshot) VALUES (?, ?, ?)",
                (run.id, run.revision, snapshot),
            )
            if run.request_id:
                self._db.execute(
                    "INSERT INTO requests (principal, request_id, request_hash, run_id)"
                    " VALUES (?, ?, ?, ?)",
                    (run.creator, run.request_id, request_hash, run.id),
                )
        self.hub.publish(run)
        return CreateOutcome(run=run, created=True)

    def _write_steps(self, run: Run, previous: Run | None) -> None:
        before = {s.name: s for s in previous.steps} if previous else {}
        rows = [
            (run.id, step.name, position, int(step.state), codec.dumps(codec.step_to_dict(step)))
            for position, step in enumerate(run.steps)
            if before.get(step.name) != step
        ]
        self._db.executemany(
            "INSERT INTO steps (run_id, name, position, state, detail) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, name) DO UPDATE SET position = excluded.position,"
            " state = excluded.state, detail = excluded.detail",
            rows,
        )

    def _load(self, run_id: str) -> Run:
        # Decoding is most of a read's cost, and runs are read far more often than they
        # change (GetRun polling): decode each revision once. Runs are frozen values. A
        # decoded revision still current needs only its revision number read, not the
        # snapshot's kilobytes copied out of the page.
        cached = self._decoded.get(run_id)
        if cached is not None:
            row = self._db.execute("SELECT revision FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None and row[0] == cached.revision:
                self._decoded.move_to_end(run_id)
                return cached
        row = self._db.execute(
            "SELECT revision, snapshot FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
        run = codec.run_from_dict(json.loads(row[1]))
        self._decoded[run_id] = run
        if len(self._decoded) > _DECODED_RUNS:
            self._decoded.popitem(last=False)
        return run

    async def get_run(self, run_id: str) -> Run:
        return self._load(run_id)

    async def update_run(self, run_id: str, mutate: RunMutation) -> Run:
        with self._transaction():
            current = self._load(run_id)
            changed = mutate(current)
            if changed == current:
                return current
            updated = _bump(current, changed)
            snapshot = codec.dumps(codec.run_to_dict(updated))
            self._db.execute(
                "UPDATE runs SET state = ?, revision = ?, snapshot = ? WHERE id = ?",
                (int(updated.state), updated.revision, snapshot, run_id),
            )
            self._write_steps(updated, previous=current)
            self._db.execute(
                "INSERT INTO run_events (run_id, revision, snapshot) VALUES (?, ?, ?)",
                (run_id, updated.revision, snapshot),
            )
            if updated.revision > self._history_limit:
                self._db.execute(
                    "DELETE FROM run_events WHERE run_id = ? AND revision <= ?",
                    (run_id, updated.revision - self._history_limit),
                )
        self.hub.publish(updated)
        return updated

    async def delete_run(self, run_id: str) -> None:
        with self._transaction():
            # Explicit rather than through ON DELETE CASCADE: that needs the foreign_keys
            # pragma, which a connection opened elsewhere may not set.
            for table in ("run_labels", "steps", "run_events", "requests"):
                self._db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            deleted = self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount
        self._decoded.pop(run_id, None)
        self._leases.pop(run_id, None)
        if not deleted:
            raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")

    async def list_runs(self, query: RunQuery) -> RunPage:
        statement = list_runs_statement(query, _DIALECT)
        rows = self._db.execute(statement.text, statement.args).fetchall()
        runs = [codec.run_from_dict(json.loads(r[0])) for r in rows[: query.page_size]]
        return RunPage(runs=runs, more=len(rows) > query.page_size)

    async def list_unfinished_runs(self) -> list[Run]:
        terminal = [int(s) for s in RunState if s.terminal]
        rows = self._db.execute(
            f"SELECT snapshot FROM runs WHERE state NOT IN ({','.join('?' * len(terminal))})"
            " ORDER BY create_time, id",
            terminal,
        ).fetchall()
        return [codec.run_from_dict(json.loads(r[0])) for r in rows]

    async def revisions_after(self, run_id: str, revision: int) -> list[Run] | None:
        rows = self._db.execute(
            "SELECT revision, snapshot FROM run_events WHERE run_id = ? AND revision > ?"
            " ORDER BY revision",
            (run_id, revision),
        ).fetchall()
        if rows and rows[0][0] != revision + 1:
            return None
        if not rows:
            latest = self._db.execute(
                "SELECT revision FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if latest is None:
                raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
            if latest[0] != revision:
                return None
        return [codec.run_from_dict(json.loads(r[1])) for r in rows]

    async def create_schedule(self, schedule: Schedule, request_hash: str = "") -> ScheduleOutcome:
        with self._transaction():
            if schedule.request_id:
                row = self._db.execute(
                    "SELECT snapshot, request_hash FROM schedules"
                    " WHERE creator = ? AND request_id = ?",
                    (schedule.creator, schedule.request_id),
                ).fetchone()
                if row is not None:
                    earlier = schedule_from_dict(json.loads(row[0]))
                    return ScheduleOutcome(earlier, created=False, request_hash=row[1])
            if self._db.execute("SELECT 1 FROM schedules WHERE id = ?", (schedule.id,)).fetchone():
                raise schedule_exists(schedule.id)
            self._db.execute(
                "INSERT INTO schedules (id, creator, request_id, request_hash, snapshot)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    schedule.id,
                    schedule.creator,
                    schedule.request_id or None,
                    request_hash,
                    codec.dumps(schedule_to_dict(schedule)),
                ),
            )
        return ScheduleOutcome(schedule, created=True)

    def _load_schedule(self, schedule_id: str) -> Schedule:
        row = self._db.execute(
            "SELECT snapshot FROM schedules WHERE id = ?", (schedule_id,)
        ).fetchone()
        if row is None:
            raise schedule_not_found(schedule_id)
        return schedule_from_dict(json.loads(row[0]))

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return self._load_schedule(schedule_id)

    async def update_schedule(self, schedule_id: str, mutate: ScheduleMutation) -> Schedule:
        with self._transaction():
            current = self._load_schedule(schedule_id)
            changed = mutate(current)
            if changed != current:
                self._db.execute(
                    "UPDATE schedules SET snapshot = ? WHERE id = ?",
                    (codec.dumps(schedule_to_dict(changed)), schedule_id),
                )
        return changed

    async def delete_schedule(self, schedule_id: str) -> None:
        with self._transaction():
            deleted = self._db.execute(
                "DELETE FROM schedules WHERE id = ?", (schedule_id,)
            ).rowcount
        if not deleted:
            raise schedule_not_found(schedule_id)

    async def list_schedules(self, page_size: int, after: str = "") -> SchedulePage:
        rows = self._db.execute(
            "SELECT snapshot FROM schedules WHERE id > ? ORDER BY id LIMIT ?",
            (after, page_size + 1),
        ).fetchall()
        schedules = [schedule_from_dict(json.loads(r[0])) for r in rows[:page_size]]
        return SchedulePage(schedules, more=len(rows) > page_size)

    def cache_get(self, key: str) -> Any | None:
        row = self._db.execute("SELECT value FROM step_cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def cache_put(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO step_cache (key, value, create_time) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, codec.dumps(value), _now().isoformat()),
        )

    def cache_delete(self, key: str) -> None:
        self._db.execute("DELETE FROM step_cache WHERE key = ?", (key,))


def _bump(current: Run, changed: Run) -> Run:
    return replace(changed, revision=current.revision + 1, update_time=_now())


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK around a block (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
