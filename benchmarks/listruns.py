"""ListRuns at scale: p50/p99 of pages (first, middle, last) of the store's list_runs over
a million runs on SQLite and on PostgreSQL, unfiltered and filtered by pipeline, by a 1%
state, by a 0.1% label and by a time range; against the bare indexed lookup of the same
page (its rows fetched by primary key and decoded by the same codec) in the same run.
Prints the query plan each case got.

The stores are filled with the stores' own schema (their migrations, run by opening them)
and codec, in bulk (executemany on SQLite, COPY on PostgreSQL) with the rows create_run
writes (the change feed only for the newest runs, the ones its retention keeps); a check
compares the rows a bulk-written run has in every table with those of a run written by
create_run, and reads a sample back through get_run.

Pages are timed in a process whose start-up heap is frozen out of the garbage collector,
as `skit-pipelines serve` freezes its own once started: otherwise a full collection
walking the filler's objects (up to 20 ms) lands on whichever page it happens to.

Runs: one every 365 days / N, each of one of ten pipelines; 1% FAILED, 0.5% CANCELLED,
the rest SUCCEEDED; every run has a team and a requested-by label, 0.1% also
experiment=exp-1; the time range is a 30-day window in the middle (about 8%).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from benchmarks.harness import sample_run
from benchmarks.report import Figure, percentile, spread
from skit_pipelines.domain import Run, RunState
from skit_pipelines.store import codec
from skit_pipelines.store.base import DEFAULT_CHANGE_LIMIT, RunQuery, RunStore, sortable_time
from skit_pipelines.store.sqlite import SqliteRunStore

DEFAULT_RUNS = 1_000_000
PAGE_SIZE = 50
TARGET_P99_MS = 20.0
PIPELINES = tuple(
    f"pipelines/{name}"
    for name in (
        "random-sample-calls",
        "download-tagged-dataset",
        "download-tagged-entity-dataset",
        "publish-compliance-breaches",
        "transcribe-dataset",
        "retrain-slu",
        "random-sample-and-tag-turns-and-calls",
        "generate-sample-conversations",
        "evaluate-slu",
        "evaluate-asr",
    )
)
FAILED_SHARE, CANCELLED_SHARE, LABEL_SHARE = 0.01, 0.005, 0.001
RARE_LABEL = ("experiment", "exp-1")
TEAMS = ("slu", "asr", "analytics", "qa", "platform")
SPAN = timedelta(days=365)
WINDOW = timedelta(days=30)
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
SEED = 14
CHUNK = 10_000
SAMPLES = 30
"""Timed calls per page and kind, unless SAMPLE_SECONDS run out first."""
SAMPLE_SECONDS = 2.0
MIN_SAMPLES = 5
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""A role that may CREATE DATABASE; SKIT_BENCH_POSTGRES_DSN overrides it."""
_ID_MULTIPLIER = 0x9E3779B97F4B
"""Odd, so i -> i * m mod 2**48 is a bijection: unique ids in no particular order."""


def _log(message: str) -> None:
    print(f"  listruns: {message}", file=sys.stderr, flush=True)


# The data set


@dataclass(frozen=True)
class DataSet:
    """What run i is, without keeping a million Run objects: pipeline index, state and
    rare-label flag per run; times and ids follow from i."""

    count: int
    pipeline: array[int]
    state: array[int]
    rare: array[int]

    @classmethod
    def generate(cls, count: int) -> DataSet:
        rng = random.Random(SEED)
        pipeline, state, rare = array("b"), array("b"), array("b")
        for _ in range(count):
            pipeline.append(rng.randrange(len(PIPELINES)))
            roll = rng.random()
            state.append(
                RunState.FAILED
                if roll < FAILED_SHARE
                else RunState.CANCELLED
                if roll < FAILED_SHARE + CANCELLED_SHARE
                else RunState.SUCCEEDED
            )
            rare.append(rng.random() < LABEL_SHARE)
        return cls(count, pipeline, state, rare)

    def create_time(self, i: int) -> datetime:
        return BASE_TIME + SPAN * i / self.count

    def run_id(self, i: int) -> str:
        name = PIPELINES[self.pipeline[i]].removeprefix("pipelines/")
        return f"{name}-{(i * _ID_MULTIPLIER) % (1 << 48):012x}"

    def run(self, template: Run, i: int) -> Run:
        created = self.create_time(i)
        labels = {"team": TEAMS[i % len(TEAMS)], "requested-by": f"service-{i % 10}"}
        if self.rare[i]:
            labels[RARE_LABEL[0]] = RARE_LABEL[1]
        return replace(
            template,
            id=self.run_id(i),
            pipeline=PIPELINES[self.pipeline[i]],
            state=RunState(self.state[i]),
            labels=labels,
            create_time=created,
            start_time=created + timedelta(seconds=1),
            update_time=created + timedelta(minutes=3),
            end_time=created + timedelta(minutes=3),
            request_id="",
        )

    def kept_change(self, i: int) -> int | None:
        """The change feed's cursor for run i's creation, or None if the feed's retention
        (the newest DEFAULT_CHANGE_LIMIT changes) has dropped it."""
        first_kept = max(self.count - DEFAULT_CHANGE_LIMIT, 0)
        return i - first_kept + 1 if i >= first_kept else None

    def position(self, i: int) -> tuple[str, str]:
        """The page position (RunQuery.after) of run i."""
        return sortable_time(self.create_time(i)), self.run_id(i)


def _template() -> Run:
    return sample_run("template", steps=3)


@dataclass(frozen=True)
class Case:
    name: str
    query: RunQuery
    matches: Callable[[DataSet, int], bool]


def _cases(data: DataSet) -> list[Case]:
    middle = BASE_TIME + SPAN / 2
    after, before = middle - WINDOW / 2, middle + WINDOW / 2
    first_after = data.count * (after - BASE_TIME) / SPAN
    last_before = data.count * (before - BASE_TIME) / SPAN
    return [
        Case("unfiltered", RunQuery(), lambda d, i: True),
        Case(
            f"pipeline ({1 / len(PIPELINES):.0%})",
            RunQuery(pipeline=PIPELINES[0]),
            lambda d, i: d.pipeline[i] == 0,
        ),
        Case(
            f"state FAILED ({FAILED_SHARE:.0%})",
            RunQuery(states=frozenset({RunState.FAILED})),
            lambda d, i: d.state[i] == RunState.FAILED,
        ),
        Case(
            f"label {RARE_LABEL[0]}={RARE_LABEL[1]} ({LABEL_SHARE:.1%})",
            RunQuery(labels=dict((RARE_LABEL,))),
            lambda d, i: bool(d.rare[i]),
        ),
        Case(
            f"time range ({WINDOW.days} days)",
            RunQuery(created_after=after, created_before=before),
            lambda d, i: first_after <= i < last_before,
        ),
    ]


@dataclass(frozen=True)
class Page:
    label: str
    query: RunQuery
    expected: tuple[str, ...]
    """The run ids the page must hold, newest first."""


def _pages(data: DataSet, case: Case) -> list[Page]:
    """First, middle and last page of the case's runs, newest first."""
    ranked = [i for i in range(data.count - 1, -1, -1) if case.matches(data, i)]
    pages = []
    for label, start in (
        ("first", 0),
        ("middle", len(ranked) // 2),
        ("last", max(len(ranked) - PAGE_SIZE, 0)),
    ):
        after = data.position(ranked[start - 1]) if start else None
        ids = tuple(data.run_id(i) for i in ranked[start : start + PAGE_SIZE])
        pages.append(Page(label, replace(case.query, page_size=PAGE_SIZE, after=after), ids))
    return pages


# Filling the stores


def _rows(data: DataSet, template: Run, start: int, stop: int) -> Iterator[Run]:
    for i in range(start, stop):
        yield data.run(template, i)


def _run_rows(run: Run) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows create_run writes for `run`: runs, run_labels and steps (run_events
    repeats the snapshot)."""
    snapshot = codec.dumps(codec.run_to_dict(run))
    runs_row = (
        run.id,
        run.pipeline,
        int(run.state),
        run.create_time,
        run.revision,
        run.request_id or None,
        snapshot,
    )
    labels = [(run.id, k, v, run.create_time) for k, v in run.labels.items()]
    steps = [
        (run.id, step.name, position, int(step.state), codec.dumps(codec.step_to_dict(step)))
        for position, step in enumerate(run.steps)
    ]
    return runs_row, labels, steps


async def fill_sqlite(path: Path, data: DataSet) -> None:
    """Creates the schema by opening the store, then writes every run in one transaction."""
    await SqliteRunStore(path).close()
    template = _template()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    for start in range(0, data.count, CHUNK):
        runs, labels, steps, events, changes = [], [], [], [], []
        for i, run in enumerate(
            _rows(data, template, start, min(start + CHUNK, data.count)), start
        ):
            row, run_labels, run_steps = _run_rows(run)
            runs.append((*row[:3], sortable_time(run.create_time), *row[4:]))
            labels.extend((*label[:3], sortable_time(run.create_time)) for label in run_labels)
            steps.extend(run_steps)
            events.append((run.id, run.revision, row[6]))
            change = data.kept_change(i)
            if change is not None:
                changes.append((change, run.id, run.revision, 0, row[6]))
        db.executemany(
            "INSERT INTO runs (id, pipeline, state, create_time, revision, request_id,"
            " snapshot) VALUES (?, ?, ?, ?, ?, ?, ?)",
            runs,
        )
        db.executemany(
            "INSERT INTO run_labels (run_id, key, value, create_time) VALUES (?, ?, ?, ?)", labels
        )
        db.executemany(
            "INSERT INTO steps (run_id, name, position, state, detail) VALUES (?, ?, ?, ?, ?)",
            steps,
        )
        db.executemany(
            "INSERT INTO run_events (run_id, revision, snapshot) VALUES (?, ?, ?)", events
        )
        db.executemany(
            "INSERT INTO run_changes (cursor, run_id, revision, deleted, snapshot)"
            " VALUES (?, ?, ?, ?, ?)",
            changes,
        )
    db.execute("COMMIT")
    db.close()


async def fill_postgres(url: str, data: DataSet) -> None:
    """Creates the schema by opening the store, then COPYs every run in."""
    import psycopg

    from skit_pipelines.store.postgres import PostgresRunStore

    await (await PostgresRunStore.open(url)).close()
    template = _template()
    async with await psycopg.AsyncConnection.connect(url) as db:
        async with db.cursor() as cursor:
            for start in range(0, data.count, CHUNK * 10):
                runs, labels, steps, changes = [], [], [], []
                stop = min(start + CHUNK * 10, data.count)
                for i, run in enumerate(_rows(data, template, start, stop), start):
                    row, run_labels, run_steps = _run_rows(run)
                    runs.append(row)
                    labels.extend(run_labels)
                    steps.extend(run_steps)
                    change = data.kept_change(i)
                    if change is not None:
                        changes.append((change, run.id, run.revision, False, row[6]))
                for statement, rows in (
                    (
                        "COPY runs (id, pipeline, state, create_time, revision, request_id,"
                        " snapshot) FROM STDIN",
                        runs,
                    ),
                    ("COPY run_labels (run_id, key, value, create_time) FROM STDIN", labels),
                    ("COPY steps (run_id, name, position, state, detail) FROM STDIN", steps),
                    (
                        "COPY run_events (run_id, revision, snapshot) FROM STDIN",
                        [(r[0], r[4], r[6]) for r in runs],
                    ),
                    (
                        "COPY run_changes (cursor, run_id, revision, deleted, snapshot) FROM STDIN",
                        changes,
                    ),
                ):
                    async with cursor.copy(statement) as copy:
                        for values in rows:
                            await copy.write_row(values)
            await db.commit()
        # As autovacuum would after a bulk load; the SQLite store never runs ANALYZE.
        await db.set_autocommit(True)
        await db.execute("VACUUM ANALYZE")


# Checking the bulk path against create_run


async def _table_rows(store: RunStore, run_id: str) -> dict[str, int]:
    """How many rows each table that names a run holds for `run_id`."""
    if isinstance(store, SqliteRunStore):
        db = store._db
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {}
        for table in tables:
            columns = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
            column = "id" if table == "runs" else "run_id" if "run_id" in columns else ""
            if column:
                sql = f"SELECT count(*) FROM {table} WHERE {column} = ?"
                counts[table] = db.execute(sql, (run_id,)).fetchone()[0]
        return counts
    import psycopg

    async with await psycopg.AsyncConnection.connect(store._url) as db:
        cursor = await db.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND (column_name = 'run_id' OR (table_name = 'runs' AND column_name = 'id'))"
        )
        counts = {}
        for (table,) in await cursor.fetchall():
            column = "id" if table == "runs" else "run_id"
            row = await (
                await db.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} = %s",
                    (run_id,),
                )
            ).fetchone()
            counts[table] = row[0] if row else 0
        return counts


async def check_fill(store: RunStore, data: DataSet) -> list[str]:
    """What differs between the bulk path and the store's own: empty when nothing."""
    template = _template()
    problems = []
    for i in (0, data.count // 2, data.count - 1):
        expected = data.run(template, i)
        if await store.get_run(expected.id) != expected:
            problems.append(f"get_run({expected.id}) differs from the run written")
    reference = replace(data.run(template, 0), id=f"check-{uuid.uuid4().hex[:8]}")
    await store.create_run(reference)
    # The newest run: the change feed's retention has dropped the oldest runs' changes.
    ours = await _table_rows(store, data.run_id(data.count - 1))
    theirs = await _table_rows(store, reference.id)
    ours.pop("run_leases", None), theirs.pop("run_leases", None)
    if ours != theirs:
        problems.append(f"rows per table: bulk {ours} vs create_run {theirs}")
    return problems


# Measuring


@dataclass(frozen=True)
class Timing:
    store_ms: list[float]
    bare_ms: list[float]
    plan: str

    @property
    def p99(self) -> float:
        return percentile(self.store_ms, 99)


Lookup = Callable[[Sequence[str]], Awaitable[None]]
"""The bare baseline: fetch these runs by primary key and decode them."""
Planner = Callable[[], Awaitable[str]]
"""The plan of the statement list_runs ran last."""


async def _measure_page(store: RunStore, page: Page, bare: Lookup, plan: Planner) -> Timing:
    got = await store.list_runs(page.query)  # also warms the caches
    ids = tuple(run.id for run in got.runs)
    if ids != page.expected:
        raise RuntimeError(
            f"list_runs returned other runs than expected ({len(ids)} vs {len(page.expected)})"
        )
    plan_text = await plan()
    store_ms: list[float] = []
    bare_ms: list[float] = []
    deadline = time.perf_counter() + SAMPLE_SECONDS
    while len(store_ms) < SAMPLES and (
        time.perf_counter() < deadline or len(store_ms) < MIN_SAMPLES
    ):
        started = time.perf_counter()
        await store.list_runs(page.query)
        store_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await bare(page.expected)
        bare_ms.append((time.perf_counter() - started) * 1000)
    return Timing(store_ms, bare_ms, plan_text)


def _sqlite_tools(store: SqliteRunStore) -> tuple[Lookup, Planner]:
    db = store._db
    statements: list[str] = []

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT SNAPSHOT FROM"):
            statements.append(statement)

    db.set_trace_callback(trace)

    async def bare(ids: Sequence[str]) -> None:
        rows = db.execute(
            f"SELECT snapshot FROM runs WHERE id IN ({','.join('?' * len(ids))})",
            ids,
        ).fetchall()
        [codec.run_from_dict(json.loads(r[0])) for r in rows]

    async def plan() -> str:
        if not statements:
            return "(statement not captured)"
        rows = db.execute(f"EXPLAIN QUERY PLAN {statements[-1]}").fetchall()
        statements.clear()
        return " / ".join(r[-1] for r in rows)

    return bare, plan


@contextlib.asynccontextmanager
async def _postgres_tools(url: str) -> AsyncIterator[tuple[RunStore, Lookup, Planner]]:
    import psycopg

    from skit_pipelines.store.postgres import PostgresRunStore

    statements: list[tuple[Any, Any]] = []

    class _Recorder:
        """A connection that remembers what list_runs executes."""

        def __init__(self, conn: Any) -> None:
            self._conn = conn

        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append((query, params))
            return await self._conn.execute(query, params, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    class _RecordingStore(PostgresRunStore):
        async def _run(self, operation: Any, what: str) -> Any:
            if what != "list_runs":
                return await super()._run(operation, what)

            async def recorded(conn: Any) -> Any:
                return await operation(_Recorder(conn))

            return await super()._run(recorded, what)

    store = await _RecordingStore.open(url)
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def bare(ids: Sequence[str]) -> None:
        cursor = await conn.execute("SELECT snapshot FROM runs WHERE id = ANY(%s)", (list(ids),))
        [codec.run_from_dict(r[0]) for r in await cursor.fetchall()]

    async def plan() -> str:
        if not statements:
            return "(statement not captured)"
        query, params = statements[-1]
        text = query.decode() if isinstance(query, bytes) else str(query)
        cursor = await conn.execute(f"EXPLAIN {text}", params)
        statements.clear()
        return " / ".join(" ".join(r[0].split()) for r in await cursor.fetchall())

    try:
        yield store, bare, plan
    finally:
        await conn.close()
        await store.close()


@dataclass(frozen=True)
class CaseResult:
    case: str
    pages: dict[str, Timing]


async def _measure_cases(
    store: RunStore, data: DataSet, bare: Lookup, plan: Planner
) -> list[CaseResult]:
    results = []
    for case in _cases(data):
        timings = {}
        for page in _pages(data, case):
            timings[page.label] = await _measure_page(store, page, bare, plan)
            t = timings[page.label]
            _log(
                f"{case.name}, {page.label} page: p50 {percentile(t.store_ms, 50):.1f} ms,"
                f" p99 {t.p99:.1f} ms (bare p99 {percentile(t.bare_ms, 99):.2f} ms);"
                f" plan: {t.plan}"
            )
        results.append(CaseResult(case.name, timings))
    return results


def _freeze_heap() -> None:
    """What the benchmark holds until now lives to the end, as a server's start-up heap
    does: freeze it, as `skit-pipelines serve` does once it is serving."""
    gc.collect()
    gc.freeze()


def _compact(plan: str) -> str:
    """A plan's nodes without costs and conditions, for the table (the log has it all)."""
    nodes = []
    for node in plan.split(" / "):
        if node.split(":", 1)[0].strip() in _PLAN_DETAILS:
            continue
        nodes.append(re.sub(r" \(cost=[^)]*\)", "", node).removeprefix("-> "))
    return " > ".join(nodes)


_PLAN_DETAILS = frozenset(
    {"Filter", "Index Cond", "Recheck Cond", "Sort Key", "Join Filter", "Hash Cond"}
)


def _figures(backend: str, count: int, results: list[CaseResult], note: str) -> list[Figure]:
    figures = []
    for result in results:
        worst = max(result.pages.values(), key=lambda t: t.p99)
        bare_worst = max(percentile(t.bare_ms, 99) for t in result.pages.values())
        pages = "; ".join(
            f"{label} p50 {percentile(t.store_ms, 50):.1f} / p99 {t.p99:.1f} ms"
            f" (bare {percentile(t.bare_ms, 99):.2f}; {len(t.store_ms)} calls)"
            for label, t in result.pages.items()
        )
        plans = "; ".join(
            f"{label}: {_compact(t.plan)}" for label, t in result.pages.items() if label != "middle"
        )
        figures.append(
            Figure(
                name=f"ListRuns, {backend}, {count:,} runs, {result.case}",
                value=worst.p99,
                unit="ms p99 (worst page)",
                baseline=bare_worst,
                detail=f"{pages}. Plans: {plans}{note}",
                target=f"p99 <= {TARGET_P99_MS:g} ms every page",
                met=all(t.p99 <= TARGET_P99_MS for t in result.pages.values()),
                spread=spread([t.p99 for t in result.pages.values()]),
            )
        )
    return figures


async def _sqlite(tmp: Path, data: DataSet) -> list[Figure]:
    path = tmp / "runs.db"
    started = time.perf_counter()
    await fill_sqlite(path, data)
    _log(f"filled SQLite with {data.count:,} runs in {time.perf_counter() - started:.0f} s")
    store = SqliteRunStore(path)
    _freeze_heap()
    try:
        problems = await check_fill(store, data)
        bare, plan = _sqlite_tools(store)
        results = await _measure_cases(store, data, bare, plan)
    finally:
        await store.close()
    return _figures("SQLite", data.count, results, _note(problems))


@contextlib.contextmanager
def _scratch_database() -> Iterator[str]:
    import psycopg
    from psycopg import sql

    admin_url = os.environ.get("SKIT_BENCH_POSTGRES_DSN", POSTGRES_DSN)
    name = f"skit_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise LookupError(f"no PostgreSQL server ({type(exc).__name__})") from None
    try:
        yield urlparse(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


async def _postgres(url: str, data: DataSet) -> list[Figure]:
    started = time.perf_counter()
    await fill_postgres(url, data)
    _log(f"filled PostgreSQL with {data.count:,} runs in {time.perf_counter() - started:.0f} s")
    async with _postgres_tools(url) as (store, bare, plan):
        _freeze_heap()
        problems = await check_fill(store, data)
        results = await _measure_cases(store, data, bare, plan)
    return _figures("PostgreSQL", data.count, results, _note(problems))


def _note(problems: list[str]) -> str:
    if not problems:
        return ""
    return (
        ". WARNING: the bulk fill no longer matches the store's create_run ("
        + "; ".join(problems)
        + "): update benchmarks/listruns.py"
    )


def run(runs: int = DEFAULT_RUNS) -> list[Figure]:
    started = time.perf_counter()
    data = DataSet.generate(runs)
    _log(f"generated {runs:,} runs in {time.perf_counter() - started:.0f} s")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        figures.extend(asyncio.run(_sqlite(Path(tmp), data)))
    try:
        with _scratch_database() as url:
            figures.extend(asyncio.run(_postgres(url, data)))
    except LookupError as reason:
        figures.append(
            Figure(
                name=f"ListRuns, PostgreSQL, {runs:,} runs",
                value=float("nan"),
                unit="ms p99",
                baseline=None,
                detail=f"skipped: {reason}",
                target=f"p99 <= {TARGET_P99_MS:g} ms every page",
                met=False,
            )
        )
    return figures
