"""Cron in a time zone across DST, and the Schedule RPCs over gRPC: validation, roles."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import schedule_pb2
from skit_pipelines.auth import _METHOD_ROLES
from skit_pipelines.domain import Principal, Role
from skit_pipelines.errors import PermissionDenied
from skit_pipelines.triggers import Trigger

from .conftest import ScheduleService

BERLIN = ZoneInfo("Europe/Berlin")


def berlin_ticks(start: datetime, count: int) -> list[datetime]:
    trigger = Trigger(cron="30 2 * * *", time_zone="Europe/Berlin")
    ticks = trigger.ticks(start, start)
    return [next(ticks).astimezone(BERLIN) for _ in range(count)]


def test_a_0230_daily_cron_in_berlin_runs_at_0300_when_spring_skips_0230() -> None:
    ticks = berlin_ticks(datetime(2025, 3, 28, 12, tzinfo=UTC), 4)
    assert [(t.day, t.hour, t.minute, t.utcoffset().seconds // 3600) for t in ticks] == [
        (29, 2, 30, 1),
        (30, 3, 0, 2),  # 02:30 does not exist on 30 March: once, right after the gap
        (31, 2, 30, 2),
        (1, 2, 30, 2),
    ]


def test_a_0230_daily_cron_in_berlin_runs_once_when_autumn_repeats_0230() -> None:
    ticks = berlin_ticks(datetime(2025, 10, 24, 12, tzinfo=UTC), 3)
    assert [(t.day, t.hour, t.minute) for t in ticks] == [(25, 2, 30), (26, 2, 30), (27, 2, 30)]
    # 26 October: the first 02:30 (CEST, 00:30 UTC), not the repeated one.
    assert ticks[1].astimezone(UTC) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)


def schedule_message(**trigger: object) -> schedule_pb2.Schedule:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"})
    return schedule_pb2.Schedule(
        pipeline="pipelines/typed", parameters=parameters, trigger=schedule_pb2.Trigger(**trigger)
    )


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (
            schedule_message(cron=schedule_pb2.CronTrigger(expression="61 * * * *")),
            "schedule.trigger.cron.expression",
        ),
        (
            schedule_message(cron=schedule_pb2.CronTrigger(expression="every day")),
            "schedule.trigger.cron.expression",
        ),
        (
            schedule_message(
                cron=schedule_pb2.CronTrigger(expression="30 2 * * *", time_zone="Mars/Olympus")
            ),
            "schedule.trigger.cron.time_zone",
        ),
        (
            schedule_message(interval=schedule_pb2.IntervalTrigger(seconds=0)),
            "schedule.trigger.interval.seconds",
        ),
        (
            schedule_message(interval=schedule_pb2.IntervalTrigger(seconds=-5)),
            "schedule.trigger.interval.seconds",
        ),
        (schedule_message(), "schedule.trigger"),
    ],
)
async def test_invalid_triggers_are_invalid_argument_naming_the_field(
    schedule_service: ScheduleService, schedule: schedule_pb2.Schedule, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await schedule_service.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error.value) == [field]


async def test_parameters_are_checked_as_create_run_checks_them(
    schedule_service: ScheduleService,
) -> None:
    schedule = schedule_message(interval=schedule_pb2.IntervalTrigger(seconds=60))
    schedule.parameters.update({"count": "three", "nope": 1})
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await schedule_service.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(error.value)) == {"schedule.parameters.count", "schedule.parameters.nope"}


async def test_create_get_list_pause_resume_backfill_delete_over_grpc(
    schedule_service: ScheduleService,
) -> None:
    stub = schedule_service.stub
    schedule = schedule_message(cron=schedule_pb2.CronTrigger(expression="0 * * * *"))
    created = await stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule, schedule_id="hourly", request_id="r-1")
    )
    assert created.name == "schedules/hourly" and len(created.upcoming_tick_times) == 5
    assert created.next_tick_time == created.upcoming_tick_times[0]
    again = await stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule, schedule_id="hourly", request_id="r-1")
    )
    assert again.create_time == created.create_time
    listed = await stub.ListSchedules(pb.ListSchedulesRequest())
    assert [s.name for s in listed.schedules] == ["schedules/hourly"]
    paused = await stub.PauseSchedule(pb.PauseScheduleRequest(name="schedules/hourly", reason="x"))
    assert paused.paused and paused.pause_reason == "x" and not paused.HasField("next_tick_time")
    resumed = await stub.ResumeSchedule(pb.ResumeScheduleRequest(name="schedules/hourly"))
    assert not resumed.paused and resumed.HasField("next_tick_time")
    request = pb.BackfillScheduleRequest(name="schedules/hourly")
    request.start_time.FromDatetime(datetime(2024, 1, 1, tzinfo=UTC))
    request.end_time.FromDatetime(datetime(2024, 1, 1, 3, tzinfo=UTC))
    backfilled = await stub.BackfillSchedule(request)
    assert [r.labels["skit-schedule-tick"] for r in backfilled.runs] == [
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00Z",
        "2024-01-01T02:00:00Z",
    ]
    by_label = await stub.ListRuns(pb.ListRunsRequest(labels={"skit-schedule": "hourly"}))
    assert len(by_label.runs) == 3
    await stub.DeleteSchedule(pb.DeleteScheduleRequest(name="schedules/hourly"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetSchedule(pb.GetScheduleRequest(name="schedules/hourly"))
    assert error.value.code() is grpc.StatusCode.NOT_FOUND


def test_viewers_read_schedules_and_runners_manage_them() -> None:
    for method in ("GetSchedule", "ListSchedules"):
        assert _METHOD_ROLES[method] is Role.VIEWER
    for method in (
        "CreateSchedule",
        "UpdateSchedule",
        "PauseSchedule",
        "ResumeSchedule",
        "DeleteSchedule",
        "BackfillSchedule",
    ):
        assert _METHOD_ROLES[method] is Role.RUNNER


async def test_runners_manage_only_their_own_schedules(scheduling) -> None:
    from skit_pipelines.schedules import ScheduleSpec

    ana, bo = Principal("ana", Role.RUNNER), Principal("bo", Role.RUNNER)
    spec = ScheduleSpec(
        pipeline="pipelines/typed",
        parameters={"greeting": "hi"},
        trigger=Trigger(interval_seconds=60),
    )
    schedule = await scheduling.schedules.create_schedule(spec, principal=ana)
    with pytest.raises(PermissionDenied):
        await scheduling.schedules.pause_schedule(schedule.name, principal=bo)
    with pytest.raises(PermissionDenied):
        await scheduling.schedules.delete_schedule(schedule.name, principal=bo)
    await scheduling.schedules.pause_schedule(schedule.name, principal=ana)
    await scheduling.schedules.delete_schedule(
        schedule.name, principal=Principal("root", Role.ADMIN)
    )
