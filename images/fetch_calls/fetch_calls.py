"""fetch_calls: sample calls from the calls database and write every turn of them as CSV.

Calls match when they satisfy every given filter; a random sample of `call_quantity` of
them (all when fewer match) is drawn with `seed`, and each sampled call's turns are
streamed to the CSV, one row per turn. Neither step holds more than the sample in memory.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skit_components import cli
from skit_components.db import (
    POSTGRESQL,
    Database,
    DatabaseError,
    Dialect,
    connect,
    utc_day_bounds,
)
from skit_components.migrations import CALLS, SchemaError, require_schema
from skit_components.outputs import output_path, write_parameter

logger = logging.getLogger("fetch_calls")

DB_ENV = "CALLS_DB_URL"
SCHEMA_VERSION = 1
"""The calls schema version this component's queries need."""
_OUT_BUFFER_BYTES = 1 << 20
"""The CSV's write buffer: COPY hands over one row at a time."""
EXPORT_CONNECTIONS = 2
"""Connections a large PostgreSQL export copies over at once (see `copy_turns`). Measured
on 1,007,620 turns, server and client on 2 cores (`python -m benchmarks fetch_calls`): one
connection exported at 0.89-0.99x the rate of psql's `\\copy` of the same query, two at
1.13x; two psql processes on a half each took 5.9-6.3 s against 8.3-12.2 s for one."""
MIN_CALLS_PER_CONNECTION = 5_000
"""A smaller slice is not worth its own connection and thread."""
_SENDFILE_BYTES = 1 << 30

TEXT, NUMBER, FLOAT, JSON, TIME, PRIMARY = "text", "number", "float", "json", "time", "primary"

TURN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("call_id", "c.id", NUMBER),
    ("call_uuid", "c.uuid", TEXT),
    ("conversation_uuid", "t.uuid", TEXT),
    ("turn_index", "t.turn_index", NUMBER),
    ("reftime", "t.reftime", TIME),
    ("state", "t.state", TEXT),
    ("utterances", "t.utterances", JSON),
    ("primary_utterance", "t.utterances", PRIMARY),
    ("bot_response", "t.bot_response", TEXT),
    ("intent", "t.intent", TEXT),
    ("intent_score", "t.intent_score", FLOAT),
    ("slots", "t.slots", JSON),
    ("entities", "t.entities", JSON),
    ("audio_url", "t.audio_url", TEXT),
    ("call_url", "c.call_url", TEXT),
    ("language", "c.language", TEXT),
    ("asr_provider", "c.asr_provider", TEXT),
    ("flow_id", "c.flow_id", NUMBER),
    ("flow_uuid", "c.flow_uuid", TEXT),
    ("flow_name", "c.flow_name", TEXT),
    ("flow_version", "c.flow_version", TEXT),
    ("client_id", "c.client_id", NUMBER),
    ("client_uuid", "c.client_uuid", TEXT),
    ("template_id", "c.template_id", NUMBER),
    ("call_type", "c.call_type", TEXT),
    ("call_end_status", "c.call_end_status", TEXT),
    ("disposition", "c.disposition", TEXT),
    ("previous_disposition", "c.previous_disposition", TEXT),
    ("blocking_disposition", "c.blocking_disposition", TEXT),
    ("call_duration", "c.duration_seconds", FLOAT),
    ("asr_latency_ms", "t.asr_latency_ms", NUMBER),
    ("slu_latency_ms", "t.slu_latency_ms", NUMBER),
)
"""Each CSV column (one row per turn): its name, the column it comes from, and its kind,
which says how it is written (see `stream_turns` and `copy_turns`)."""

COLUMNS = tuple(name for name, _, _ in TURN_COLUMNS)
"""The CSV header."""

TURNS_FROM = "FROM turns t JOIN calls c ON c.id = t.call_id"
TURNS_ORDER = "ORDER BY t.call_id, t.turn_index"

_ISO_MILLISECONDS = 'YYYY-MM-DD"T"HH24:MI:SS.MSTZH:TZM'
"""to_char's spelling of isoformat(timespec="milliseconds") in the session's time zone; both
truncate to milliseconds."""


@dataclass(frozen=True)
class Filters:
    """Which calls may be sampled. Empty values ("", 0, []) mean "any"."""

    start_date: date | None = None
    """First call date included, in `timezone`."""
    end_date: date | None = None
    """Last call date included, in `timezone`."""
    timezone: str = "UTC"
    lang: str = ""
    client_id: int = 0
    flow_ids: tuple[int, ...] = ()
    template_id: int = 0
    states: tuple[str, ...] = ()
    """The call has a turn in one of these states (and, if `intents` is given, that same
    turn has one of the intents)."""
    intents: tuple[str, ...] = ()
    """The call has a turn whose predicted intent is one of these."""
    call_type: str = ""
    min_duration: float = 0.0
    """Seconds; calls shorter than this are left out."""
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise cli.BadInput(f"unknown timezone {self.timezone!r}") from None
        object.__setattr__(self, "zone", zone)
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise cli.BadInput(f"end_date {self.end_date} is before start_date {self.start_date}")
        if self.min_duration < 0:
            raise cli.BadInput(f"min_duration must be >= 0, got {self.min_duration}")
        if self.client_id < 0 or self.template_id < 0 or any(f <= 0 for f in self.flow_ids):
            raise cli.BadInput("client_id, template_id and flow_ids must be positive ids")

    def utc_bounds(self) -> tuple[datetime | None, datetime | None]:
        """[start, end) in UTC: local midnight of start_date to the midnight after end_date."""
        return utc_day_bounds(self.start_date, self.end_date, self.zone)

    def describe(self) -> str:
        """The filters that are set, for messages."""
        shown = []
        for name in (
            "start_date",
            "end_date",
            "lang",
            "client_id",
            "flow_ids",
            "template_id",
            "states",
            "intents",
            "call_type",
            "min_duration",
        ):
            value = getattr(self, name)
            if not value:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, date):
                value = value.isoformat()
            shown.append(f"{name}={value!r}")
        if self.start_date or self.end_date:
            shown.append(f"timezone={self.timezone!r}")
        return ", ".join(shown) or "none"


def matching_calls_query(db: Database, filters: Filters) -> tuple[str, list[Any]]:
    """The query of matching call ids in ascending order, and its parameters."""
    d = db.dialect
    where: list[str] = []
    params: list[Any] = []
    start, end = filters.utc_bounds()
    if start is not None:
        where.append("c.started_at >= ?")
        params.append(d.timestamp_param(start))
    if end is not None:
        where.append("c.started_at < ?")
        params.append(d.timestamp_param(end))
    for column, value in (
        ("c.language", filters.lang),
        ("c.client_id", filters.client_id),
        ("c.template_id", filters.template_id),
        ("c.call_type", filters.call_type),
    ):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.flow_ids:
        where.append(d.any_of("c.flow_id"))
        params.append(d.list_param(filters.flow_ids))
    if filters.min_duration:
        where.append("c.duration_seconds >= ?")
        params.append(filters.min_duration)
    turn_conditions = []
    if filters.states:
        turn_conditions.append(d.any_of("t.state"))
        params.append(d.list_param(filters.states))
    if filters.intents:
        turn_conditions.append(d.any_of("t.intent"))
        params.append(d.list_param(filters.intents))
    if turn_conditions:
        where.append(
            "EXISTS (SELECT 1 FROM turns t WHERE t.call_id = c.id AND "
            + " AND ".join(turn_conditions)
            + ")"
        )
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT c.id FROM calls c{clause} ORDER BY c.id", params


def sample(ids: Iterable[int], quantity: int, seed: int) -> tuple[list[int], int]:
    """A uniform random sample of `quantity` ids (all when fewer) and how many there were.

    Reservoir sampling (Algorithm R) over ids in a fixed order: memory stays at `quantity`
    however many calls match, and the same seed and data give the same sample on SQLite
    and PostgreSQL.
    """
    rng = random.Random(seed)
    reservoir: list[int] = []
    seen = 0
    for call_id in ids:
        if seen < quantity:
            reservoir.append(call_id)
        else:
            slot = rng.randrange(seen + 1)
            if slot < quantity:
                reservoir[slot] = call_id
        seen += 1
    return sorted(reservoir), seen


def stream_turns(db: Database, call_ids: Sequence[int], zone: ZoneInfo) -> Iterator[list[Any]]:
    """Yields the CSV rows of every turn of `call_ids`, by call id and turn order."""
    d = db.dialect
    selected = ", ".join(
        d.json_text(column) if kind in (JSON, PRIMARY) else column
        for _, column, kind in TURN_COLUMNS
    )
    query = f"SELECT {selected} {TURNS_FROM} WHERE {d.any_of('t.call_id')} {TURNS_ORDER}"
    kinds = [kind for _, _, kind in TURN_COLUMNS]
    for row in db.stream(query, (d.list_param(call_ids),)):
        yield [_csv_value(kind, value, d, zone) for kind, value in zip(kinds, row, strict=True)]


def _csv_value(kind: str, value: Any, dialect: Dialect, zone: ZoneInfo) -> Any:
    if value is None:
        return ""
    if kind == TIME:
        return dialect.to_datetime(value).astimezone(zone).isoformat(timespec="milliseconds")
    if kind == PRIMARY:
        return primary_utterance(value)
    return value


def primary_utterance(utterances_json: str) -> str:
    """The best ASR alternative of the first utterance segment; "" for a silent turn."""
    segments = json.loads(utterances_json)
    if not segments or not segments[0]:
        return ""
    return segments[0][0].get("transcript") or ""


def copy_turns_query(call_ids: Sequence[int]) -> str:
    """PostgreSQL's COPY of the same CSV `stream_turns` rows make, formatted by the server.

    Written so that the bytes equal Python's csv module's: an empty text is written as NULL
    (COPY would quote it), integral doubles keep their ".0" as Python's repr does, and
    reftime is formatted by to_char in the session's time zone (see `copy_turns`). The ids
    are an array literal because COPY takes no bind parameters.
    """
    selected = []
    for _, column, kind in TURN_COLUMNS:
        if kind == TEXT:
            selected.append(f"NULLIF({column}, '')")
        elif kind == FLOAT:
            selected.append(
                f"{column}::text || CASE WHEN {column} = trunc({column})"
                f" AND abs({column}) < 1e15 THEN '.0' ELSE '' END"
            )
        elif kind == JSON:
            selected.append(f"{column}::text")
        elif kind == PRIMARY:
            selected.append(f"NULLIF({column} -> 0 -> 0 ->> 'transcript', '')")
        elif kind == TIME:
            selected.append(f"to_char({column}, '{_ISO_MILLISECONDS}')")
        else:
            selected.append(column)
    ids = "{" + ",".join(str(int(call_id)) for call_id in call_ids) + "}"
    return (
        f"COPY (SELECT {', '.join(selected)} {TURNS_FROM}"
        f" WHERE t.call_id = ANY('{ids}'::bigint[]) {TURNS_ORDER}) TO STDOUT WITH (FORMAT csv)"
    )


def copy_turns(
    db: Database,
    call_ids: Sequence[int],
    timezone: str,
    out: BinaryIO,
    *,
    connections: int = EXPORT_CONNECTIONS,
    min_calls_per_connection: int = MIN_CALLS_PER_CONNECTION,
) -> int:
    """Writes the CSV rows of every turn of `call_ids` to `out` with PostgreSQL's COPY, which
    formats them in the server (several times faster than formatting each row in Python);
    returns how many rows it wrote.

    The server formats COPY's rows in one backend per connection, and that is what the
    export waits for. So a large export is split into slices of consecutive call ids, each
    copied over a connection of its own at the same time and all from one snapshot, as
    `pg_dump --jobs` does; the slices are joined in order, so the bytes are those of one
    COPY.
    """
    import psycopg

    slices = _slices(sorted(call_ids), connections, min_calls_per_connection)
    try:
        if len(slices) == 1:
            with db.connection.transaction():
                return _copy(db.connection, slices[0], timezone, out)
        return _parallel_copy(db, slices, timezone, out)
    except psycopg.Error as exc:
        raise DatabaseError(f"exporting turns failed: {exc}") from exc


def _slices(ids: Sequence[int], connections: int, min_per_slice: int) -> list[Sequence[int]]:
    count = max(1, min(connections, len(ids) // max(1, min_per_slice)))
    size = -(-len(ids) // count)
    return [ids[start : start + size] for start in range(0, len(ids), size)] or [ids]


def _parallel_copy(
    db: Database, slices: Sequence[Sequence[int]], timezone: str, out: BinaryIO
) -> int:
    import tempfile
    from concurrent.futures import ThreadPoolExecutor, wait

    connection = db.connection
    # The later slices wait in temporary files next to the output (the volume meant for
    # it), to be appended in order.
    directory = os.path.dirname(getattr(out, "name", "")) or None
    with contextlib.ExitStack() as files, connection.transaction():
        parts = [
            files.enter_context(tempfile.TemporaryFile(dir=directory, buffering=_OUT_BUFFER_BYTES))
            for _ in slices[1:]
        ]
        # Every slice reads the snapshot this transaction exports (REPEATABLE READ keeps
        # it for this connection's own slice too): together they see what one COPY would.
        connection.execute(_SNAPSHOT_ISOLATION)
        snapshot = connection.execute("SELECT pg_export_snapshot()").fetchone()[0]
        with ThreadPoolExecutor(len(parts), thread_name_prefix="copy") as pool:
            copies = [
                pool.submit(_copy_from_snapshot, db.url, snapshot, ids, timezone, part)
                for ids, part in zip(slices[1:], parts, strict=True)
            ]
            try:
                written = _copy(connection, slices[0], timezone, out)
            finally:
                # The snapshot is importable only while this transaction lasts.
                wait(copies)
        written += sum(copy.result() for copy in copies)
        out.flush()
        for part in parts:
            part.seek(0)
            _append(part, out)
    return written


_SNAPSHOT_ISOLATION = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def _copy_from_snapshot(
    url: str, snapshot: str, call_ids: Sequence[int], timezone: str, out: BinaryIO
) -> int:
    """One slice's rows into `out`, over a new connection reading `snapshot`."""
    from psycopg import sql

    with connect(url, readonly=True) as db, db.connection.transaction():
        db.connection.execute(_SNAPSHOT_ISOLATION)
        db.connection.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        rows = _copy(db.connection, call_ids, timezone, out)
    out.flush()
    return rows


def _append(part: BinaryIO, out: BinaryIO) -> None:
    """Appends the rest of `part` to `out` in the kernel, without copying through Python."""
    source, target = part.fileno(), out.fileno()
    offset = part.tell()
    while sent := os.sendfile(target, source, offset, _SENDFILE_BYTES):
        offset += sent


def _copy(connection: Any, call_ids: Sequence[int], timezone: str, out: BinaryIO) -> int:
    """COPY's rows into `out`, inside the caller's transaction."""
    # Session settings that decide COPY's text, scoped to the transaction.
    connection.execute(
        "SELECT set_config('TimeZone', %s, true), set_config('extra_float_digits', '1', true),"
        " set_config('client_encoding', 'UTF8', true)",
        (timezone,),
    )
    with connection.cursor() as cursor:
        with cursor.copy(copy_turns_query(call_ids)) as copy:
            # COPY sends one message per row: bound methods and no generator keep the
            # Python work per row to two calls, and the file's large buffer batches them.
            read, write = copy.read, out.write
            while chunk := read():
                write(chunk)
        return cursor.rowcount


def fetch_calls(
    database_url: str,
    filters: Filters,
    *,
    call_quantity: int,
    seed: int,
    out_csv: Path,
) -> int:
    """Samples calls and writes their turns to `out_csv`; returns the number of calls.

    Raises:
        cli.BadInput: bad parameters, or no call matches the filters.
        cli.ComponentError: the database is unusable.
    """
    if call_quantity < 1:
        raise cli.BadInput(f"call_quantity must be >= 1, got {call_quantity}")
    try:
        with connect(database_url, readonly=True) as db:
            require_schema(db, CALLS, SCHEMA_VERSION)
            query, params = matching_calls_query(db, filters)
            ids = (row[0] for row in db.stream(query, params, batch_size=10_000))
            sampled, matched = sample(ids, call_quantity, seed)
            if not sampled:
                raise cli.BadInput(f"no calls match the filters: {filters.describe()}")
            logger.info("%d calls match, sampled %d (seed %d)", matched, len(sampled), seed)
            with output_path(out_csv).open("wb", buffering=_OUT_BUFFER_BYTES) as f:
                f.write((",".join(COLUMNS) + "\n").encode())
                if db.dialect is POSTGRESQL:
                    turns = copy_turns(db, sampled, filters.timezone, f)
                else:
                    turns = _write_rows(stream_turns(db, sampled, filters.zone), f)
            logger.info("wrote %d turns of %d calls to %s", turns, len(sampled), out_csv)
            return len(sampled)
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"calls database: {exc}") from exc


def _write_rows(rows: Iterable[list[Any]], out: BinaryIO) -> int:
    """Writes CSV rows as COPY does (minimal quoting, "\\n" line ends); returns their number."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text, lineterminator="\n")
    written = 0
    for row in rows:
        writer.writerow(row)
        written += 1
    text.flush()
    text.detach()
    return written


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="fetch_calls", description=__doc__)
    parser.add_argument("--start-date", type=cli.iso_date_or_empty, default=None)
    parser.add_argument("--end-date", type=cli.iso_date_or_empty, default=None)
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--lang", default="")
    parser.add_argument("--client-id", type=cli.integer, default=0)
    parser.add_argument("--flow-ids", type=cli.json_list(int), default=[])
    parser.add_argument("--template-id", type=cli.integer, default=0)
    parser.add_argument("--states", type=cli.json_list(str), default=[])
    parser.add_argument("--intents", type=cli.json_list(str), default=[])
    parser.add_argument("--call-type", default="")
    parser.add_argument("--min-duration", type=cli.number, default=0.0)
    parser.add_argument("--call-quantity", type=cli.integer, default=200)
    parser.add_argument("--seed", type=cli.integer, default=0)
    parser.add_argument("--calls", type=Path, required=True, help="output: the turns CSV")
    parser.add_argument("--call-count", type=Path, required=True, help="output: calls in it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        database_url = cli.required_env(DB_ENV, "the calls database URL")
        filters = Filters(
            start_date=args.start_date,
            end_date=args.end_date,
            timezone=args.timezone.strip() or "UTC",
            lang=args.lang.strip(),
            client_id=args.client_id,
            flow_ids=tuple(args.flow_ids),
            template_id=args.template_id,
            states=tuple(args.states),
            intents=tuple(args.intents),
            call_type=args.call_type.strip(),
            min_duration=args.min_duration,
        )
        count = fetch_calls(
            database_url,
            filters,
            call_quantity=args.call_quantity,
            seed=args.seed,
            out_csv=args.calls,
        )
        write_parameter(args.call_count, count)

    return cli.run("fetch_calls", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
