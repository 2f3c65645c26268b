"""Schedules as the client returns them (frozen dataclasses), and their requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from skit.pipelines.v1 import pipeline_service_pb2, schedule_pb2

SCHEDULES_PREFIX = "schedules/"
SCHEDULE_LABEL = "skit-schedule"
"""The label each run of a schedule carries: the schedule's id (ListRuns filters by it)."""
TICK_LABEL = "skit-schedule-tick"
"""The label each run of a schedule carries: its tick's time, UTC, RFC 3339."""


def schedule_name(schedule: str) -> str:
    """Returns "schedules/{schedule}" for either "x" or "schedules/x"."""
    return schedule if schedule.startswith(SCHEDULES_PREFIX) else SCHEDULES_PREFIX + schedule


def _time(message: schedule_pb2.Schedule, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, name)
    return value.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class Schedule:
    """A schedule: what it runs, when, its policies and what its ticks did."""

    name: str
    pipeline: str
    parameters: Mapping[str, Any]
    labels: Mapping[str, str]
    cron: str
    """The cron expression; "" for an interval schedule."""
    time_zone: str
    interval_seconds: int
    """0 for a cron schedule."""
    start_time: datetime | None
    end_time: datetime | None
    max_concurrency: int
    overlap_policy: str
    """"SKIP" or "CANCEL_OLDEST"."""
    catchup_policy: str
    """"SKIP", "RUN_LATEST" or "RUN_ALL"."""
    catchup_window: timedelta
    disable_cache: bool
    paused: bool
    pause_reason: str
    creator: str
    create_time: datetime | None
    last_tick_time: datetime | None
    next_tick_time: datetime | None
    upcoming_tick_times: tuple[datetime, ...]
    last_run: str
    runs_created: int
    ticks_skipped: int
    runs_cancelled: int
    last_skip_reason: str
    raw: schedule_pb2.Schedule = field(repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.name.removeprefix(SCHEDULES_PREFIX)

    @classmethod
    def of(cls, message: schedule_pb2.Schedule) -> Schedule:
        trigger = message.trigger
        return cls(
            name=message.name,
            pipeline=message.pipeline,
            parameters=json_format.MessageToDict(message.parameters),
            labels=dict(message.labels),
            cron=trigger.cron.expression,
            time_zone=trigger.cron.time_zone,
            interval_seconds=trigger.interval.seconds,
            start_time=_time(message, "start_time"),
            end_time=_time(message, "end_time"),
            max_concurrency=message.max_concurrency,
            overlap_policy=schedule_pb2.OverlapPolicy.Name(message.overlap_policy).removeprefix(
                "OVERLAP_POLICY_"
            ),
            catchup_policy=schedule_pb2.CatchupPolicy.Name(message.catchup_policy).removeprefix(
                "CATCHUP_POLICY_"
            ),
            catchup_window=message.catchup_window.ToTimedelta(),
            disable_cache=message.disable_cache,
            paused=message.paused,
            pause_reason=message.pause_reason,
            creator=message.creator,
            create_time=_time(message, "create_time"),
            last_tick_time=_time(message, "last_tick_time"),
            next_tick_time=_time(message, "next_tick_time"),
            upcoming_tick_times=tuple(
                t.ToDatetime(tzinfo=UTC) for t in message.upcoming_tick_times
            ),
            last_run=message.last_run,
            runs_created=message.runs_created,
            ticks_skipped=message.ticks_skipped,
            runs_cancelled=message.runs_cancelled,
            last_skip_reason=message.last_skip_reason,
            raw=message,
        )


def create_schedule_request(
    pipeline: str,
    parameters: Mapping[str, Any],
    *,
    cron: str = "",
    time_zone: str = "",
    interval_seconds: int = 0,
    labels: Mapping[str, str] | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    max_concurrency: int = 0,
    overlap_policy: str = "",
    catchup_policy: str = "",
    catchup_window: timedelta | None = None,
    disable_cache: bool = False,
    schedule_id: str | None = None,
    request_id: str | None = None,
) -> pipeline_service_pb2.CreateScheduleRequest:
    schedule = schedule_pb2.Schedule(
        pipeline=pipeline if pipeline.startswith("pipelines/") else f"pipelines/{pipeline}",
        labels=dict(labels or {}),
        max_concurrency=max_concurrency,
        overlap_policy=f"OVERLAP_POLICY_{overlap_policy.upper() or 'UNSPECIFIED'}",
        catchup_policy=f"CATCHUP_POLICY_{catchup_policy.upper() or 'UNSPECIFIED'}",
        disable_cache=disable_cache,
    )
    schedule.parameters.update(dict(parameters))
    if cron:
        schedule.trigger.cron.expression = cron
        schedule.trigger.cron.time_zone = time_zone
    else:
        schedule.trigger.interval.seconds = interval_seconds
    if start_time is not None:
        schedule.start_time.FromDatetime(start_time)
    if end_time is not None:
        schedule.end_time.FromDatetime(end_time)
    if catchup_window is not None:
        schedule.catchup_window.FromTimedelta(catchup_window)
    return pipeline_service_pb2.CreateScheduleRequest(
        schedule=schedule, schedule_id=schedule_id or "", request_id=request_id or ""
    )


def backfill_request(
    schedule: str, start_time: datetime, end_time: datetime
) -> pipeline_service_pb2.BackfillScheduleRequest:
    request = pipeline_service_pb2.BackfillScheduleRequest(name=schedule_name(schedule))
    request.start_time.FromDatetime(start_time)
    request.end_time.FromDatetime(end_time)
    return request


def update_schedule_request(
    schedule: str,
    fields: list[str],
    pipeline: str = "",
    parameters: Mapping[str, Any] | None = None,
    **options: Any,
) -> pipeline_service_pb2.UpdateScheduleRequest:
    """An UpdateScheduleRequest changing `fields` to the values in `options`."""
    values = create_schedule_request(pipeline or "pipelines/-", parameters or {}, **options)
    request = pipeline_service_pb2.UpdateScheduleRequest(schedule=values.schedule)
    request.schedule.name = schedule_name(schedule)
    request.schedule.ClearField("pipeline")
    request.update_mask.paths.extend(fields)
    return request
