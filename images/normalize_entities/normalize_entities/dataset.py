"""The dataset: reading the entity CSV, resolving each row's tagged entities, writing it
back with their values and statuses, and counting them."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skit_components import cli
from skit_components.outputs import output_path

from .resolver import DATE_TYPES, IMPRECISE, RESOLVED, SKIPPED, UNPARSEABLE, Resolver

logger = logging.getLogger("normalize_entities")

TAG_COLUMN = "tag"
REFTIME_COLUMNS = ("raw.reftime", "reftime")
"""Where a row's reference time is read from, first non-empty wins."""
LANGUAGE_COLUMN = "raw.language"
TIMEZONE_COLUMN = "raw.timezone"
PREDICTED_COLUMN = "raw.entities"
OUTPUT_COLUMNS = ("normalized_entities", "entity_status")


@dataclass(frozen=True)
class Entity:
    """A tagged entity with its resolution; an element of `normalized_entities`."""

    type: str
    text: str
    start: int | None
    end: int | None
    value: str
    """ISO 8601: YYYY-MM-DD for a date, a datetime with the call's UTC offset for a time;
    "" unless resolved."""
    status: str
    reason: str = ""
    predicted_value: str | None = None
    """The value the bot's entity parser gave an overlapping span of the same type."""
    matches_prediction: bool | None = None


@dataclass(frozen=True)
class Counts:
    rows: int
    entities: int
    by_status: dict[str, int]
    by_language: dict[str, dict[str, int]]
    """Language -> status -> entities."""

    @property
    def unresolved(self) -> int:
        return self.by_status.get(UNPARSEABLE, 0) + self.by_status.get(IMPRECISE, 0)


def read_rows(path: Path) -> tuple[list[str], Iterator[dict[str, str]]]:
    """The CSV's header and a stream of its rows.

    Raises:
        cli.BadInput: no such file, or the columns this step needs are missing.
    """
    if not path.is_file():
        raise cli.BadInput(f"no dataset at {path}")
    f = path.open(newline="", encoding="utf-8")
    reader = csv.DictReader(f)
    header = list(reader.fieldnames or [])
    missing = [c for c in (TAG_COLUMN, LANGUAGE_COLUMN) if c not in header]
    if not any(c in header for c in REFTIME_COLUMNS):
        missing.append(" or ".join(REFTIME_COLUMNS))
    if missing:
        f.close()
        raise cli.BadInput(
            f"the dataset lacks column(s) {', '.join(missing)}: expected the CSV of "
            "fetch_tagged_dataset for entity tasks"
        )

    def rows() -> Iterator[dict[str, str]]:
        with f:
            yield from reader

    return header, rows()


def normalize_row(
    row: Mapping[str, str], resolver: Resolver, default_zone: ZoneInfo
) -> tuple[list[Entity], str]:
    """A row's tagged entities resolved, and the row's status: resolved (all of them),
    unresolved (some are not), none (no date/time entity tagged)."""
    tagged = _tagged_entities(row.get(TAG_COLUMN, ""))
    if tagged is None:
        return [], "bad_tag"
    language = row.get(LANGUAGE_COLUMN, "").strip()
    zone, zone_problem = _zone(row.get(TIMEZONE_COLUMN, ""), default_zone)
    reftime = _reftime(row)
    predicted = _predicted(row.get(PREDICTED_COLUMN, ""))
    entities = []
    for item in tagged:
        kind = str(item.get("type", ""))
        text = str(item.get("text", ""))
        start, end = item.get("start"), item.get("end")
        if kind not in DATE_TYPES:
            entities.append(Entity(kind, text, start, end, "", SKIPPED, "not a date or time"))
            continue
        if zone_problem:
            value, status, reason = "", UNPARSEABLE, zone_problem
        elif reftime is None:
            value, status, reason = "", UNPARSEABLE, "the row has no reference time"
        else:
            value, status, reason = resolver.resolve(kind, text, language, zone, reftime)
        guess = _overlapping(predicted, kind, start, end)
        entities.append(
            Entity(
                kind,
                text,
                start,
                end,
                value,
                status,
                reason,
                predicted_value=guess,
                matches_prediction=None if guess is None or not value else value == guess,
            )
        )
    dated = [e for e in entities if e.status != SKIPPED]
    if not dated:
        return entities, "none"
    return entities, RESOLVED if all(e.status == RESOLVED for e in dated) else "unresolved"


def normalize_entities(dataset: Path, out_csv: Path, timezone: str) -> Counts:
    """Writes `dataset` with its entities resolved to `out_csv`.

    Raises:
        cli.BadInput: unknown timezone, missing columns, an empty dataset, or a tag column
            that holds no entity tags at all.
    """
    try:
        default_zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise cli.BadInput(f"unknown timezone {timezone!r}") from None
    header, rows = read_rows(dataset)
    clashing = [c for c in OUTPUT_COLUMNS if c in header]
    if clashing:
        raise cli.BadInput(f"the dataset already has column(s) {', '.join(clashing)}")
    resolver = Resolver()
    by_status: Counter[str] = Counter()
    by_language: dict[str, Counter[str]] = {}
    count = bad_tags = 0
    with output_path(out_csv).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*header, *OUTPUT_COLUMNS])
        writer.writeheader()
        for row in rows:
            count += 1
            entities, status = normalize_row(row, resolver, default_zone)
            bad_tags += status == "bad_tag"
            language = row.get(LANGUAGE_COLUMN, "") or "unknown"
            for entity in entities:
                by_status[entity.status] += 1
                by_language.setdefault(language, Counter())[entity.status] += 1
            writer.writerow(
                {
                    **row,
                    "normalized_entities": json.dumps(
                        [asdict(e) for e in entities], ensure_ascii=False
                    ),
                    "entity_status": status,
                }
            )
    if not count:
        out_csv.unlink(missing_ok=True)
        raise cli.BadInput("the dataset has no rows")
    if bad_tags == count:
        out_csv.unlink(missing_ok=True)
        raise cli.BadInput(
            f'no row\'s {TAG_COLUMN} is an entity tag ({{"entities": [...]}}): is this an '
            "entity dataset?"
        )
    if resolver.unsupported_languages:
        logger.warning(
            "dateparser does not know %s; read those entities as English",
            ", ".join(resolver.unsupported_languages),
        )
    counts = Counts(
        rows=count,
        entities=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        by_language={k: dict(sorted(v.items())) for k, v in sorted(by_language.items())},
    )
    logger.info(
        "%d rows, %d entities: %s; by language: %s; %d rows had no entity tag",
        counts.rows,
        counts.entities,
        counts.by_status,
        counts.by_language,
        bad_tags,
    )
    return counts


def _tagged_entities(text: str) -> list[dict] | None:
    """The entity list of a tag: {"entities": [...]} or a bare list; None if it is not one."""
    try:
        tag = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None
    if isinstance(tag, dict):
        tag = tag.get("entities")
    if not isinstance(tag, list):
        return None
    return [item for item in tag if isinstance(item, dict)]


def _zone(name: str, default: ZoneInfo) -> tuple[ZoneInfo, str]:
    name = name.strip()
    if not name:
        return default, ""
    try:
        return ZoneInfo(name), ""
    except (ZoneInfoNotFoundError, ValueError):
        return default, f"unknown timezone {name!r} in the task data"


def _reftime(row: Mapping[str, str]) -> datetime | None:
    for column in REFTIME_COLUMNS:
        text = (row.get(column) or "").strip()
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        # A reference time without an offset cannot be placed in the call's zone.
        return moment if moment.tzinfo is not None else None
    return None


def _predicted(text: str) -> list[dict]:
    try:
        value = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        return []
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _overlapping(predicted: list[dict], kind: str, start: Any, end: Any) -> str | None:
    if not isinstance(start, int) or not isinstance(end, int):
        return None
    for entity in predicted:
        s, e = entity.get("start"), entity.get("end")
        same_kind = entity.get("type") == kind and isinstance(s, int) and isinstance(e, int)
        if same_kind and s < end and start < e:
            return str(entity.get("value", ""))
    return None
