"""normalize_entities: resolve tagged date and time entities to ISO values with dateparser.

Reads a tagged entity dataset (the CSV of fetch_tagged_dataset with task_type "entity"),
resolves each tagged date/time span relative to its call's reference time, in the call's
timezone, and writes the dataset back with every entity's value and status. Entities
dateparser cannot resolve, or resolves too coarsely, stay in the output marked as such.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateparser.date import DateDataParser
from dateparser.languages.loader import default_loader

from skit_components import cli
from skit_components.outputs import output_path, write_parameter

logger = logging.getLogger("normalize_entities")

# Relative phrases in entity tasks ("tomorrow", "five pm") are about the future: a payment
# date or a callback time.
_SETTINGS = {
    "TIMEZONE": "UTC",
    "RETURN_AS_TIMEZONE_AWARE": True,
    "PREFER_DATES_FROM": "future",
    "RETURN_TIME_AS_PERIOD": True,
}
DATE_TYPES = ("date", "time")

RESOLVED = "resolved"
UNPARSEABLE = "unparseable"
"""dateparser found no date in the text."""
IMPRECISE = "imprecise"
"""dateparser found a date, but not at the entity type's precision (a month for a date, a
day for a time, a time of day for a date); its guess is in `reason`, not in `value`."""
SKIPPED = "skipped"
"""Not a date or time entity: left as tagged."""

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


class Resolver:
    """Resolves date/time text with dateparser, relative to a reference time in a zone."""

    def __init__(self) -> None:
        self._known: dict[str, bool] = {}

    def resolve(
        self, kind: str, text: str, language: str, zone: ZoneInfo, reftime: datetime
    ) -> tuple[str, str, str]:
        """(value, status, reason) of one entity of type `kind` ("date" or "time")."""
        # English too: callers mix English numbers and times into other languages.
        languages = [language, "en"] if self._knows(language) and language != "en" else ["en"]
        settings = {
            **_SETTINGS,
            "RELATIVE_BASE": reftime.astimezone(zone).replace(tzinfo=None),
            "TIMEZONE": zone.key,
        }
        found = DateDataParser(languages=languages, settings=settings).get_date_data(text)
        moment, period = found.date_obj, found.period
        if moment is None:
            return "", UNPARSEABLE, f"dateparser found no {kind} in {text!r}"
        if period == "time":
            moment = _time_of_day_after(text, languages, settings, moment, reftime)
        moment = moment.astimezone(zone)
        if kind == "date":
            if period in ("day", "week"):
                return moment.date().isoformat(), RESOLVED, ""
            if period == "time":
                return "", IMPRECISE, f"a time of day ({moment.isoformat()}), not a date"
            return "", IMPRECISE, f"only a {period} ({moment.date().isoformat()})"
        if period == "time":
            return moment.replace(microsecond=0).isoformat(), RESOLVED, ""
        return "", IMPRECISE, f"no time of day, only a {period} ({moment.date().isoformat()})"

    def _knows(self, language: str) -> bool:
        if language not in self._known:
            try:
                default_loader.get_locale_map(languages=[language])
                self._known[language] = True
            except ValueError:
                self._known[language] = False
        return self._known[language]

    @property
    def unsupported_languages(self) -> list[str]:
        return sorted(k for k, known in self._known.items() if not known)


def _time_of_day_after(
    text: str,
    languages: list[str],
    settings: dict[str, Any],
    future: datetime,
    reftime: datetime,
) -> datetime:
    """A time of day resolved to its first occurrence at or after the reference time.

    dateparser's "future" preference is wrong for times of day: with TIMEZONE set it
    compares them with the reference time as if both were UTC, so "five pm" said at 12:31
    in Kolkata (07:01 UTC) lands a day late (scrapinghub/dateparser#1092), and rolling past
    a month's end keeps the month ("ten am" said on 31 October gives 1 October, #1202). Its
    "current_period" parse places the time on the reference day correctly; when the two
    disagree, that one moved on by whole days until it is not before the reference time.
    """
    current = DateDataParser(
        languages=languages, settings={**settings, "PREFER_DATES_FROM": "current_period"}
    ).get_date_data(text)
    moment = current.date_obj
    if moment is None or current.period != "time" or moment == future:
        return future
    while moment < reftime:
        moment += timedelta(days=1)
    return moment


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


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="normalize_entities", description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="input: the entity CSV")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--normalized", type=Path, required=True, help="output: the CSV")
    parser.add_argument("--entity-count", type=Path, required=True, help="output")
    parser.add_argument("--unresolved-count", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        counts = normalize_entities(args.dataset, args.normalized, args.timezone.strip() or "UTC")
        write_parameter(args.entity_count, counts.entities)
        write_parameter(args.unresolved_count, counts.unresolved)

    return cli.run("normalize_entities", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
