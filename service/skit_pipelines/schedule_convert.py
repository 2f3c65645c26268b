"""Schedule messages <-> schedule values (the servicer's half for schedules)."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from skit.pipelines.v1 import schedule_pb2
from skit_pipelines import convert
from skit_pipelines.schedules import UPCOMING_TICKS, ScheduleSpec
from skit_pipelines.triggers import Schedule, Trigger


def schedule(item: Schedule) -> schedule_pb2.Schedule:
    trigger = schedule_pb2.Trigger()
    if item.trigger.cron:
        trigger.cron.expression = item.trigger.cron
        trigger.cron.time_zone = item.trigger.time_zone
    else:
        trigger.interval.seconds = item.trigger.interval_seconds
    message = schedule_pb2.Schedule(
        name=item.name,
        pipeline=f"pipelines/{item.pipeline}",
        parameters=convert.struct(item.parameters),
        labels=dict(item.labels),
        trigger=trigger,
        start_time=convert.timestamp(item.start_time),
        end_time=convert.timestamp(item.end_time),
        max_concurrency=item.max_concurrency,
        overlap_policy=cast("schedule_pb2.OverlapPolicy", int(item.overlap_policy)),
        catchup_policy=cast("schedule_pb2.CatchupPolicy", int(item.catchup_policy)),
        disable_cache=item.disable_cache,
        paused=item.paused,
        pause_reason=item.pause_reason,
        creator=item.creator,
        create_time=convert.timestamp(item.create_time),
        update_time=convert.timestamp(item.update_time),
        last_tick_time=convert.timestamp(item.last_tick_time),
        next_tick_time=convert.timestamp(item.next_tick()),
        last_run=item.last_run,
        runs_created=item.runs_created,
        ticks_skipped=item.ticks_skipped,
        runs_cancelled=item.runs_cancelled,
        last_skip_reason=item.last_skip_reason,
    )
    message.catchup_window.FromTimedelta(item.catchup_window)
    for tick in item.upcoming(UPCOMING_TICKS):
        message.upcoming_tick_times.add().FromDatetime(tick)
    return message


def spec(message: schedule_pb2.Schedule) -> ScheduleSpec:
    """The settable fields of a request's schedule (checked by the controller)."""
    kind = message.trigger.WhichOneof("kind")
    trigger = Trigger()
    if kind == "cron":
        trigger = Trigger(
            # An empty expression reads as an invalid one, named as such (not as no trigger).
            cron=message.trigger.cron.expression or " ",
            time_zone=message.trigger.cron.time_zone,
        )
    elif kind == "interval":
        # Out of range values stay out of range (never 0 by accident): checked later.
        trigger = Trigger(interval_seconds=message.trigger.interval.seconds or -1)
    window = None
    if message.HasField("catchup_window"):
        window = message.catchup_window.ToTimedelta()
        if window == timedelta(0):
            window = None
    return ScheduleSpec(
        pipeline=message.pipeline,
        parameters=convert.from_struct(message.parameters, field="schedule.parameters"),
        labels=dict(message.labels),
        trigger=trigger,
        start_time=convert.from_timestamp(message.start_time, field="schedule.start_time")
        if message.HasField("start_time")
        else None,
        end_time=convert.from_timestamp(message.end_time, field="schedule.end_time")
        if message.HasField("end_time")
        else None,
        max_concurrency=message.max_concurrency,
        overlap_policy=message.overlap_policy,
        catchup_policy=message.catchup_policy,
        catchup_window=window,
        disable_cache=message.disable_cache,
    )
