"""Schedule values and tick arithmetic: when a cron expression or an interval ticks.

Pure: no store, no clock. The store keeps `Schedule` as JSON (`schedule_to_dict`); the
scheduler (schedules.py) asks a `Trigger` for the ticks in a time range.

Cron times are wall-clock times in the schedule's time zone (croniter). Across a
daylight-saving change a wall-clock time that does not exist (spring) ticks once at the
first instant after the gap, as croniter gives it (02:30 in Europe/Berlin becomes 03:00
CEST); a wall-clock time that happens twice (autumn) ticks once, at its first occurrence:
croniter would give both, and a daily job must not run twice that day.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skit_pipelines.errors import InvalidArgument

MAX_CONCURRENCY = 100
NEVER = datetime.min.replace(tzinfo=UTC)
"""A time before every tick."""
DEFAULT_CATCHUP_WINDOW = timedelta(days=1)
MAX_CATCHUP_WINDOW = timedelta(days=31)
_CRON_FIELDS = 5
_MAX_STEPS = 100_000
"""The most tick computations one question may take (a cron that ticks every minute
over a 31-day catch-up window is 44,640)."""


class OverlapPolicy(enum.IntEnum):
    """Mirrors skit.pipelines.v1.OverlapPolicy (same numbers)."""

    UNSPECIFIED = 0
    SKIP = 1
    CANCEL_OLDEST = 2


class CatchupPolicy(enum.IntEnum):
    """Mirrors skit.pipelines.v1.CatchupPolicy (same numbers)."""

    UNSPECIFIED = 0
    SKIP = 1
    RUN_LATEST = 2
    RUN_ALL = 3


@dataclass(frozen=True)
class Trigger:
    """Exactly one of a cron expression (with its zone) or an interval."""

    cron: str = ""
    time_zone: str = ""
    """IANA; "" is UTC."""
    interval_seconds: int = 0

    def check(self, *, field: str = "schedule.trigger") -> None:
        """InvalidArgument naming the bad field."""
        if self.cron and self.interval_seconds:
            raise InvalidArgument("set either cron or interval, not both", field=field)
        if self.cron:
            if len(self.cron.split()) != _CRON_FIELDS or not _croniter().is_valid(self.cron):
                raise InvalidArgument(
                    f"{self.cron[:100]!r} is not a valid cron expression: it needs five"
                    " fields, minute hour day-of-month month day-of-week, e.g. '30 2 * * *'",
                    field=f"{field}.cron.expression",
                )
            zone(self.time_zone, field=f"{field}.cron.time_zone")
            return
        if self.interval_seconds == 0:
            raise InvalidArgument(
                "a trigger is required: a cron expression or an interval", field=field
            )
        if self.interval_seconds < 0:
            raise InvalidArgument(
                "interval seconds must be more than 0", field=f"{field}.interval.seconds"
            )

    def ticks(self, after: datetime, anchor: datetime) -> Iterator[datetime]:
        """The tick times strictly after `after`, in order, as aware UTC datetimes.
        `anchor` is where an interval counts from (start_time or the creation)."""
        if self.interval_seconds:
            step = timedelta(seconds=self.interval_seconds)
            # The grid extends before the anchor too (a backfill of earlier times).
            count = (after - anchor) // step + 1
            tick = anchor + count * step
            while True:
                yield tick.astimezone(UTC)
                tick += step
        tz = zone(self.time_zone)
        iterator = _croniter()(self.cron, after.astimezone(tz))
        while True:
            tick = iterator.get_next(datetime)
            if _repeated_wall_time(tick, tz):
                continue
            yield tick.astimezone(UTC)

    def latest_at_or_before(
        self, moment: datetime, after: datetime, anchor: datetime
    ) -> tuple[datetime | None, int]:
        """The last tick in (after, moment] and how many ticks that range holds (capped
        at _MAX_STEPS), or (None, 0)."""
        if self.interval_seconds:
            step = timedelta(seconds=self.interval_seconds)
            last = anchor + ((moment - anchor) // step) * step
            first = next(self.ticks(after, anchor))
            if last < first:
                return None, 0
            return last.astimezone(UTC), (last - first) // step + 1
        latest, count = None, 0
        for tick in self.ticks(after, anchor):
            if tick > moment or count >= _MAX_STEPS:
                break
            latest, count = tick, count + 1
        return latest, count


def _croniter() -> Any:
    # Imported at the first cron trigger checked or evaluated: croniter (with dateutil)
    # takes ~7 ms to import, which every start would pay, schedules or not. It ships no
    # type hints (types-croniter is not in the lock).
    from croniter import croniter  # type: ignore[import-untyped]

    return croniter


def _repeated_wall_time(tick: datetime, tz: ZoneInfo) -> bool:
    """Whether `tick` is the second occurrence of its wall-clock time (autumn's fold)."""
    wall = tick.replace(tzinfo=None)
    first = wall.replace(tzinfo=tz, fold=0)
    return first.utcoffset() != tick.utcoffset() and first.astimezone(UTC) < tick.astimezone(UTC)


def zone(name: str, *, field: str = "schedule.trigger.cron.time_zone") -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f"{name[:100]!r} is not a known IANA time zone, e.g. Europe/Berlin", field=field
        ) from None


@dataclass(frozen=True)
class Schedule:
    id: str
    pipeline: str
    """The pipeline id."""
    trigger: Trigger
    parameters: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    start_time: datetime | None = None
    end_time: datetime | None = None
    max_concurrency: int = 1
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    catchup_policy: CatchupPolicy = CatchupPolicy.SKIP
    catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW
    disable_cache: bool = False
    paused: bool = False
    pause_reason: str = ""
    creator: str = ""
    create_time: datetime = NEVER
    update_time: datetime = NEVER
    incarnation: str = ""
    """Random, fixed at creation: part of each tick's request_id, so a schedule deleted
    and created again under the same id does not find the old one's runs."""
    request_id: str = ""
    cursor: datetime = NEVER
    """Every tick at or before it has been handled (run or skipped)."""
    last_tick_time: datetime | None = None
    last_run: str = ""
    runs_created: int = 0
    ticks_skipped: int = 0
    runs_cancelled: int = 0
    last_skip_reason: str = ""

    @property
    def name(self) -> str:
        return f"schedules/{self.id}"

    @property
    def anchor(self) -> datetime:
        """Where an interval counts from, in whole seconds (so are its ticks)."""
        return (self.start_time or self.create_time).replace(microsecond=0)

    def upcoming(self, count: int) -> list[datetime]:
        """The next `count` ticks to come (fewer before end_time)."""
        first = self.next_tick()
        if first is None:
            return []
        ticks = [first]
        for tick in self.trigger.ticks(first, self.anchor):
            if len(ticks) >= count or not self.in_range(tick):
                break
            ticks.append(tick)
        return ticks

    def next_tick(self) -> datetime | None:
        """The next tick to come after the cursor, None when paused or past end_time."""
        if self.paused:
            return None
        after = self.cursor
        if self.start_time is not None and self.start_time > after:
            after = self.start_time - timedelta(microseconds=1)
        tick = next(self.trigger.ticks(after, self.anchor))
        if self.end_time is not None and tick >= self.end_time:
            return None
        return tick

    def in_range(self, tick: datetime) -> bool:
        return (self.start_time is None or tick >= self.start_time) and (
            self.end_time is None or tick < self.end_time
        )


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "pipeline": schedule.pipeline,
        "trigger": {
            "cron": schedule.trigger.cron,
            "time_zone": schedule.trigger.time_zone,
            "interval_seconds": schedule.trigger.interval_seconds,
        },
        "parameters": dict(schedule.parameters),
        "labels": dict(schedule.labels),
        "start_time": _time(schedule.start_time),
        "end_time": _time(schedule.end_time),
        "max_concurrency": schedule.max_concurrency,
        "overlap_policy": int(schedule.overlap_policy),
        "catchup_policy": int(schedule.catchup_policy),
        "catchup_window_seconds": schedule.catchup_window.total_seconds(),
        "disable_cache": schedule.disable_cache,
        "paused": schedule.paused,
        "pause_reason": schedule.pause_reason,
        "creator": schedule.creator,
        "create_time": _time(schedule.create_time),
        "update_time": _time(schedule.update_time),
        "incarnation": schedule.incarnation,
        "request_id": schedule.request_id,
        "cursor": _time(schedule.cursor),
        "last_tick_time": _time(schedule.last_tick_time),
        "last_run": schedule.last_run,
        "runs_created": schedule.runs_created,
        "ticks_skipped": schedule.ticks_skipped,
        "runs_cancelled": schedule.runs_cancelled,
        "last_skip_reason": schedule.last_skip_reason,
    }


def schedule_from_dict(data: Mapping[str, Any]) -> Schedule:
    trigger = data["trigger"]
    base = Schedule(
        id=data["id"],
        pipeline=data["pipeline"],
        trigger=Trigger(
            cron=trigger["cron"],
            time_zone=trigger["time_zone"],
            interval_seconds=trigger["interval_seconds"],
        ),
    )
    return replace(
        base,
        parameters=data["parameters"],
        labels=data["labels"],
        start_time=_parse(data["start_time"]),
        end_time=_parse(data["end_time"]),
        max_concurrency=data["max_concurrency"],
        overlap_policy=OverlapPolicy(data["overlap_policy"]),
        catchup_policy=CatchupPolicy(data["catchup_policy"]),
        catchup_window=timedelta(seconds=data["catchup_window_seconds"]),
        disable_cache=data["disable_cache"],
        paused=data["paused"],
        pause_reason=data["pause_reason"],
        creator=data["creator"],
        create_time=_parse(data["create_time"]) or base.create_time,
        update_time=_parse(data["update_time"]) or base.update_time,
        incarnation=data["incarnation"],
        request_id=data["request_id"],
        cursor=_parse(data["cursor"]) or base.cursor,
        last_tick_time=_parse(data["last_tick_time"]),
        last_run=data["last_run"],
        runs_created=data["runs_created"],
        ticks_skipped=data["ticks_skipped"],
        runs_cancelled=data["runs_cancelled"],
        last_skip_reason=data["last_skip_reason"],
    )
