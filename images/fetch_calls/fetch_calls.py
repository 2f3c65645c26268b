"""fetch_calls: sample calls from the calls database and write every turn of them as CSV.

Calls match when they satisfy every given filter; a random sample of `call_quantity` of
them (all when fewer match) is drawn with `seed`, and each sampled call's turns are
streamed to the CSV, one row per turn. Neither step holds more than the sample in memory.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skit_components import cli
from skit_components.db import Database, DatabaseError, connect
from skit_components.migrations import CALLS, SchemaError, require_schema
from skit_components.outputs import output_path, write_parameter

logger = logging.getLogger("fetch_calls")

DB_ENV = "CALLS_DB_URL"
SCHEMA_VERSION = 1
"""The calls schema version this component's queries need."""

COLUMNS = (
    "call_id",
    "call_uuid",
    "conversation_uuid",
    "turn_index",
    "reftime",
    "state",
    "utterances",
    "primary_utterance",
    "bot_response",
    "intent",
    "intent_score",
    "slots",
    "entities",
    "audio_url",
    "call_url",
    "language",
    "asr_provider",
    "flow_id",
    "flow_uuid",
    "flow_name",
    "flow_version",
    "client_id",
    "client_uuid",
    "template_id",
    "call_type",
    "call_end_status",
    "disposition",
    "previous_disposition",
    "blocking_disposition",
    "call_duration",
    "asr_latency_ms",
    "slu_latency_ms",
)
"""The CSV header, one row per turn."""


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
        start = end = None
        if self.start_date:
            start = datetime.combine(self.start_date, time(0), self.zone).astimezone(UTC)
        if self.end_date:
            after = self.end_date + timedelta(days=1)
            end = datetime.combine(after, time(0), self.zone).astimezone(UTC)
        return start, end

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
    query = f"""
        SELECT c.id, c.uuid, t.uuid, t.turn_index, t.reftime, t.state,
               {d.json_text("t.utterances")}, t.bot_response, t.intent, t.intent_score,
               {d.json_text("t.slots")}, {d.json_text("t.entities")}, t.audio_url, c.call_url,
               c.language, c.asr_provider, c.flow_id, c.flow_uuid, c.flow_name, c.flow_version,
               c.client_id, c.client_uuid, c.template_id, c.call_type, c.call_end_status,
               c.disposition, c.previous_disposition, c.blocking_disposition,
               c.duration_seconds, t.asr_latency_ms, t.slu_latency_ms
        FROM turns t JOIN calls c ON c.id = t.call_id
        WHERE {d.any_of("t.call_id")}
        ORDER BY t.call_id, t.turn_index
    """
    for row in db.stream(query, (d.list_param(call_ids),)):
        row = list(row)
        reftime = d.to_datetime(row[4]).astimezone(zone)
        row[4] = reftime.isoformat(timespec="milliseconds")
        row.insert(7, primary_utterance(row[6]))
        yield ["" if value is None else value for value in row]


def primary_utterance(utterances_json: str) -> str:
    """The best ASR alternative of the first utterance segment; "" for a silent turn."""
    segments = json.loads(utterances_json)
    if not segments or not segments[0]:
        return ""
    return segments[0][0].get("transcript", "")


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
            turns = 0
            with output_path(out_csv).open("w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                for row in stream_turns(db, sampled, filters.zone):
                    writer.writerow(row)
                    turns += 1
            logger.info("wrote %d turns of %d calls to %s", turns, len(sampled), out_csv)
            return len(sampled)
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"calls database: {exc}") from exc


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
