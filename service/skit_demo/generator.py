"""Writing the demo calls and metrics databases (SQLite or PostgreSQL)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from skit_components.db import SQLITE, Database, connect
from skit_components.migrations import ANNOTATIONS, CALLS, METRICS, migrate
from skit_demo import vocabulary as v
from skit_demo.annotations import (
    ANNOTATION_COLUMNS,
    PROJECT_COLUMNS,
    TASK_COLUMNS,
    AnnotationSimulator,
    project_rows,
    read_turns,
)
from skit_demo.calls import (
    CALL_COLUMNS,
    IST,
    TURN_COLUMNS,
    CallSimulator,
    Row,
)
from skit_demo.metrics import (
    CONVERSATION_COLUMNS,
    PROMPT_COLUMNS,
    SITUATION_COLUMNS,
    metrics_rows,
)

logger = logging.getLogger(__name__)

DEMO_END = date(2026, 11, 1)
"""The demo data ends at local midnight starting this day, whatever the clock says, so that
the same seed always gives the same rows."""
DEFAULT_DAYS = 30
DEFAULT_CALLS = 2000

_CHUNK_CALLS = 2000
"""Calls generated and written per batch: memory stays flat at any size."""


class DemoDataExists(Exception):
    """The target database already holds demo tables with rows (and `replace` was not set)."""


@dataclass(frozen=True)
class DemoSummary:
    """What `generate` wrote."""

    seed: int
    calls: int
    turns: int
    start: date
    """First local (Asia/Kolkata) day with calls."""
    end: date
    """The local day after the last one with calls."""
    languages: tuple[str, ...]
    client_ids: tuple[int, ...]
    flow_ids: tuple[int, ...]
    template_ids: tuple[int, ...]
    threat_calls: int
    """Collection calls where the bot made a threat (`vocabulary.COMPLIANCE_BREACH_PHRASES`)."""
    off_hours_calls: int
    """Collection calls placed outside `vocabulary.COLLECTION_HOURS_IST`."""
    situations: int
    invalid_situations: int
    prompts: int
    generated_conversations: int
    seconds: float
    annotation_tasks: int = 0
    """Tasks in the annotation store (0 when it was not written)."""
    annotations: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        out["end"] = self.end.isoformat()
        return out


def generate(
    calls_db_url: str,
    metrics_db_url: str,
    *,
    seed: int = 0,
    calls: int = DEFAULT_CALLS,
    start: date | None = None,
    days: int = DEFAULT_DAYS,
    replace: bool = False,
    annotations_db_url: str | None = None,
) -> DemoSummary:
    """Migrates the databases and fills them with deterministic demo data.

    Args:
        calls_db_url: sqlite:///path (created if missing) or postgresql://...
        metrics_db_url: the same for the metrics database (may be the same database).
        seed: the same seed, size and dates give identical rows on either engine.
        calls: how many calls; each has 1 to 12 turns (about 3.3 on average).
        start: first local day with calls; defaults to `days` days before DEMO_END.
        days: how many days the calls spread over.
        replace: delete existing demo rows first instead of raising DemoDataExists.
        annotations_db_url: also write the annotation store there (see `write_annotations`).
    """
    if calls < 0 or days < 1:
        raise ValueError(f"calls must be >= 0 and days >= 1, got calls={calls}, days={days}")
    began = time.perf_counter()
    start = start or DEMO_END - timedelta(days=days)
    end = start + timedelta(days=days)
    calls_written = turns_written = threats = off_hours = 0
    with connect(calls_db_url, create=True) as db:
        _prepare(db, CALLS, ("turns", "calls"), replace=replace)
        simulator = CallSimulator(
            random.Random(f"calls:{seed}"),
            calls=calls,
            start=start,
            days=days,
            timestamp=db.dialect.timestamp_param,
        )
        with db.transaction():
            call_rows: list[Row] = []
            turn_rows: list[Row] = []
            for simulated in simulator:
                call_rows.append(simulated.call)
                turn_rows.extend(simulated.turns)
                threats += simulated.threat
                off_hours += simulated.off_hours
                if len(call_rows) >= _CHUNK_CALLS:
                    _write(db, "calls", CALL_COLUMNS, call_rows)
                    _write(db, "turns", TURN_COLUMNS, turn_rows)
                    calls_written += len(call_rows)
                    turns_written += len(turn_rows)
                    call_rows, turn_rows = [], []
            _write(db, "calls", CALL_COLUMNS, call_rows)
            _write(db, "turns", TURN_COLUMNS, turn_rows)
            calls_written += len(call_rows)
            turns_written += len(turn_rows)
        _finish(db, ("calls", "turns"))

    with connect(metrics_db_url, create=True) as db:
        _prepare(
            db,
            METRICS,
            ("generated_conversations", "prompt_details", "situation_scenario_mapper"),
            replace=replace,
        )
        rows = metrics_rows(
            random.Random(f"metrics:{seed}"),
            start=datetime.combine(start, datetime.min.time(), IST),
            end=datetime.combine(end, datetime.min.time(), IST),
            timestamp=db.dialect.timestamp_param,
        )
        with db.transaction():
            _write(db, "situation_scenario_mapper", SITUATION_COLUMNS, rows.situations)
            _write(db, "prompt_details", PROMPT_COLUMNS, rows.prompts)
            _write(db, "generated_conversations", CONVERSATION_COLUMNS, rows.conversations)
        _finish(db, ("situation_scenario_mapper", "prompt_details", "generated_conversations"))

    annotated = (0, 0)
    if annotations_db_url is not None:
        annotated = write_annotations(calls_db_url, annotations_db_url, seed=seed, replace=replace)

    summary = DemoSummary(
        seed=seed,
        calls=calls_written,
        turns=turns_written,
        start=start,
        end=end,
        languages=tuple(sorted({flow.language for flow in v.FLOWS})),
        client_ids=tuple(client.id for client in v.CLIENTS),
        flow_ids=tuple(flow.id for flow in v.FLOWS),
        template_ids=tuple(sorted(v.TEMPLATE_NAMES)),
        threat_calls=threats,
        off_hours_calls=off_hours,
        situations=len(rows.situations),
        invalid_situations=rows.invalid_situations,
        prompts=len(rows.prompts),
        generated_conversations=len(rows.conversations),
        seconds=round(time.perf_counter() - began, 3),
        annotation_tasks=annotated[0],
        annotations=annotated[1],
    )
    logger.info(
        "demo data: %d calls, %d turns, %d situations in %.2fs",
        summary.calls,
        summary.turns,
        summary.situations,
        summary.seconds,
    )
    return summary


def _prepare(db: Database, schema: str, tables: Sequence[str], *, replace: bool) -> None:
    """Migrates, then makes sure the demo tables are empty: rows from another seed or size
    would collide with ours on primary keys."""
    migrate(db, schema)
    if db.dialect is SQLITE:
        # The demo writes in one go; a crash leaves a file ensure_demo_data throws away.
        db.execute("PRAGMA journal_mode = MEMORY")
        db.execute("PRAGMA synchronous = OFF")
    occupied = [t for t in tables if db.fetchone(f"SELECT 1 FROM {t} LIMIT 1")]
    if occupied and not replace:
        raise DemoDataExists(
            f"{', '.join(occupied)} already hold rows in {db.dialect.name} database; "
            "pass replace=True to regenerate"
        )
    if occupied:
        with db.transaction():
            for table in tables:
                db.execute(f"DELETE FROM {table}")


def _write(
    db: Database,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    if db.dialect is SQLITE:
        placeholders = ", ".join("?" * len(columns))
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)
        return
    # COPY is an order of magnitude faster than INSERTs for bulk rows.
    with (
        db.connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _finish(db: Database, tables: Sequence[str]) -> None:
    if db.dialect is SQLITE:
        db.execute("ANALYZE")
        return
    for table in tables:
        # Ids were written explicitly; later inserts must continue after them.
        db.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
        )
        db.execute(f"ANALYZE {table}")


def write_annotations(
    calls_db_url: str, annotations_db_url: str, *, seed: int = 0, replace: bool = False
) -> tuple[int, int]:
    """Migrates the annotation store and fills it with projects, tasks and annotations made
    from the turns of the calls database (see `demo.annotations`); returns (tasks,
    annotations). The same calls and seed give identical rows on either engine."""
    tables = ("annotations", "annotation_tasks", "annotation_projects")
    with connect(calls_db_url) as calls_db, connect(annotations_db_url, create=True) as db:
        _prepare(db, ANNOTATIONS, tables, replace=replace)
        first = calls_db.fetchone("SELECT min(started_at) FROM calls")
        if first and first[0] is not None:
            opened = calls_db.dialect.to_datetime(first[0]) - timedelta(days=7)
        else:
            opened = datetime.combine(DEMO_END, datetime.min.time(), IST)
        simulator = AnnotationSimulator(
            random.Random(f"annotations:{seed}"), timestamp=db.dialect.timestamp_param
        )
        tasks_written = annotations_written = 0
        with db.transaction():
            _write(
                db,
                "annotation_projects",
                PROJECT_COLUMNS,
                project_rows(db.dialect.timestamp_param(opened)),
            )
            task_rows: list[Row] = []
            annotation_rows: list[Row] = []
            for turn in read_turns(calls_db):
                tasks, annotations = simulator.simulate(turn)
                task_rows.extend(tasks)
                annotation_rows.extend(annotations)
                if len(task_rows) >= _CHUNK_CALLS:
                    _write(db, "annotation_tasks", TASK_COLUMNS, task_rows)
                    _write(db, "annotations", ANNOTATION_COLUMNS, annotation_rows)
                    tasks_written += len(task_rows)
                    annotations_written += len(annotation_rows)
                    task_rows, annotation_rows = [], []
            _write(db, "annotation_tasks", TASK_COLUMNS, task_rows)
            _write(db, "annotations", ANNOTATION_COLUMNS, annotation_rows)
            tasks_written += len(task_rows)
            annotations_written += len(annotation_rows)
        _finish(db, tables[::-1])
    logger.info("annotation store: %d tasks, %d annotations", tasks_written, annotations_written)
    return tasks_written, annotations_written
