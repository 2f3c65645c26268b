"""The embedded RunStore: one SQLite file in WAL mode.

All statements run on the event loop's thread through one connection: with WAL and
synchronous=NORMAL a write is a fraction of a millisecond, cheaper than a thread hop, and
a single writer keeps every read-modify-write atomic without extra locking.

One process holds the file at a time (an exclusive lock on <file>.lock): its runs' leases
live in that process's memory, so a second server on the same file would execute them
again. Being the only writer, the store also keeps the runs it last read or wrote decoded
in memory and answers reads of them without a statement.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import AlreadyExists, NotFound
from skit_pipelines.store import codec
from skit_pipelines.store.base import (
    DEFAULT_CHANGE_LIMIT,
    ChangePage,
    CreateOutcome,
    RevisionHub,
    RunChange,
    RunMutation,
    RunPage,
    RunQuery,
    RunStore,
    ScheduleMutation,
    ScheduleOutcome,
    SchedulePage,
    change_prune_interval,
    changed_steps,
    schedule_exists,
    schedule_not_found,
    sortable_time,
    subscription_exists,
    subscription_not_found,
)
from skit_pipelines.store.leases import LeaseTable, LocalRunLeases
from skit_pipelines.store.listing import Dialect, list_runs_statement

# The models of schedules and notifications are imported by the methods that read or
# write them: the server's start (runs only) does without their dataclasses.
if TYPE_CHECKING:
    from skit_pipelines.notifications.model import (
        Delivery,
        DeliveryPage,
        Subscription,
        SubscriptionHealth,
        SubscriptionOutcome,
        SubscriptionPage,
    )
    from skit_pipelines.triggers import Schedule

logger = logging.getLogger(__name__)

_DECODED_RUNS = 1024
"""How many decoded runs stay in memory (the least recently read or written go first)."""
LOCK_SUFFIX = ".lock"
_PID_BYTES = 32
_RELEASED = -1
"""The lock's descriptor once the store is closed."""


class StoreInUse(RuntimeError):
    """Another process holds the SQLite file."""


def _hold_exclusively(path: Path) -> int:
    """The descriptor of <path>.lock, locked for this process (flock: released when the
    process ends, however it ends), with this process's id written in it for the message
    of the next one. A file of its own, as flock on the database could interfere with
    SQLite's own locks where flock is emulated by them (NFS)."""
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = os.read(fd, _PID_BYTES).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreInUse(
            f"the run store {path} is held by process {holder}: one server per SQLite file"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


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
    # 5: the change feed (issue 17): one row per committed run write, in commit order
    # (see RunStore.changes_after). No foreign key: a deleted run's last change stays.
    """
    CREATE TABLE run_changes (
        cursor INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        snapshot TEXT NOT NULL
    );
    """,
    # 6: subscriptions and their deliveries (issue 17, notifications): a subscription's
    # value as JSON with its feed cursor in a column; one delivery per (subscription,
    # change), and at most one per run and state it entered (dedupe).
    """
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        creator TEXT NOT NULL,
        request_id TEXT,
        request_hash TEXT NOT NULL,
        cursor INTEGER NOT NULL,
        snapshot TEXT NOT NULL
    );
    CREATE UNIQUE INDEX subscriptions_by_request ON subscriptions (creator, request_id);
    CREATE TABLE deliveries (
        subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
        cursor INTEGER NOT NULL,
        dedupe TEXT NOT NULL,
        state INTEGER NOT NULL,
        next_attempt_time TEXT,
        last_attempt_time TEXT,
        last_outcome TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL,
        PRIMARY KEY (subscription_id, cursor)
    );
    CREATE UNIQUE INDEX deliveries_once ON deliveries (subscription_id, dedupe);
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_time);
    CREATE INDEX deliveries_by_attempt ON deliveries (subscription_id, last_attempt_time);
    """,
)

_MAX_CURSOR = 2**63 - 1
"""Above every change cursor (SQLite integers are 64-bit)."""

_DIALECT = Dialect(placeholder="?", time_value=sortable_time, label_join="CROSS JOIN")


def _now() -> datetime:
    return datetime.now(UTC)


class SqliteRunStore(RunStore):
    def __init__(
        self,
        path: Path,
        *,
        history_limit: int = 10_000,
        change_limit: int = DEFAULT_CHANGE_LIMIT,
        hub: RevisionHub | None = None,
    ) -> None:
        super().__init__(hub)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._history_limit = history_limit
        self._change_limit = max(1, change_limit)
        self._decoded: OrderedDict[str, Run] = OrderedDict()
        self._step_json = codec.StepJson()
        self._leases: LeaseTable = {}
        with contextlib.ExitStack() as on_failure:
            self._lock = _hold_exclusively(path)
            on_failure.callback(os.close, self._lock)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            on_failure.callback(self._db.close)
            # Every statement goes through this one cursor. Connection.execute makes a
            # cursor per call, and sqlite3 keeps a weak reference to each in a list it
            # prunes only every 200 cursors: the idle server's periodic reads (schedules,
            # subscriptions, deliveries) made 7 a second, and 115 dead references were
            # left after a burst of 10,000 streams (23 with this; the memory the burst
            # gives back did not measurably change: docs/benchmarks.md, "Held streams").
            # Sharing is safe: the store runs on the event loop, each method consumes its
            # results before its next statement, and every SELECT it fetches one row of
            # is a lookup of one row (fetchone steps past it, so the statement is done
            # and holds no read snapshot between calls).
            self._sql = self._db.cursor()
            self._sql.execute("PRAGMA journal_mode=WAL")
            self._sql.execute("PRAGMA synchronous=NORMAL")
            self._sql.execute("PRAGMA foreign_keys=ON")
            self._sql.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self.change_signal.advance(self._latest_change())
            on_failure.pop_all()

    def _migrate(self) -> None:
        version = self._sql.execute("PRAGMA user_version").fetchone()[0]
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
                        self._sql.execute(statement)
                self._sql.execute(f"PRAGMA user_version={target}")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._sql)

    async def close(self) -> None:
        self._db.close()
        if self._lock != _RELEASED:
            os.close(self._lock)
            self._lock = _RELEASED

    def leases(self, owner: str, ttl_seconds: float) -> LocalRunLeases:
        # One process uses a SQLite store, so its memory is where every lease is.
        return LocalRunLeases(owner, ttl_seconds, self._leases)

    async def create_run(self, run: Run, request_hash: str = "") -> CreateOutcome:
        with self._transaction():
            if run.request_id:
                row = self._sql.execute(
                    "SELECT r.snapshot, q.request_hash FROM requests q"
                    " JOIN runs r ON r.id = q.run_id"
                    " WHERE q.principal = ? AND q.request_id = ?",
                    (run.creator, run.request_id),
                ).fetchone()
                if row is not None:
                    earlier = codec.run_from_dict(json.loads(row[0]))
                    return CreateOutcome(run=earlier, created=False, request_hash=row[1])
            exists = self._sql.execute("SELECT 1 FROM runs WHERE id = ?", (run.id,)).fetchone()
            if exists:
                raise AlreadyExists(
                    f"run runs/{run.id} already exists",
                    resource_name=f"runs/{run.id}",
                    reason="RUN_ALREADY_EXISTS",
                )
            snapshot = codec.run_json(run, self._step_json)
            create_time = sortable_time(run.create_time)
            self._sql.execute(
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
            self._sql.executemany(
                "INSERT INTO run_labels (run_id, key, value, create_time) VALUES (?, ?, ?, ?)",
                [(run.id, k, v, create_time) for k, v in run.labels.items()],
            )
            self._write_steps(run, previous=None)
            self._sql.execute(
                "INSERT INTO run_events (run_id, revision, snapshot) VALUES (?, ?, ?)",
                (run.id, run.revision, snapshot),
            )
            if run.request_id:
                self._sql.execute(
                    "INSERT INTO requests (principal, request_id, request_hash, run_id)"
                    " VALUES (?, ?, ?, ?)",
                    (run.creator, run.request_id, request_hash, run.id),
                )
            cursor = self._append_change(run, snapshot, deleted=False)
        self._remember(run)
        # Watchers of the run first: the change feed's readers (WatchRuns, the
        # notifier, which queries the store) wake after them.
        self.hub.publish(run)
        self.change_signal.advance(cursor)
        return CreateOutcome(run=run, created=True)

    def _append_change(self, run: Run, snapshot: str, *, deleted: bool) -> int:
        """Adds the feed's row for a write, inside its transaction. One connection writes,
        so AUTOINCREMENT numbers changes in commit order (a rollback takes its number
        back with it, so there are no gaps either)."""
        cursor = self._sql.execute(
            "INSERT INTO run_changes (run_id, revision, deleted, snapshot) VALUES (?, ?, ?, ?)",
            (run.id, run.revision, int(deleted), snapshot),
        ).lastrowid
        assert cursor is not None
        if cursor % change_prune_interval(self._change_limit) == 0:
            self._sql.execute(
                "DELETE FROM run_changes WHERE cursor <= ?", (cursor - self._change_limit,)
            )
        return cursor

    def _latest_change(self) -> int:
        row = self._sql.execute("SELECT MAX(cursor) FROM run_changes").fetchone()
        return int(row[0] or 0)

    async def latest_change_cursor(self) -> int:
        return self._latest_change()

    async def changes_after(self, after_cursor: int, limit: int) -> ChangePage:
        # Both reads run with no await in between, and only this connection writes: the
        # span and the page agree.
        span = self._sql.execute("SELECT MIN(cursor), MAX(cursor) FROM run_changes").fetchone()
        rows = self._sql.execute(
            "SELECT cursor, deleted, snapshot FROM run_changes WHERE cursor > ?"
            " ORDER BY cursor LIMIT ?",
            (after_cursor, max(0, limit)),
        ).fetchall()
        latest = int(span[1] or 0)
        return ChangePage(
            changes=[
                RunChange(
                    cursor=r[0], run=codec.run_from_dict(json.loads(r[2])), deleted=bool(r[1])
                )
                for r in rows
            ],
            oldest_cursor=int(span[0] if span[0] is not None else latest + 1),
            latest_cursor=latest,
            after_cursor=after_cursor,
        )

    def _write_steps(self, run: Run, previous: Run | None) -> None:
        rows = [
            (run.id, step.name, position, int(step.state), self._step_json(step))
            for position, step in changed_steps(run, previous)
        ]
        self._sql.executemany(
            "INSERT INTO steps (run_id, name, position, state, detail) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (run_id, name) DO UPDATE SET position = excluded.position,"
            " state = excluded.state, detail = excluded.detail",
            rows,
        )

    def _load(self, run_id: str) -> Run:
        # Runs are read far more often than they change (GetRun polling), and decoding
        # is most of a read's cost. This process is the file's only writer and remembers
        # each run it writes, so a remembered run is the stored one: no statement at all
        # (checking its revision in the file cost GetRun about 7% of its throughput).
        # Runs are frozen values.
        cached = self._decoded.get(run_id)
        if cached is not None:
            self._decoded.move_to_end(run_id)
            return cached
        row = self._sql.execute("SELECT snapshot FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
        run = codec.run_from_dict(json.loads(row[0]))
        self._remember(run)
        return run

    def _remember(self, run: Run) -> None:
        """Keeps `run` as its stored revision (called once the write is committed)."""
        self._decoded[run.id] = run
        self._decoded.move_to_end(run.id)
        if len(self._decoded) > _DECODED_RUNS:
            self._decoded.popitem(last=False)

    async def get_run(self, run_id: str) -> Run:
        return self._load(run_id)

    async def update_run(self, run_id: str, mutate: RunMutation) -> Run:
        with self._transaction():
            current = self._load(run_id)
            changed = mutate(current)
            if changed == current:
                return current
            updated = _bump(current, changed)
            snapshot = codec.run_json(updated, self._step_json)
            self._sql.execute(
                "UPDATE runs SET state = ?, revision = ?, snapshot = ? WHERE id = ?",
                (int(updated.state), updated.revision, snapshot, run_id),
            )
            self._write_steps(updated, previous=current)
            self._sql.execute(
                "INSERT INTO run_events (run_id, revision, snapshot) VALUES (?, ?, ?)",
                (run_id, updated.revision, snapshot),
            )
            if updated.revision > self._history_limit:
                self._sql.execute(
                    "DELETE FROM run_events WHERE run_id = ? AND revision <= ?",
                    (run_id, updated.revision - self._history_limit),
                )
            cursor = self._append_change(updated, snapshot, deleted=False)
        self._remember(updated)
        # Watchers of the run first: the change feed's readers (WatchRuns, the
        # notifier, which queries the store) wake after them.
        self.hub.publish(updated)
        self.change_signal.advance(cursor)
        return updated

    async def delete_run(self, run_id: str) -> None:
        cursor = 0
        with self._transaction():
            last = self._sql.execute("SELECT snapshot FROM runs WHERE id = ?", (run_id,)).fetchone()
            # Explicit rather than through ON DELETE CASCADE: that needs the foreign_keys
            # pragma, which a connection opened elsewhere may not set.
            for table in ("run_labels", "steps", "run_events", "requests"):
                self._sql.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            deleted = self._sql.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount
            if deleted and last is not None:
                run = codec.run_from_dict(json.loads(last[0]))
                cursor = self._append_change(run, last[0], deleted=True)
        self._decoded.pop(run_id, None)
        self._leases.pop(run_id, None)
        if not deleted:
            raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
        self.change_signal.advance(cursor)

    async def list_runs(self, query: RunQuery) -> RunPage:
        statement = list_runs_statement(query, _DIALECT)
        rows = self._sql.execute(statement.text, statement.args).fetchall()
        runs = [codec.run_from_dict(json.loads(r[0])) for r in rows[: query.page_size]]
        return RunPage(runs=runs, more=len(rows) > query.page_size)

    async def list_unfinished_runs(self) -> list[Run]:
        terminal = [int(s) for s in RunState if s.terminal]
        rows = self._sql.execute(
            f"SELECT snapshot FROM runs WHERE state NOT IN ({','.join('?' * len(terminal))})"
            " ORDER BY create_time, id",
            terminal,
        ).fetchall()
        return [codec.run_from_dict(json.loads(r[0])) for r in rows]

    async def revisions_after(self, run_id: str, revision: int) -> list[Run] | None:
        rows = self._sql.execute(
            "SELECT revision, snapshot FROM run_events WHERE run_id = ? AND revision > ?"
            " ORDER BY revision",
            (run_id, revision),
        ).fetchall()
        if rows and rows[0][0] != revision + 1:
            return None
        if not rows:
            latest = self._sql.execute(
                "SELECT revision FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if latest is None:
                raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
            if latest[0] != revision:
                return None
        return [codec.run_from_dict(json.loads(r[1])) for r in rows]

    async def create_schedule(self, schedule: Schedule, request_hash: str = "") -> ScheduleOutcome:
        from skit_pipelines.triggers import schedule_from_dict, schedule_to_dict

        with self._transaction():
            if schedule.request_id:
                row = self._sql.execute(
                    "SELECT snapshot, request_hash FROM schedules"
                    " WHERE creator = ? AND request_id = ?",
                    (schedule.creator, schedule.request_id),
                ).fetchone()
                if row is not None:
                    earlier = schedule_from_dict(json.loads(row[0]))
                    return ScheduleOutcome(earlier, created=False, request_hash=row[1])
            if self._sql.execute("SELECT 1 FROM schedules WHERE id = ?", (schedule.id,)).fetchone():
                raise schedule_exists(schedule.id)
            self._sql.execute(
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
        from skit_pipelines.triggers import schedule_from_dict

        row = self._sql.execute(
            "SELECT snapshot FROM schedules WHERE id = ?", (schedule_id,)
        ).fetchone()
        if row is None:
            raise schedule_not_found(schedule_id)
        return schedule_from_dict(json.loads(row[0]))

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return self._load_schedule(schedule_id)

    async def update_schedule(self, schedule_id: str, mutate: ScheduleMutation) -> Schedule:
        from skit_pipelines.triggers import schedule_to_dict

        with self._transaction():
            current = self._load_schedule(schedule_id)
            changed = mutate(current)
            if changed != current:
                self._sql.execute(
                    "UPDATE schedules SET snapshot = ? WHERE id = ?",
                    (codec.dumps(schedule_to_dict(changed)), schedule_id),
                )
        return changed

    async def delete_schedule(self, schedule_id: str) -> None:
        with self._transaction():
            deleted = self._sql.execute(
                "DELETE FROM schedules WHERE id = ?", (schedule_id,)
            ).rowcount
        if not deleted:
            raise schedule_not_found(schedule_id)

    async def list_schedules(self, page_size: int, after: str = "") -> SchedulePage:
        from skit_pipelines.triggers import schedule_from_dict

        rows = self._sql.execute(
            "SELECT snapshot FROM schedules WHERE id > ? ORDER BY id LIMIT ?",
            (after, page_size + 1),
        ).fetchall()
        schedules = [schedule_from_dict(json.loads(r[0])) for r in rows[:page_size]]
        return SchedulePage(schedules, more=len(rows) > page_size)

    # Subscriptions (notifications/)

    async def create_subscription(
        self, subscription: Subscription, request_hash: str = ""
    ) -> SubscriptionOutcome:
        from skit_pipelines.notifications.model import (
            SubscriptionOutcome,
            subscription_from_dict,
            subscription_to_dict,
        )

        with self._transaction():
            if subscription.request_id:
                row = self._sql.execute(
                    "SELECT snapshot, request_hash, cursor FROM subscriptions"
                    " WHERE creator = ? AND request_id = ?",
                    (subscription.creator, subscription.request_id),
                ).fetchone()
                if row is not None:
                    earlier = replace(subscription_from_dict(json.loads(row[0])), cursor=row[2])
                    return SubscriptionOutcome(earlier, created=False, request_hash=row[1])
            if self._sql.execute(
                "SELECT 1 FROM subscriptions WHERE id = ?", (subscription.id,)
            ).fetchone():
                raise subscription_exists(subscription.id)
            self._sql.execute(
                "INSERT INTO subscriptions"
                " (id, creator, request_id, request_hash, cursor, snapshot)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    subscription.id,
                    subscription.creator,
                    subscription.request_id or None,
                    request_hash,
                    subscription.cursor,
                    codec.dumps(subscription_to_dict(subscription)),
                ),
            )
        return SubscriptionOutcome(subscription, created=True)

    def _subscription_health(self, subscription_id: str) -> SubscriptionHealth:
        from skit_pipelines.notifications.model import DeliveryState, SubscriptionHealth

        counts = dict(
            self._sql.execute(
                "SELECT state, count(*) FROM deliveries WHERE subscription_id = ? GROUP BY state",
                (subscription_id,),
            ).fetchall()
        )
        last = self._sql.execute(
            "SELECT last_outcome, last_attempt_time FROM deliveries"
            " WHERE subscription_id = ? AND last_attempt_time IS NOT NULL"
            " ORDER BY last_attempt_time DESC LIMIT 1",
            (subscription_id,),
        ).fetchone()
        return SubscriptionHealth(
            pending=counts.get(int(DeliveryState.PENDING), 0),
            failed=counts.get(int(DeliveryState.FAILED), 0),
            delivered=counts.get(int(DeliveryState.DELIVERED), 0),
            last_outcome=last[0] if last else "",
            last_attempt_time=datetime.fromisoformat(last[1]) if last else None,
        )

    def _subscription_of(self, row: Sequence[Any]) -> Subscription:
        from skit_pipelines.notifications.model import subscription_from_dict

        subscription = subscription_from_dict(json.loads(row[0]))
        return replace(
            subscription, cursor=row[1], health=self._subscription_health(subscription.id)
        )

    async def get_subscription(self, subscription_id: str) -> Subscription:
        row = self._sql.execute(
            "SELECT snapshot, cursor FROM subscriptions WHERE id = ?", (subscription_id,)
        ).fetchone()
        if row is None:
            raise subscription_not_found(subscription_id)
        return self._subscription_of(row)

    async def list_subscriptions(self, page_size: int, after: str = "") -> SubscriptionPage:
        from skit_pipelines.notifications.model import SubscriptionPage

        rows = self._sql.execute(
            "SELECT snapshot, cursor FROM subscriptions WHERE id > ? ORDER BY id LIMIT ?",
            (after, page_size + 1),
        ).fetchall()
        found = tuple(self._subscription_of(r) for r in rows[:page_size])
        return SubscriptionPage(found, more=len(rows) > page_size)

    async def delete_subscription(self, subscription_id: str) -> None:
        with self._transaction():
            self._sql.execute(
                "DELETE FROM deliveries WHERE subscription_id = ?", (subscription_id,)
            )
            deleted = self._sql.execute(
                "DELETE FROM subscriptions WHERE id = ?", (subscription_id,)
            ).rowcount
        if not deleted:
            raise subscription_not_found(subscription_id)

    async def advance_subscription(
        self, subscription_id: str, from_cursor: int, to_cursor: int, deliveries: Sequence[Delivery]
    ) -> bool:
        from skit_pipelines.notifications.model import delivery_to_dict

        with self._transaction():
            moved = self._sql.execute(
                "UPDATE subscriptions SET cursor = ? WHERE id = ? AND cursor = ?",
                (to_cursor, subscription_id, from_cursor),
            ).rowcount
            if not moved:
                return False
            self._sql.executemany(
                "INSERT INTO deliveries (subscription_id, cursor, dedupe, state,"
                " next_attempt_time, detail) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [
                    (
                        subscription_id,
                        d.cursor,
                        d.dedupe_key,
                        int(d.state),
                        sortable_time(d.next_attempt_time) if d.next_attempt_time else None,
                        codec.dumps(delivery_to_dict(d)),
                    )
                    for d in deliveries
                ],
            )
        return True

    async def claim_deliveries(
        self,
        now: datetime,
        claim_until: datetime,
        limit: int,
        skip: Sequence[str] = (),
        *,
        per_subscription: int = 4,
    ) -> list[Delivery]:
        from skit_pipelines.notifications.model import DeliveryState, delivery_from_dict

        if limit <= 0:
            return []
        with self._transaction():
            rows = self._sql.execute(
                "SELECT subscription_id, cursor, detail FROM ("
                " SELECT subscription_id, cursor, detail, next_attempt_time, row_number()"
                " OVER (PARTITION BY subscription_id ORDER BY next_attempt_time, cursor) AS n"
                " FROM deliveries WHERE state = ? AND next_attempt_time <= ?"
                f" AND subscription_id NOT IN ({','.join('?' * len(skip))}))"
                " WHERE n <= ? ORDER BY next_attempt_time LIMIT ?",
                (int(DeliveryState.PENDING), sortable_time(now), *skip, per_subscription, limit),
            ).fetchall()
            self._sql.executemany(
                "UPDATE deliveries SET next_attempt_time = ?"
                " WHERE subscription_id = ? AND cursor = ?",
                [(sortable_time(claim_until), r[0], r[1]) for r in rows],
            )
        return [delivery_from_dict(json.loads(r[2])) for r in rows]

    async def record_attempt(self, delivery: Delivery) -> bool:
        from skit_pipelines.notifications.model import DeliveryState, delivery_to_dict

        last = delivery.attempts[-1] if delivery.attempts else None
        with self._transaction():
            updated = self._sql.execute(
                "UPDATE deliveries SET state = ?, next_attempt_time = ?, last_attempt_time = ?,"
                " last_outcome = ?, detail = ?"
                " WHERE subscription_id = ? AND cursor = ? AND state = ?",
                (
                    int(delivery.state),
                    sortable_time(delivery.next_attempt_time)
                    if delivery.next_attempt_time
                    else None,
                    sortable_time(last.time) if last else None,
                    last.outcome if last else "",
                    codec.dumps(delivery_to_dict(delivery)),
                    delivery.subscription_id,
                    delivery.cursor,
                    int(DeliveryState.PENDING),
                ),
            ).rowcount
        return bool(updated)

    async def list_deliveries(
        self, subscription_id: str, page_size: int, before_cursor: int | None = None
    ) -> DeliveryPage:
        from skit_pipelines.notifications.model import DeliveryPage, delivery_from_dict

        if not self._sql.execute(
            "SELECT 1 FROM subscriptions WHERE id = ?", (subscription_id,)
        ).fetchone():
            raise subscription_not_found(subscription_id)
        rows = self._sql.execute(
            "SELECT detail FROM deliveries WHERE subscription_id = ? AND cursor < ?"
            " ORDER BY cursor DESC LIMIT ?",
            (
                subscription_id,
                before_cursor if before_cursor is not None else _MAX_CURSOR,
                page_size + 1,
            ),
        ).fetchall()
        found = tuple(delivery_from_dict(json.loads(r[0])) for r in rows[:page_size])
        return DeliveryPage(found, more=len(rows) > page_size)

    def cache_get(self, key: str) -> Any | None:
        row = self._sql.execute("SELECT value FROM step_cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def cache_put(self, key: str, value: Any) -> None:
        self._sql.execute(
            "INSERT INTO step_cache (key, value, create_time) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, codec.dumps(value), _now().isoformat()),
        )

    def cache_delete(self, key: str) -> None:
        self._sql.execute("DELETE FROM step_cache WHERE key = ?", (key,))


def _bump(current: Run, changed: Run) -> Run:
    return replace(changed, revision=current.revision + 1, update_time=_now())


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK around a block (autocommit connection)."""

    def __init__(self, sql: sqlite3.Cursor) -> None:
        self._sql = sql

    def __enter__(self) -> None:
        self._sql.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._sql.execute("COMMIT" if exc_type is None else "ROLLBACK")
