"""The RunStore for several replicas: PostgreSQL through psycopg 3 and a connection pool.

Same tables and semantics as the SQLite store. What sharing one database between
replicas adds:

- Every write is one transaction. Updates of a run lock its row (SELECT ... FOR UPDATE),
  so concurrent updates from several replicas apply one after the other; creates with the
  same request_id from the same principal serialize on a transaction-level advisory lock
  keyed by both, so exactly one of them inserts.
- Every stored revision is announced with NOTIFY (payload `{"run": id, "revision": n,
  "state": s, "by": writer, "cursor": c}`, plus `"deleted": true` for a deletion;
  delivered at commit, in commit order). Each replica LISTENs
  on one connection, loads the new revisions of the runs its own watchers follow (one
  query per notification, not per watcher) and publishes them to its RevisionHub. After
  the listening connection is lost it reconnects and catches up every watched run from
  the event log, so nothing written meanwhile is missed.
- Transient errors (connection lost, server restarting, serialization failures) are
  retried with exponential backoff and jitter; past the retry budget a call fails with
  Unavailable. A retried update may apply its mutation again after a commit whose
  acknowledgement was lost; that is harmless because the controller's mutations are
  idempotent (applying one to its own result changes nothing, so no revision is added).
- The change feed (run_changes, RunStore.changes_after) must be in commit order: a
  reader that has seen cursor n must never later find a smaller one appear. A sequence
  does not give that (transaction A takes 5, B takes 6 and commits first; a reader at 6
  never sees 5). So every write takes one transaction-level advisory lock (_CHANGE_LOCK)
  as its last step before COMMIT and numbers its change MAX(cursor) + 1 under it: the
  next writer's statement runs after this one's commit, so cursors are contiguous and
  in commit order across replicas. The lock is held only from that statement to COMMIT
  (a round trip or two); PostgreSQL already serializes the commits of transactions that
  NOTIFY (PreCommit_Notify), so it adds little (see tests/store/test_run_changes_pg.py).
  The NOTIFY carries the cursor, which wakes every replica's wait_for_change.
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
from skit_pipelines.notifications.model import (
    Delivery,
    DeliveryPage,
    DeliveryState,
    Subscription,
    SubscriptionHealth,
    SubscriptionOutcome,
    SubscriptionPage,
    delivery_from_dict,
    delivery_to_dict,
    subscription_from_dict,
    subscription_to_dict,
)
from skit_pipelines.store import codec
from skit_pipelines.store.base import (
    DEFAULT_CHANGE_LIMIT,
    ChangePage,
    CreateOutcome,
    RevisionHub,
    RevisionListener,
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
    subscription_exists,
    subscription_not_found,
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
_CHANGE_LOCK = 2
"""Numbers run_changes in commit order (see the module docstring)."""
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
    # 5: the change feed (issue 17): one row per committed run write. Cursors are
    # numbered under _CHANGE_LOCK, so they are contiguous and in commit order (see
    # _append_change). No foreign key: a deleted run's last change stays.
    """
    CREATE TABLE run_changes (
        cursor bigint PRIMARY KEY,
        run_id text COLLATE "C" NOT NULL,
        revision integer NOT NULL,
        deleted boolean NOT NULL,
        snapshot jsonb NOT NULL
    );
    """,
    # 6: subscriptions and their deliveries (issue 17, notifications): a subscription's
    # value as JSON with its feed cursor in a column; one delivery per (subscription,
    # change), and at most one per run and state it entered (dedupe).
    """
    CREATE TABLE subscriptions (
        id text COLLATE "C" PRIMARY KEY,
        creator text NOT NULL,
        request_id text,
        request_hash text NOT NULL,
        cursor bigint NOT NULL,
        snapshot jsonb NOT NULL
    );
    CREATE UNIQUE INDEX subscriptions_by_request ON subscriptions (creator, request_id);
    CREATE TABLE deliveries (
        subscription_id text COLLATE "C" NOT NULL
            REFERENCES subscriptions (id) ON DELETE CASCADE,
        cursor bigint NOT NULL,
        dedupe text NOT NULL,
        state integer NOT NULL,
        next_attempt_time timestamptz,
        last_attempt_time timestamptz,
        last_outcome text NOT NULL DEFAULT '',
        detail jsonb NOT NULL,
        PRIMARY KEY (subscription_id, cursor)
    );
    CREATE UNIQUE INDEX deliveries_once ON deliveries (subscription_id, dedupe);
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_time);
    CREATE INDEX deliveries_by_attempt ON deliveries (subscription_id, last_attempt_time);
    """,
)

_MAX_CURSOR = 2**63 - 1
"""Above every change cursor (bigint)."""

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
        change_limit: int = DEFAULT_CHANGE_LIMIT,
        hub: RevisionHub | None = None,
        pool_size: int = 10,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(hub)
        self._url = url
        self._history_limit = history_limit
        self._change_limit = max(1, change_limit)
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
        change_limit: int = DEFAULT_CHANGE_LIMIT,
        hub: RevisionHub | None = None,
        pool_size: int = 10,
        retry: RetryPolicy | None = None,
    ) -> PostgresRunStore:
        store = cls(
            url,
            history_limit=history_limit,
            change_limit=change_limit,
            hub=hub,
            pool_size=pool_size,
            retry=retry,
        )
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
        snapshot = Jsonb(codec.run_json(run), dumps=_encoded)
        attempts = 0
        appended = 0

        def ours(stored: Run) -> bool:
            # Only a retry can find its own run: an earlier attempt committed, and the
            # connection broke before the acknowledgement arrived.
            return attempts > 1 and _same_creation(stored, run)

        async def attempt(conn: AsyncConnection[Any]) -> CreateOutcome:
            nonlocal attempts, appended
            attempts += 1
            # A cursor an earlier attempt took was rolled back with it (or, committed but
            # unacknowledged, reaches change_signal through this replica's own NOTIFY).
            appended = 0
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
                appended = await self._append_change(conn, run, snapshot)
            return CreateOutcome(run=run, created=True)

        outcome = await self._run(attempt, what="create_run")
        if outcome.created:
            # Watchers of the run first: the change feed's readers (WatchRuns, the
            # notifier, which queries the store) wake after them.
            self.hub.publish(run)
            self.change_signal.advance(appended)
        return outcome

    async def get_run(self, run_id: str) -> Run:
        async def read(conn: AsyncConnection[Any]) -> Run:
            return await _load(conn, run_id)

        return await self._run(read, what="get_run")

    async def update_run(self, run_id: str, mutate: RunMutation) -> Run:
        appended = 0

        async def attempt(conn: AsyncConnection[Any]) -> Run:
            nonlocal appended
            appended = 0  # an earlier attempt's cursor was rolled back (see create_run)
            async with conn.transaction():
                current = await _load(conn, run_id, for_update=True)
                changed = mutate(current)
                if changed == current:
                    return current
                updated = replace(changed, revision=current.revision + 1, update_time=_now())
                snapshot = Jsonb(codec.run_json(updated), dumps=_encoded)
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
                appended = await self._append_change(conn, updated, snapshot)
            return updated

        updated = await self._run(attempt, what="update_run")
        # Watchers of the run first: the change feed's readers (WatchRuns, the
        # notifier, which queries the store) wake after them.
        self.hub.publish(updated)
        self.change_signal.advance(appended)
        return updated

    async def _append_change(
        self, conn: AsyncConnection[Any], run: Run, snapshot: Jsonb, *, deleted: bool = False
    ) -> int:
        """The write's last statements before COMMIT: its change, numbered under
        _CHANGE_LOCK (see the module docstring), and the NOTIFY announcing it."""
        # Pipelined, so the lock is held for no extra round trip; the INSERT is a statement
        # of its own, after the lock: its snapshot holds every change committed before, so
        # MAX(cursor) is the last one.
        async with conn.pipeline():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _CHANGE_LOCK)
            )
            inserted = await conn.execute(
                "WITH change AS ("
                " INSERT INTO run_changes (cursor, run_id, revision, deleted, snapshot)"
                " SELECT COALESCE(MAX(cursor), 0) + 1, %s, %s, %s, %s FROM run_changes"
                " RETURNING cursor)"
                " SELECT cursor, pg_notify(%s, json_build_object('run', %s::text,"
                " 'revision', %s::int, 'state', %s::int, 'by', %s::text, 'cursor', cursor,"
                " 'deleted', %s::boolean)::text) FROM change",
                (
                    run.id,
                    run.revision,
                    deleted,
                    snapshot,
                    CHANNEL,
                    run.id,
                    run.revision,
                    int(run.state),
                    self._writer,
                    deleted,
                ),
            )
        row = await inserted.fetchone()
        assert row is not None
        cursor = int(row[0])
        if cursor % change_prune_interval(self._change_limit) == 0:
            await conn.execute(
                "DELETE FROM run_changes WHERE cursor <= %s", (cursor - self._change_limit,)
            )
        return cursor

    async def latest_change_cursor(self) -> int:
        async def read(conn: AsyncConnection[Any]) -> int:
            row = await (await conn.execute("SELECT MAX(cursor) FROM run_changes")).fetchone()
            return int(row[0] or 0) if row else 0

        return await self._run(read, what="latest_change_cursor")

    async def changes_after(self, after_cursor: int, limit: int) -> ChangePage:
        async def read(conn: AsyncConnection[Any]) -> list[Any]:
            # One statement, so the span and the page come from one snapshot.
            cursor = await conn.execute(
                "SELECT s.lo, s.hi, c.cursor, c.deleted, c.snapshot"
                " FROM (SELECT MIN(cursor) AS lo, MAX(cursor) AS hi FROM run_changes) s"
                " LEFT JOIN LATERAL (SELECT cursor, deleted, snapshot FROM run_changes"
                " WHERE cursor > %s ORDER BY cursor LIMIT %s) c ON true"
                " ORDER BY c.cursor",
                (after_cursor, max(0, limit)),
            )
            return await cursor.fetchall()

        rows = await self._run(read, what="changes_after")
        latest = int(rows[0][1] or 0)
        oldest = int(rows[0][0]) if rows[0][0] is not None else latest + 1
        changes = [
            RunChange(cursor=int(r[2]), run=codec.run_from_dict(r[4]), deleted=bool(r[3]))
            for r in rows
            if r[2] is not None
        ]
        return ChangePage(
            changes=changes, oldest_cursor=oldest, latest_cursor=latest, after_cursor=after_cursor
        )

    async def delete_run(self, run_id: str) -> None:
        appended = 0

        async def attempt(conn: AsyncConnection[Any]) -> bool:
            nonlocal appended
            appended = 0  # an earlier attempt's cursor was rolled back (see create_run)
            async with conn.transaction():
                for table in _RUN_TABLES:
                    await conn.execute(
                        sql.SQL("DELETE FROM {} WHERE run_id = %s").format(sql.Identifier(table)),
                        (run_id,),
                    )
                row = await (
                    await conn.execute(
                        "DELETE FROM runs WHERE id = %s RETURNING snapshot", (run_id,)
                    )
                ).fetchone()
                if row is None:
                    return False
                last = Jsonb(row[0], dumps=codec.dumps)
                appended = await self._append_change(
                    conn, codec.run_from_dict(row[0]), last, deleted=True
                )
                return True

        if not await self._run(attempt, what="delete_run"):
            raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
        self.change_signal.advance(appended)

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

    # Subscriptions (notifications/)

    async def create_subscription(
        self, subscription: Subscription, request_hash: str = ""
    ) -> SubscriptionOutcome:
        snapshot = Jsonb(subscription_to_dict(subscription), dumps=codec.dumps)
        attempts = 0

        def ours(stored: Subscription) -> bool:
            # A retry finding its own insert (the acknowledgement was lost).
            return attempts > 1 and stored.create_time == subscription.create_time

        async def attempt(conn: AsyncConnection[Any]) -> SubscriptionOutcome:
            nonlocal attempts
            attempts += 1
            async with conn.transaction():
                if subscription.request_id:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        (
                            _LOCK_NAMESPACE,
                            json.dumps(
                                ["subscription", subscription.creator, subscription.request_id]
                            ),
                        ),
                    )
                    row = await (
                        await conn.execute(
                            "SELECT snapshot, request_hash, cursor FROM subscriptions"
                            " WHERE creator = %s AND request_id = %s",
                            (subscription.creator, subscription.request_id),
                        )
                    ).fetchone()
                    if row is not None:
                        earlier = replace(subscription_from_dict(row[0]), cursor=row[2])
                        if ours(earlier):
                            return SubscriptionOutcome(subscription, created=True)
                        return SubscriptionOutcome(earlier, created=False, request_hash=row[1])
                existing = await (
                    await conn.execute(
                        "SELECT snapshot FROM subscriptions WHERE id = %s", (subscription.id,)
                    )
                ).fetchone()
                if existing is not None:
                    if ours(subscription_from_dict(existing[0])):
                        return SubscriptionOutcome(subscription, created=True)
                    raise subscription_exists(subscription.id)
                try:
                    await conn.execute(
                        "INSERT INTO subscriptions"
                        " (id, creator, request_id, request_hash, cursor, snapshot)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        (
                            subscription.id,
                            subscription.creator,
                            subscription.request_id or None,
                            request_hash,
                            subscription.cursor,
                            snapshot,
                        ),
                    )
                except psycopg.errors.UniqueViolation as exc:
                    raise subscription_exists(subscription.id) from exc
            return SubscriptionOutcome(subscription, created=True)

        return await self._run(attempt, what="create_subscription")

    async def get_subscription(self, subscription_id: str) -> Subscription:
        async def read(conn: AsyncConnection[Any]) -> Subscription:
            row = await (
                await conn.execute(
                    "SELECT snapshot, cursor FROM subscriptions WHERE id = %s",
                    (subscription_id,),
                )
            ).fetchone()
            if row is None:
                raise subscription_not_found(subscription_id)
            return (await _with_health(conn, [row]))[0]

        return await self._run(read, what="get_subscription")

    async def list_subscriptions(self, page_size: int, after: str = "") -> SubscriptionPage:
        async def read(conn: AsyncConnection[Any]) -> SubscriptionPage:
            cursor = await conn.execute(
                "SELECT snapshot, cursor FROM subscriptions WHERE id > %s ORDER BY id LIMIT %s",
                (after, page_size + 1),
            )
            rows = await cursor.fetchall()
            found = await _with_health(conn, rows[:page_size])
            return SubscriptionPage(tuple(found), more=len(rows) > page_size)

        return await self._run(read, what="list_subscriptions")

    async def delete_subscription(self, subscription_id: str) -> None:
        async def attempt(conn: AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM deliveries WHERE subscription_id = %s", (subscription_id,)
                )
                cursor = await conn.execute(
                    "DELETE FROM subscriptions WHERE id = %s", (subscription_id,)
                )
                return cursor.rowcount > 0

        if not await self._run(attempt, what="delete_subscription"):
            raise subscription_not_found(subscription_id)

    async def advance_subscription(
        self, subscription_id: str, from_cursor: int, to_cursor: int, deliveries: Sequence[Delivery]
    ) -> bool:
        rows = [
            (
                subscription_id,
                d.cursor,
                d.dedupe_key,
                int(d.state),
                d.next_attempt_time,
                Jsonb(delivery_to_dict(d), dumps=codec.dumps),
            )
            for d in deliveries
        ]

        async def attempt(conn: AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                # A retry after a lost acknowledgement finds the cursor moved and answers
                # False: the worker then rereads the subscription, nothing is lost.
                moved = await conn.execute(
                    "UPDATE subscriptions SET cursor = %s WHERE id = %s AND cursor = %s",
                    (to_cursor, subscription_id, from_cursor),
                )
                if moved.rowcount == 0:
                    return False
                if rows:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(
                            "INSERT INTO deliveries (subscription_id, cursor, dedupe, state,"
                            " next_attempt_time, detail) VALUES (%s, %s, %s, %s, %s, %s)"
                            " ON CONFLICT DO NOTHING",
                            rows,
                        )
            return True

        return await self._run(attempt, what="advance_subscription")

    async def claim_deliveries(
        self,
        now: datetime,
        claim_until: datetime,
        limit: int,
        skip: Sequence[str] = (),
        *,
        per_subscription: int = 4,
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        pending = int(DeliveryState.PENDING)

        async def attempt(conn: AsyncConnection[Any]) -> list[Any]:
            # Replicas claiming at once pick the same rows; the second UPDATE waits for
            # the first's row locks and then re-checks its WHERE on the new row versions
            # (READ COMMITTED), where the claim has moved next_attempt_time past `now`: it
            # skips them. So each due delivery goes to exactly one claimer.
            cursor = await conn.execute(
                "UPDATE deliveries d SET next_attempt_time = %s FROM ("
                " SELECT subscription_id, cursor FROM ("
                " SELECT subscription_id, cursor, next_attempt_time, row_number()"
                " OVER (PARTITION BY subscription_id ORDER BY next_attempt_time, cursor) AS n"
                " FROM deliveries WHERE state = %s AND next_attempt_time <= %s"
                " AND NOT (subscription_id = ANY(%s))) ranked"
                " WHERE n <= %s ORDER BY next_attempt_time LIMIT %s) due"
                " WHERE d.subscription_id = due.subscription_id AND d.cursor = due.cursor"
                " AND d.state = %s AND d.next_attempt_time <= %s"
                " RETURNING d.detail",
                (
                    claim_until,
                    pending,
                    now,
                    list(skip),
                    per_subscription,
                    limit,
                    pending,
                    now,
                ),
            )
            return await cursor.fetchall()

        rows = await self._run(attempt, what="claim_deliveries")
        return [delivery_from_dict(r[0]) for r in rows]

    async def record_attempt(self, delivery: Delivery) -> bool:
        last = delivery.attempts[-1] if delivery.attempts else None

        async def attempt(conn: AsyncConnection[Any]) -> bool:
            cursor = await conn.execute(
                "UPDATE deliveries SET state = %s, next_attempt_time = %s,"
                " last_attempt_time = %s, last_outcome = %s, detail = %s"
                " WHERE subscription_id = %s AND cursor = %s AND state = %s",
                (
                    int(delivery.state),
                    delivery.next_attempt_time,
                    last.time if last else None,
                    last.outcome if last else "",
                    Jsonb(delivery_to_dict(delivery), dumps=codec.dumps),
                    delivery.subscription_id,
                    delivery.cursor,
                    int(DeliveryState.PENDING),
                ),
            )
            return cursor.rowcount > 0

        return await self._run(attempt, what="record_attempt")

    async def list_deliveries(
        self, subscription_id: str, page_size: int, before_cursor: int | None = None
    ) -> DeliveryPage:
        async def read(conn: AsyncConnection[Any]) -> list[Any] | None:
            exists = await (
                await conn.execute("SELECT 1 FROM subscriptions WHERE id = %s", (subscription_id,))
            ).fetchone()
            if exists is None:
                return None
            cursor = await conn.execute(
                "SELECT detail FROM deliveries WHERE subscription_id = %s AND cursor < %s"
                " ORDER BY cursor DESC LIMIT %s",
                (
                    subscription_id,
                    before_cursor if before_cursor is not None else _MAX_CURSOR,
                    page_size + 1,
                ),
            )
            return await cursor.fetchall()

        rows = await self._run(read, what="list_deliveries")
        if rows is None:
            raise subscription_not_found(subscription_id)
        found = tuple(delivery_from_dict(r[0]) for r in rows[:page_size])
        return DeliveryPage(found, more=len(rows) > page_size)

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
                    self.change_signal.advance(await self._latest_change_once())
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
            self.change_signal.advance(int(data.get("cursor", 0)))
            if data.get("deleted"):
                return
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

    async def _latest_change_once(self) -> int:
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT MAX(cursor) FROM run_changes")).fetchone()
        return int(row[0] or 0) if row else 0

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


async def _with_health(conn: AsyncConnection[Any], rows: Sequence[Any]) -> list[Subscription]:
    """Subscriptions from (snapshot, cursor) rows, with their deliveries' health."""
    found = [replace(subscription_from_dict(r[0]), cursor=r[1]) for r in rows]
    if not found:
        return []
    ids = [s.id for s in found]
    counts: dict[tuple[str, int], int] = {}
    for sub_id, state, count in await (
        await conn.execute(
            "SELECT subscription_id, state, count(*) FROM deliveries"
            " WHERE subscription_id = ANY(%s) GROUP BY subscription_id, state",
            (ids,),
        )
    ).fetchall():
        counts[(sub_id, state)] = count
    latest = {
        row[0]: (row[1], row[2])
        for row in await (
            await conn.execute(
                "SELECT DISTINCT ON (subscription_id) subscription_id, last_outcome,"
                " last_attempt_time FROM deliveries"
                " WHERE subscription_id = ANY(%s) AND last_attempt_time IS NOT NULL"
                " ORDER BY subscription_id, last_attempt_time DESC",
                (ids,),
            )
        ).fetchall()
    }
    result = []
    for sub in found:
        outcome, when = latest.get(sub.id, ("", None))
        health = SubscriptionHealth(
            pending=counts.get((sub.id, int(DeliveryState.PENDING)), 0),
            failed=counts.get((sub.id, int(DeliveryState.FAILED)), 0),
            delivered=counts.get((sub.id, int(DeliveryState.DELIVERED)), 0),
            last_outcome=outcome,
            last_attempt_time=when,
        )
        result.append(replace(sub, health=health))
    return result


async def _load(conn: AsyncConnection[Any], run_id: str, *, for_update: bool = False) -> Run:
    statement = "SELECT snapshot FROM runs WHERE id = %s" + (" FOR UPDATE" if for_update else "")
    row = await (await conn.execute(statement.encode(), (run_id,))).fetchone()
    if row is None:
        raise NotFound(f"run runs/{run_id} not found", reason="RUN_NOT_FOUND")
    return codec.run_from_dict(row[0])


def _encoded(text: str) -> str:
    """Jsonb's dumps for JSON codec has encoded already: a write passes its run's snapshot
    to three statements, and a Jsonb of the dict would encode it for each."""
    return text


async def _write_steps(conn: AsyncConnection[Any], run: Run, previous: Run | None) -> None:
    rows = [
        (run.id, step.name, position, int(step.state), Jsonb(codec.step_json(step), dumps=_encoded))
        for position, step in changed_steps(run, previous)
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
