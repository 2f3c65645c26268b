"""The RunStore for several replicas: PostgreSQL through psycopg 3 and a connection pool.

Same tables and semantics as the SQLite store. What sharing one database between
replicas adds:

- Every write is one transaction. Updates of a run lock its row (SELECT ... FOR UPDATE),
  so concurrent updates from several replicas apply one after the other; creates with the
  same request_id from the same principal serialize on a transaction-level advisory lock
  keyed by both, so exactly one of them inserts.
- Every stored revision is announced with NOTIFY (payload `{"run": id, "revision": n,
  "state": s, "by": writer}`, delivered at commit, in commit order). Each replica LISTENs
  on one connection, loads the new revisions of the runs its own watchers follow (one
  query per notification, not per watcher) and publishes them to its RevisionHub. After
  the listening connection is lost it reconnects and catches up every watched run from
  the event log, so nothing written meanwhile is missed.
- Transient errors (connection lost, server restarting, serialization failures) are
  retried with exponential backoff and jitter; past the retry budget a call fails with
  Unavailable. A retried update may apply its mutation again after a commit whose
  acknowledgement was lost; that is harmless because the controller's mutations are
  idempotent (applying one to its own result changes nothing, so no revision is added).
- After a connection failure, one task probes the database with fresh connections and,
  once it answers, replaces both pools: a pool's own reconnect attempts back off
  exponentially, so after a long outage they would leave the service failing for tens of
  seconds after the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import AlreadyExists, NotFound, Unavailable
from skit_pipelines.store import codec
from skit_pipelines.store.base import (
    CreateOutcome,
    RevisionHub,
    RevisionListener,
    RunMutation,
    RunPage,
    RunQuery,
    RunStore,
    ScheduleMutation,
    ScheduleOutcome,
    SchedulePage,
    schedule_exists,
    schedule_not_found,
)
from skit_pipelines.store.leases import RunLeases
from skit_pipelines.store.listing import Dialect, list_runs_statement
from skit_pipelines.triggers import Schedule, schedule_from_dict, schedule_to_dict

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "skit_run_revisions"
"""The NOTIFY channel every replica listens on."""

# Advisory lock keys: (namespace, key). The namespace keeps our locks apart from any
# other application's on the same database.
_LOCK_NAMESPACE = 0x5_C17
_MIGRATION_LOCK = 1
_TASK_LOCK_NAMESPACE = _LOCK_NAMESPACE + 1
"""Session advisory locks of `exclusive` tasks, keyed by hashtext(task)."""
_RUN_TABLES = ("run_labels", "steps", "run_events", "requests", "run_leases")
"""The tables holding rows of a run besides `runs` itself."""

# Versioned migrations: index i brings the schema from version i to i + 1 (table
# skit_schema). Ids sort bytewise (COLLATE "C"), as in SQLite, so page order does not
# depend on the database's locale.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE runs (
        id text COLLATE "C" PRIMARY KEY,
        pipeline text NOT NULL,
        state integer NOT NULL,
        create_time timestamptz NOT NULL,
        revision integer NOT NULL,
        request_id text,
        snapshot jsonb NOT NULL
    );
    CREATE INDEX runs_by_time ON runs (create_time DESC, id DESC);
    CREATE INDEX runs_by_pipeline ON runs (pipeline, create_time DESC, id DESC);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE run_labels (
        run_id text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    CREATE INDEX run_labels_by_value ON run_labels (key, value);
    CREATE TABLE steps (
        run_id text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        name text NOT NULL,
        position integer NOT NULL,
        state integer NOT NULL,
        detail jsonb NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE run_events (
        run_id text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        revision integer NOT NULL,
        snapshot jsonb NOT NULL,
        PRIMARY KEY (run_id, revision)
    );
    CREATE TABLE requests (
        request_id text PRIMARY KEY,
        request_hash text NOT NULL,
        run_id text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE
    );
    CREATE TABLE step_cache (
        key text PRIMARY KEY,
        value jsonb NOT NULL,
        create_time timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE run_leases (
        run_id text COLLATE "C" PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
        owner text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX run_leases_by_expiry ON run_leases (expires_at);
    """,
    # 2: a request_id belongs to the principal that sent it (the run's creator), so one
    # principal can neither replay nor find out another's.
    """
    ALTER TABLE requests ADD COLUMN principal text NOT NULL DEFAULT '';
    UPDATE requests q SET principal = COALESCE(r.snapshot ->> 'creator', '')
        FROM runs r WHERE r.id = q.run_id;
    ALTER TABLE requests ALTER COLUMN principal DROP DEFAULT;
    ALTER TABLE requests DROP CONSTRAINT requests_pkey;
    ALTER TABLE requests ADD PRIMARY KEY (principal, request_id);
    """,
    # 3: ListRuns reads one index range per page (see store/listing.py): runs_by_state in
    # time order, and run_labels carries its run's create_time for run_labels_by_value.
    """
    ALTER TABLE run_labels ADD COLUMN create_time timestamptz;
    UPDATE run_labels l SET create_time = r.create_time FROM runs r WHERE r.id = l.run_id;
    ALTER TABLE run_labels ALTER COLUMN create_time SET NOT NULL;
    DROP INDEX run_labels_by_value;
    CREATE INDEX run_labels_by_value ON run_labels (key, value, create_time DESC, run_id DESC);
    DROP INDEX runs_by_state;
    CREATE INDEX runs_by_state ON runs (state, create_time DESC, id DESC);
    """,
    # 4: schedules (issue 18), each one row holding its whole value; its request_id is
    # scoped to its creator, as a run's is.
    """
    CREATE TABLE schedules (
        id text COLLATE "C" PRIMARY KEY,
        creator text NOT NULL,
        request_id text,
        request_hash text NOT NULL,
        snapshot jsonb NOT NULL
    );
    CREATE UNIQUE INDEX schedules_by_request ON schedules (creator, request_id);
    """,
)

_DIALECT = Dialect(placeholder="%s", time_value=lambda time: time, label_join="JOIN")

# Dead peers are noticed by TCP keepalive instead of hanging the listener forever.
_CONNECTION_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (psycopg.OperationalError,)
"""Connection failures, server shutdown/restart, pool timeouts, serialization failures
and deadlocks: retried. Everything else (constraint violations, bugs) is not."""
_LISTENER_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, Unavailable)

_PROBE_TIMEOUT_SECONDS = 2
"""connect_timeout of the probes that tell when the database is back (whole seconds)."""
_PROBE_MAX_INTERVAL_SECONDS = 0.5
"""The longest wait between probes: the service serves again this soon after."""
"""What the LISTEN connection reconnects after, with a warning rather than a traceback."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient database errors are retried."""

    initial_seconds: float = 0.05
    """The first backoff; it doubles (with jitter) on each further attempt."""
    max_seconds: float = 2.0
    """The longest single backoff."""
    budget_seconds: float = 30.0
    """Give up (Unavailable) when an operation has been failing for this long."""
    listen_check_seconds: float = 10.0
    """How long the listening connection may stay silent before it is checked."""


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(error: BaseException | None) -> str:
    """An exception on one line (libpq messages span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        outcome = state.outcome
        logger.warning(
            "run store %s failed (attempt %s), retrying: %s",
            what,
            state.attempt_number,
            _describe(outcome.exception() if outcome is not None else None),
        )

    return log


class PostgresRunStore(RunStore):
    """Use `await PostgresRunStore.open(url)`; it migrates the schema and starts listening."""

    def __init__(
        self,
        url: str,
        *,
        history_limit: int = 10_000,
        hub: RevisionHub | None = None,
        pool_size: int = 10,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(hub)
        self._url = url
        self._history_limit = history_limit
        self._retry = retry or RetryPolicy()
        self._pool_size = pool_size
        self._pool = self._new_pool()
        # The step cache is called synchronously from the executor's step loop; one
        # small blocking pool serves it (see cache_get).
        self._cache_pool = self._new_cache_pool()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._pool_resets = 0
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._reconnects = 0
        self._writer = uuid.uuid4().hex
        self._revision_listeners: list[RevisionListener] = []

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        history_limit: int = 10_000,
        hub: RevisionHub | None = None,
        pool_size: int = 10,
        retry: RetryPolicy | None = None,
    ) -> PostgresRunStore:
        store = cls(url, history_limit=history_limit, hub=hub, pool_size=pool_size, retry=retry)
        try:
            await store._start()
        except BaseException:
            await store.close()
            raise
        return store

    def _new_pool(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        return AsyncConnectionPool(
            self._url,
            min_size=min(2, self._pool_size),
            max_size=self._pool_size,
            kwargs=_CONNECTION_KWARGS,
            open=False,
            timeout=min(5.0, self._retry.budget_seconds),
            reconnect_timeout=self._retry.budget_seconds * 4,
            name="skit-run-store",
        )

    def _new_cache_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        return ConnectionPool(
            self._url,
            min_size=1,
            max_size=2,
            kwargs=_CONNECTION_KWARGS,
            open=False,
            timeout=0.5,
            name="skit-step-cache",
        )

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._pool.open()
        await asyncio.to_thread(self._cache_pool.open)
        await self._run(self._migrate, what="migration")
        self._listener = asyncio.get_running_loop().create_task(
            self._listen_forever(), name="run-store-listener"
        )
        try:
            async with asyncio.timeout(self._retry.budget_seconds):
                await self._listening.wait()
        except TimeoutError:
            raise Unavailable(
                "the run store accepts queries but LISTEN keeps failing",
                reason="STORE_UNAVAILABLE",
            ) from None

    def on_remote_revision(self, listener: RevisionListener) -> None:
        self._revision_listeners.append(listener)

    @property
    def listener_reconnects(self) -> int:
        """How many times the LISTEN connection was re-established (for tests and metrics)."""
        return self._reconnects

    @property
    def pool_resets(self) -> int:
        """How many times the pools were replaced after an outage (for tests and metrics)."""
        return self._pool_resets

    async def close(self) -> None:
        for task in (self._listener, self._recovery):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._pool.close()
        await asyncio.to_thread(self._cache_pool.close)

    # Retries

    async def _run(self, operation: Callable[[AsyncConnection[Any]], Awaitable[T]], what: str) -> T:
        """Runs `operation` on a pooled connection, retrying transient failures."""
        policy = self._retry
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TRANSIENT_ERRORS),
                wait=wait_exponential_jitter(
                    multiplier=policy.initial_seconds,
                    jitter=policy.initial_seconds,
                    max=policy.max_seconds,
                ),
                stop=stop_after_delay(policy.budget_seconds),
                before_sleep=_log_retry(what),
                reraise=True,
            ):
                with attempt:
                    try:
                        async with self._pool.connection() as conn:
                            return await operation(conn)
                    except TRANSIENT_ERRORS as exc:
                        self._connection_trouble(exc)
                        raise
        except TRANSIENT_ERRORS as exc:
            raise Unavailable(
                f"the run store is unavailable ({what}): {_describe(exc)}",
                reason="STORE_UNAVAILABLE",
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    # Recovery after an outage

    def _connection_trouble(self, error: BaseException) -> None:
        """Starts the recovery task after a failure that may mean the database is gone.
        Callable from any thread (the step cache's calls may run in one)."""
        # A rolled-back transaction (serialization failure, deadlock) came from a
        # database that answers: nothing to recover.
        if isinstance(error, psycopg.errors.TransactionRollback) or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._start_recovery)

    def _start_recovery(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(
                self._recover(), name="run-store-recovery"
            )

    async def _recover(self) -> None:
        """Waits until a fresh connection succeeds, then replaces the pools, whose own
        reconnect attempts may be backing off for as long as the outage lasted."""
        policy = self._retry
        delay = policy.initial_seconds
        while True:
            try:
                probe = await AsyncConnection.connect(
                    self._url, connect_timeout=_PROBE_TIMEOUT_SECONDS, **_CONNECTION_KWARGS
                )
                await probe.close()
                break
            except psycopg.OperationalError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _PROBE_MAX_INTERVAL_SECONDS)
        if not any(
            pool.get_stats().get("connections_errors", 0) for pool in (self._pool, self._cache_pool)
        ):
            # The pools never failed to connect: the trouble was one broken connection,
            # or a busy pool, which they get over by themselves.
            return
        old_pool, old_cache_pool = self._pool, self._cache_pool
        self._pool, self._cache_pool = self._new_pool(), self._new_cache_pool()
        await self._pool.open(wait=False)
        await asyncio.to_thread(self._cache_pool.open, wait=False)
        self._pool_resets += 1
        logger.info("run store reachable again; connection pools replaced")
        # Calls still waiting on the old pools fail with PoolClosed and are retried on
        # the new ones.
        await old_pool.close(timeout=0)
        await asyncio.to_thread(old_cache_pool.close, 0)

    # Schema

    async def _migrate(self, conn: AsyncConnection[Any]) -> None:
        async with conn.transaction():
            # Replicas starting together: one migrates, the others wait and find it done.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _MIGRATION_LOCK)
            )
            await conn.execute("CREATE TABLE IF NOT EXISTS skit_schema (version integer NOT NULL)")
            row = await (await conn.execute("SELECT version FROM skit_schema")).fetchone()
            if row is None:
                await conn.execute("INSERT INTO skit_schema (version) VALUES (0)")
                version = 0
            else:
                version = row[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"run store schema version {version} is newer than this service "
                    f"({len(MIGRATIONS)}); upgrade the service"
                )
            for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
                logger.info("migrating run store to schema version %s", target)
                await conn.execute(script.encode())
                await conn.execute("UPDATE skit_schema SET version = %s", (target,))

    async def schema_version(self) -> int:
        async def read(conn: AsyncConnection[Any]) -> int:
            row = await (await conn.execute("SELECT version FROM skit_schema")).fetchone()
            return row[0] if row else 0

        return await self._run(read, what="schema version")

    # Runs

    async def create_run(self, run: Run, request_hash: str = "") -> CreateOutcome:
        snapshot = Jsonb(codec.run_to_dict(run), dumps=codec.dumps)
        attempts = 0

        def ours(stored: Run) -> bool:
            # Only a retry can find its own run: an earlier attempt committed, and the
            # connection broke before the acknowledgement arrived.
            return attempts > 1 and _same_creation(stored, run)

        async def attempt(conn: AsyncConnection[Any]) -> CreateOutcome:
            nonlocal attempts
            attempts += 1
            async with conn.transaction():
                if run.request_id:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        (_LOCK_NAMESPACE, json.dumps([run.creator, run.request_id])),
                    )
                    row = await (
                        await conn.execute(
                            "SELECT r.snapshot, q.request_hash FROM requests q"
                            " JOIN runs r ON r.id = q.run_id"
                            " WHERE q.principal = %s AND q.request_id = %s",
                            (run.creator, run.request_id),
                        )
                    ).fetchone()
                    if row is not None:
                        earlier = codec.run_from_dict(row[0])
                        if ours(earlier):
                            return CreateOutcome(run=run, created=True)
                        return CreateOutcome(run=earlier, created=False, request_hash=row[1])
                existing = await (
                    await conn.execute("SELECT snapshot FROM runs WHERE id = %s", (run.id,))
                ).fetchone()
                if existing is not None:
                    if ours(codec.run_from_dict(existing[0])):
                        return CreateOutcome(run=run, created=True)
                    raise _already_exists(run.id)
                try:
                    await conn.execute(
                        "INSERT INTO runs"
                        " (id, pipeline, state, create_time, revision, request_id, snapshot)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (
                            run.id,
                            run.pipeline,
                            int(run.state),
                            run.create_time,
                            run.revision,
                            run.request_id or None,
                            snapshot,
                        ),
                    )
                except psycopg.errors.UniqueViolation as exc:
                    raise _already_exists(run.id) from exc
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO run_labels (run_id, key, value, create_time)"
                        " VALUES (%s, %s, %s, %s)",
                        [(run.id, k, v, run.create_time) for k, v in run.labels.items()],
                    )
                await _write_steps(conn, run, previous=None)
                await conn.execute(
                    "INSERT INTO run_events (run_id, revision, snapshot) VALUES (%s, %s, %s)",
                    (run.id, run.revision, snapshot),
                )
                if run.request_id:
                    await conn.execute(
                        "INSERT INTO requests (principal, request_id, request_hash, run_id)"
                        " VALUES (%s, %s, %s, %s)",
                        (run.creator, run.request_id, request_hash, run.id),
                    )
                await _announce(conn, run, self._writer)
            return CreateOutcome(run=run, created=True)

        outcome = await self._run(attempt, what="create_run")
        if outcome.created:
            self.hub.publish(run)
        return outcome

    async def get_run(self, run_id: str) -> Run:
        async def read(conn: AsyncConnection[Any]) -> Run:
            return await _load(conn, run_id)

        return await self._run(read, what="get_run")

    async def update_run(self, run_id: str, mutate: RunMutation) -> Run:
        async def attempt(conn: AsyncConnection[Any]) -> Run:
            async with conn.transaction():
                current = await _load(conn, run_id, for_update=True)
                changed = mutate(current)
                if changed == current:
                    return current
                updated = replace(changed, revision=current.revision + 1, update_time=_now())
                snapshot = Jsonb(codec.run_to_dict(updated), dumps=codec.dumps)
                await conn.execute(
                    "UPDATE runs SET state = %s, revision = %s, snapshot = %s WHERE id = %s",
                    (int(updated.state), updated.revision, snapshot, run_id),
                )
                await _write_steps(conn, updated, previous=current)
                await conn.execute(
                    "INSERT INTO run_events (run_id, revision, snapshot) VALUES (%s, %s, %s)",
                    (run_id, updated.revision, snapshot),
                )
                if updated.revision > self._history_limit:
                    await conn.execute(
                        "DELETE FROM run_events WHERE run_id = %s AND revision <= %s",
                        (run_id, updated.revision - self._history_limit),
                    )
                await _announce(conn, updated, self._writer)
            return updated

        updated = await self._run(attempt, what="update_run")
        self.hub.publish(updated)
        return updated

    async def delete_run(self, run_id: str) -> None:
        async def attempt(conn: AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                for table in _RUN_TABLES:
                    await conn.execute(
                        sql.SQL("DELETE FROM {} WHERE run_id = %s").format(sql.Identifier(table)),
                        (run_id,),
                    )
                cursor = await conn.execute("DELETE FROM runs WHERE id = %s", (run_id,))
                return cursor.rowcount > 0

        if not await self._run(attempt, what="delete_run"):
            raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")

    @contextlib.asynccontextmanager
    async def exclusive(self, task: str) -> AsyncIterator[bool]:
        # A session lock on a connection kept for the block: should this replica die or
        # lose the connection, the database releases it at once.
        async with self._pool.connection() as conn:
            key = (_TASK_LOCK_NAMESPACE, task)
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key)
            row = await cursor.fetchone()
            held = bool(row and row[0])
            try:
                yield held
            finally:
                if held:
                    try:
                        await conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)
                    except psycopg.Error:
                        # Closed, so the pool discards it and the lock goes with it.
                        await conn.close()

    async def list_runs(self, query: RunQuery) -> RunPage:
        statement = list_runs_statement(query, _DIALECT)

        async def read(conn: AsyncConnection[Any]) -> list[Any]:
            cursor = await conn.execute(statement.text.encode(), statement.args)
            return await cursor.fetchall()

        rows = await self._run(read, what="list_runs")
        runs = [codec.run_from_dict(r[0]) for r in rows[: query.page_size]]
        return RunPage(runs=runs, more=len(rows) > query.page_size)

    async def list_unfinished_runs(self) -> list[Run]:
        terminal = [int(s) for s in RunState if s.terminal]

        async def read(conn: AsyncConnection[Any]) -> list[Any]:
            cursor = await conn.execute(
                "SELECT snapshot FROM runs WHERE state <> ALL(%s) ORDER BY create_time, id",
                (terminal,),
            )
            return await cursor.fetchall()

        return [codec.run_from_dict(r[0]) for r in await self._run(read, what="list_unfinished")]

    async def revisions_after(self, run_id: str, revision: int) -> list[Run] | None:
        async def read(conn: AsyncConnection[Any]) -> list[Run] | None:
            return await _revisions_after(conn, run_id, revision)

        return await self._run(read, what="revisions_after")

    # Schedules

    async def create_schedule(self, schedule: Schedule, request_hash: str = "") -> ScheduleOutcome:
        snapshot = Jsonb(schedule_to_dict(schedule), dumps=codec.dumps)
        attempts = 0

        async def attempt(conn: AsyncConnection[Any]) -> ScheduleOutcome:
            nonlocal attempts
            attempts += 1
            async with conn.transaction():
                if schedule.request_id:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        (
                            _LOCK_NAMESPACE,
                            json.dumps(["schedule", schedule.creator, schedule.request_id]),
                        ),
                    )
                    row = await (
                        await conn.execute(
                            "SELECT snapshot, request_hash FROM schedules"
                            " WHERE creator = %s AND request_id = %s",
                            (schedule.creator, schedule.request_id),
                        )
                    ).fetchone()
                    if row is not None:
                        earlier = schedule_from_dict(row[0])
                        # A retry finding its own insert (the acknowledgement was lost).
                        if attempts > 1 and earlier.incarnation == schedule.incarnation:
                            return ScheduleOutcome(schedule, created=True)
                        return ScheduleOutcome(earlier, created=False, request_hash=row[1])
                existing = await (
                    await conn.execute(
                        "SELECT snapshot FROM schedules WHERE id = %s", (schedule.id,)
                    )
                ).fetchone()
                if existing is not None:
                    if attempts > 1 and existing[0].get("incarnation") == schedule.incarnation:
                        return ScheduleOutcome(schedule, created=True)
                    raise schedule_exists(schedule.id)
                try:
                    await conn.execute(
                        "INSERT INTO schedules (id, creator, request_id, request_hash, snapshot)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (
                            schedule.id,
                            schedule.creator,
                            schedule.request_id or None,
                            request_hash,
                            snapshot,
                        ),
                    )
                except psycopg.errors.UniqueViolation as exc:
                    raise schedule_exists(schedule.id) from exc
            return ScheduleOutcome(schedule, created=True)

        return await self._run(attempt, what="create_schedule")

    async def get_schedule(self, schedule_id: str) -> Schedule:
        async def read(conn: AsyncConnection[Any]) -> Schedule:
            return await _load_schedule(conn, schedule_id)

        return await self._run(read, what="get_schedule")

    async def update_schedule(self, schedule_id: str, mutate: ScheduleMutation) -> Schedule:
        async def attempt(conn: AsyncConnection[Any]) -> Schedule:
            async with conn.transaction():
                current = await _load_schedule(conn, schedule_id, for_update=True)
                changed = mutate(current)
                if changed != current:
                    await conn.execute(
                        "UPDATE schedules SET snapshot = %s WHERE id = %s",
                        (Jsonb(schedule_to_dict(changed), dumps=codec.dumps), schedule_id),
                    )
            return changed

        return await self._run(attempt, what="update_schedule")

    async def delete_schedule(self, schedule_id: str) -> None:
        async def attempt(conn: AsyncConnection[Any]) -> bool:
            cursor = await conn.execute("DELETE FROM schedules WHERE id = %s", (schedule_id,))
            return cursor.rowcount > 0

        if not await self._run(attempt, what="delete_schedule"):
            raise schedule_not_found(schedule_id)

    async def list_schedules(self, page_size: int, after: str = "") -> SchedulePage:
        async def read(conn: AsyncConnection[Any]) -> list[Any]:
            cursor = await conn.execute(
                "SELECT snapshot FROM schedules WHERE id > %s ORDER BY id LIMIT %s",
                (after, page_size + 1),
            )
            return await cursor.fetchall()

        rows = await self._run(read, what="list_schedules")
        schedules = [schedule_from_dict(r[0]) for r in rows[:page_size]]
        return SchedulePage(schedules, more=len(rows) > page_size)

    # Step cache: synchronous by the executor's contract. A lookup is one indexed
    # statement (well under a millisecond on a nearby server); when the database is
    # unreachable the cache degrades to misses and dropped writes rather than stalling
    # the event loop for a retry budget.

    def cache_get(self, key: str) -> Any | None:
        for _ in range(2):
            try:
                with self._cache_pool.connection() as conn:
                    row = conn.execute(
                        "SELECT value FROM step_cache WHERE key = %s", (key,)
                    ).fetchone()
                return row[0] if row else None
            except TRANSIENT_ERRORS as exc:
                self._connection_trouble(exc)
                error = exc
        logger.warning("step cache unavailable, treating %s as a miss: %s", key, error)
        return None

    def cache_put(self, key: str, value: Any) -> None:
        for _ in range(2):
            try:
                with self._cache_pool.connection() as conn:
                    conn.execute(
                        "INSERT INTO step_cache (key, value) VALUES (%s, %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, Jsonb(value, dumps=codec.dumps)),
                    )
                return
            except TRANSIENT_ERRORS as exc:
                self._connection_trouble(exc)
                error = exc
        logger.warning("step cache unavailable, not caching %s: %s", key, error)

    def cache_delete(self, key: str) -> None:
        try:
            with self._cache_pool.connection() as conn:
                conn.execute("DELETE FROM step_cache WHERE key = %s", (key,))
        except TRANSIENT_ERRORS as exc:
            # Harmless: the entry is checked again, and replaced, by the next run using it.
            self._connection_trouble(exc)
            logger.warning("step cache unavailable, not forgetting %s: %s", key, exc)

    # Leases: which replica looks after a run (see store/leases.py).

    def leases(self, owner: str, ttl_seconds: float) -> PostgresRunLeases:
        return PostgresRunLeases(self, owner, ttl_seconds)

    # LISTEN/NOTIFY

    async def _listen_forever(self) -> None:
        """One LISTEN connection per process; reconnects with backoff, then catches up."""
        policy = self._retry
        backoff = policy.initial_seconds
        connected_before = False
        while True:
            try:
                conn = await AsyncConnection.connect(self._url, **_CONNECTION_KWARGS)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    if connected_before:
                        self._reconnects += 1
                        logger.info("run store listener reconnected; catching up watchers")
                    connected_before = True
                    # Anything committed while not listening is only in the event log.
                    await self._catch_up()
                    self._listening.set()
                    backoff = policy.initial_seconds
                    while True:
                        async for notify in conn.notifies(timeout=policy.listen_check_seconds):
                            await self._on_notify(notify.payload)
                        # Quiet for a while: prove the connection is still alive.
                        await conn.execute("SELECT 1")
            except _LISTENER_ERRORS as exc:
                logger.warning(
                    "run store listener lost its connection, reconnecting in %.2fs: %s",
                    backoff,
                    _describe(exc),
                )
            except Exception:
                # Never leave the replica deaf: reconnect and catch up from the log.
                logger.exception("run store listener failed, reconnecting in %.2fs", backoff)
            self._listening.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, policy.max_seconds)

    async def _on_notify(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            run_id, revision = str(data["run"]), int(data["revision"])
            state, writer = RunState(data["state"]), str(data["by"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed run notification %r", payload[:200])
            return
        if writer != self._writer:
            for listener in self._revision_listeners:
                try:
                    await listener(run_id, revision, state)
                except Exception:
                    logger.exception("a revision listener failed for runs/%s", run_id)
        if self.hub.watcher_count(run_id) == 0:
            return
        latest = self.hub.latest_revision(run_id)
        if revision <= latest:
            return
        await self._publish_after(run_id, latest or revision - 1)

    async def _catch_up(self) -> None:
        for run_id in self.hub.watched_runs():
            latest = self.hub.latest_revision(run_id)
            if latest:
                await self._publish_after(run_id, latest)
            else:
                # Nothing in memory: the current snapshot wakes any watcher that is behind
                # it, and RevisionHub sends it to the event log for the ones in between.
                try:
                    self.hub.publish(await self._load_once(run_id))
                except NotFound:
                    continue

    async def _publish_after(self, run_id: str, revision: int) -> None:
        async with self._pool.connection() as conn:
            newer = await _revisions_after(conn, run_id, revision)
            if newer is None:
                newer = [await _load(conn, run_id)]
        for run in newer:
            self.hub.publish(run)

    async def _load_once(self, run_id: str) -> Run:
        async with self._pool.connection() as conn:
            return await _load(conn, run_id)


class PostgresRunLeases(RunLeases):
    """Leases in table run_leases, timed by the database clock, so the replicas' clocks
    need not agree."""

    def __init__(self, store: PostgresRunStore, owner: str, ttl_seconds: float) -> None:
        self.owner = owner
        self._store = store
        self._ttl = ttl_seconds

    async def acquire(self, run_id: str) -> bool:
        async def attempt(conn: AsyncConnection[Any]) -> bool:
            cursor = await conn.execute(
                "INSERT INTO run_leases (run_id, owner, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))"
                " ON CONFLICT (run_id) DO UPDATE"
                " SET owner = excluded.owner, expires_at = excluded.expires_at"
                " WHERE run_leases.owner = excluded.owner OR run_leases.expires_at < now()"
                " RETURNING run_id",
                (run_id, self.owner, self._ttl),
            )
            return await cursor.fetchone() is not None

        return await self._store._run(attempt, what="lease acquire")

    async def renew(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()

        async def attempt(conn: AsyncConnection[Any]) -> set[str]:
            cursor = await conn.execute(
                "UPDATE run_leases SET expires_at = now() + make_interval(secs => %s)"
                " WHERE owner = %s AND run_id = ANY(%s) RETURNING run_id",
                (self._ttl, self.owner, list(run_ids)),
            )
            return {row[0] for row in await cursor.fetchall()}

        return await self._store._run(attempt, what="lease renew")

    async def release(self, run_id: str) -> None:
        async def attempt(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "DELETE FROM run_leases WHERE run_id = %s AND owner = %s", (run_id, self.owner)
            )

        await self._store._run(attempt, what="lease release")

    async def hand_over(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return

        async def attempt(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE run_leases SET expires_at = now() - interval '1 second'"
                " WHERE owner = %s AND run_id = ANY(%s)",
                (self.owner, list(run_ids)),
            )

        await self._store._run(attempt, what="lease hand-over")

    async def claim_expired(self, limit: int) -> list[str]:
        async def attempt(conn: AsyncConnection[Any]) -> list[str]:
            cursor = await conn.execute(
                "UPDATE run_leases SET owner = %s, expires_at = now() + make_interval(secs => %s)"
                " WHERE run_id IN (SELECT run_id FROM run_leases WHERE expires_at < now()"
                " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING run_id",
                (self.owner, self._ttl, limit),
            )
            return sorted(row[0] for row in await cursor.fetchall())

        return await self._store._run(attempt, what="lease claim")


def _same_creation(stored: Run, run: Run) -> bool:
    """Whether `stored` is `run` as inserted (the creation time has microseconds)."""
    return (
        stored.id == run.id
        and stored.create_time == run.create_time
        and stored.request_id == run.request_id
    )


def _already_exists(run_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"run runs/{run_id} already exists",
        resource_name=f"runs/{run_id}",
        reason="RUN_ALREADY_EXISTS",
    )


async def _load_schedule(
    conn: AsyncConnection[Any], schedule_id: str, *, for_update: bool = False
) -> Schedule:
    statement = "SELECT snapshot FROM schedules WHERE id = %s" + (
        " FOR UPDATE" if for_update else ""
    )
    row = await (await conn.execute(statement.encode(), (schedule_id,))).fetchone()
    if row is None:
        raise schedule_not_found(schedule_id)
    return schedule_from_dict(row[0])


async def _announce(conn: AsyncConnection[Any], run: Run, writer: str) -> None:
    """NOTIFY inside the writing transaction: delivered at commit, never for a rollback."""
    payload = json.dumps(
        {"run": run.id, "revision": run.revision, "state": int(run.state), "by": writer},
        separators=(",", ":"),
    )
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


async def _load(conn: AsyncConnection[Any], run_id: str, *, for_update: bool = False) -> Run:
    statement = "SELECT snapshot FROM runs WHERE id = %s" + (" FOR UPDATE" if for_update else "")
    row = await (await conn.execute(statement.encode(), (run_id,))).fetchone()
    if row is None:
        raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
    return codec.run_from_dict(row[0])


async def _write_steps(conn: AsyncConnection[Any], run: Run, previous: Run | None) -> None:
    before = {s.name: s for s in previous.steps} if previous else {}
    rows = [
        (
            run.id,
            step.name,
            position,
            int(step.state),
            Jsonb(codec.step_to_dict(step), dumps=codec.dumps),
        )
        for position, step in enumerate(run.steps)
        if before.get(step.name) != step
    ]
    if not rows:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO steps (run_id, name, position, state, detail)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id, name) DO UPDATE SET position = excluded.position,"
            " state = excluded.state, detail = excluded.detail",
            rows,
        )


async def _revisions_after(
    conn: AsyncConnection[Any], run_id: str, revision: int
) -> list[Run] | None:
    # One statement, so the run's latest revision and its log come from one snapshot: a
    # revision committed in between must not make a complete log look incomplete.
    cursor = await conn.execute(
        "SELECT r.revision, e.revision, e.snapshot FROM runs r"
        " LEFT JOIN run_events e ON e.run_id = r.id AND e.revision > %s"
        " WHERE r.id = %s ORDER BY e.revision",
        (revision, run_id),
    )
    rows = await cursor.fetchall()
    if not rows:
        raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
    latest = rows[0][0]
    events = [(number, snapshot) for _, number, snapshot in rows if number is not None]
    if events and events[0][0] != revision + 1:
        return None
    if not events and latest != revision:
        return None
    return [codec.run_from_dict(snapshot) for _, snapshot in events]
