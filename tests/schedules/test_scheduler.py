"""The scheduler: the runs each tick makes, concurrency and catch-up policies, exactly one
run per tick across retries and restarts. Time is the tests' own clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from skit_pipelines.domain import RunState
from skit_pipelines.schedules import Scheduler, ScheduleSpec, tick_request_id
from skit_pipelines.triggers import CatchupPolicy, OverlapPolicy, Trigger

from .conftest import T0, Scheduling


def every(seconds: int, **changes: object) -> ScheduleSpec:
    spec = ScheduleSpec(
        pipeline="pipelines/typed",
        parameters={"greeting": "hi"},
        labels={"team": "asr"},
        trigger=Trigger(interval_seconds=seconds),
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


def ticks(runs) -> list[str]:
    return [run.labels["skit-schedule-tick"] for run in runs]


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_interval_of_one_second_for_ten_seconds_makes_ten_runs(
    scheduling: Scheduling,
) -> None:
    scheduling.clock.set(0.4)
    schedule = await scheduling.schedules.create_schedule(
        every(1, max_concurrency=100), schedule_id="every-second"
    )
    # Passes at uneven moments, several per tick and some repeated: only ticks make runs.
    for step in range(1, 43):
        await scheduling.at(0.4 + step * 0.25)
        await scheduling.scheduler.run_once()
    runs = await scheduling.runs_of(schedule.id)
    assert ticks(runs) == [at(s) for s in range(1, 11)]
    assert all(run.labels["team"] == "asr" for run in runs)
    assert all(run.parameters["greeting"] == "hi" for run in runs)
    stored = await scheduling.schedules.get_schedule(schedule.name)
    assert stored.runs_created == 10 and stored.ticks_skipped == 0
    assert stored.last_tick_time == T0 + timedelta(seconds=10)
    assert stored.next_tick() == T0 + timedelta(seconds=11)
    assert stored.last_run == runs[-1].name


async def test_runs_belong_to_the_schedules_creator_with_a_deterministic_request_id(
    scheduling: Scheduling,
) -> None:
    from skit_pipelines.domain import Principal, Role

    owner = Principal("ana", Role.RUNNER)
    schedule = await scheduling.schedules.create_schedule(every(10), principal=owner)
    await scheduling.at(10)
    (run,) = await scheduling.runs_of(schedule.id)
    assert run.creator == "ana"
    assert run.request_id == tick_request_id(schedule, T0 + timedelta(seconds=10))


async def test_a_tick_retried_after_a_lost_cursor_or_by_another_scheduler_makes_no_second_run(
    scheduling: Scheduling,
) -> None:
    schedule = await scheduling.schedules.create_schedule(every(10, max_concurrency=5))
    await scheduling.at(10.5)
    # As if the process died after making the run but before storing the cursor.
    await scheduling.store.update_schedule(schedule.id, lambda s: replace(s, cursor=T0))
    await scheduling.at(10.6)
    # A second scheduler (a restarted process) over the same store.
    other = Scheduler(scheduling.runs, clock=scheduling.clock)
    await other.run_once()
    # Even with the tick's run finished (not active any more), the request_id holds.
    (run,) = await scheduling.runs_of(schedule.id)
    await scheduling.backend.sinks[run.id].run_succeeded(run.id, [], {})
    await scheduling.store.update_schedule(schedule.id, lambda s: replace(s, cursor=T0))
    await other.run_once()
    assert ticks(await scheduling.runs_of(schedule.id)) == [at(10)]


async def test_max_concurrency_skips_ticks_while_slow_runs_are_active(
    scheduling: Scheduling,
) -> None:
    schedule = await scheduling.schedules.create_schedule(
        every(10, max_concurrency=2, overlap_policy=int(OverlapPolicy.SKIP))
    )
    await scheduling.at(10)
    await scheduling.at(20)
    await scheduling.at(30)  # two runs still going: skipped
    stored = await scheduling.schedules.get_schedule(schedule.name)
    assert stored.ticks_skipped == 1 and stored.last_skip_reason.startswith("MAX_CONCURRENCY")
    assert at(30) in stored.last_skip_reason
    first, _ = await scheduling.runs_of(schedule.id)
    await scheduling.backend.sinks[first.id].run_succeeded(first.id, [], {})
    await scheduling.at(40)
    runs = await scheduling.runs_of(schedule.id)
    assert ticks(runs) == [at(10), at(20), at(40)]
    assert sum(not r.state.terminal for r in runs) == 2
    assert scheduling.backend.cancelled == []


async def test_cancel_oldest_makes_room_and_says_so(scheduling: Scheduling) -> None:
    scheduling.backend.cancel_completes = False  # slow to stop: CANCELLING for a while
    schedule = await scheduling.schedules.create_schedule(
        every(10, max_concurrency=1, overlap_policy=int(OverlapPolicy.CANCEL_OLDEST))
    )
    await scheduling.at(10)
    await scheduling.at(20)
    await scheduling.at(30)
    runs = await scheduling.runs_of(schedule.id)
    assert ticks(runs) == [at(10), at(20), at(30)]
    assert scheduling.backend.cancelled == [runs[0].id, runs[1].id]
    assert [r.state for r in runs] == [RunState.CANCELLING, RunState.CANCELLING, RunState.QUEUED]
    stored = await scheduling.schedules.get_schedule(schedule.name)
    assert stored.runs_cancelled == 2 and stored.ticks_skipped == 0


@pytest.mark.parametrize(
    ("policy", "window", "caught_up"),
    [
        (CatchupPolicy.SKIP, None, []),
        (CatchupPolicy.RUN_LATEST, None, [60]),
        (CatchupPolicy.RUN_ALL, None, [20, 30, 40, 50, 60]),
        (CatchupPolicy.RUN_ALL, timedelta(seconds=25), [40, 50, 60]),
    ],
)
async def test_catch_up_after_the_server_was_down_for_five_ticks(
    scheduling: Scheduling,
    policy: CatchupPolicy,
    window: timedelta | None,
    caught_up: list[int],
) -> None:
    schedule = await scheduling.schedules.create_schedule(
        every(10, max_concurrency=100, catchup_policy=int(policy), catchup_window=window)
    )
    await scheduling.at(10.5)
    # Down from 11 s to 64 s: ticks 20 to 60 pass unseen; at 64 s even the latest is 4 s
    # late, beyond the 2 s grace.
    await scheduling.at(64)
    runs = await scheduling.runs_of(schedule.id)
    assert ticks(runs) == [at(10), *(at(s) for s in caught_up)]
    stored = await scheduling.schedules.get_schedule(schedule.name)
    assert stored.ticks_skipped == 5 - len(caught_up)
    if caught_up != [20, 30, 40, 50, 60]:
        assert stored.last_skip_reason.startswith("MISSED")
    # Then on as usual.
    await scheduling.at(70.2)
    assert ticks(await scheduling.runs_of(schedule.id))[-1] == at(70)
    assert len(await scheduling.runs_of(schedule.id)) == 2 + len(caught_up)


async def test_a_tick_seen_within_the_grace_runs_under_every_policy(
    scheduling: Scheduling,
) -> None:
    schedule = await scheduling.schedules.create_schedule(
        every(10, catchup_policy=int(CatchupPolicy.SKIP))
    )
    await scheduling.at(11.5)
    assert ticks(await scheduling.runs_of(schedule.id)) == [at(10)]


async def test_paused_schedules_make_no_runs_and_resume_from_now(
    scheduling: Scheduling,
) -> None:
    schedule = await scheduling.schedules.create_schedule(
        every(10, catchup_policy=int(CatchupPolicy.RUN_ALL))
    )
    paused = await scheduling.schedules.pause_schedule(schedule.name, "data source migrating")
    assert paused.paused and paused.pause_reason == "data source migrating"
    assert paused.next_tick() is None
    await scheduling.at(35)
    assert await scheduling.runs_of(schedule.id) == []
    resumed = await scheduling.schedules.resume_schedule(schedule.name)
    assert not resumed.paused and resumed.next_tick() == T0 + timedelta(seconds=40)
    await scheduling.at(36)
    assert await scheduling.runs_of(schedule.id) == []  # paused ticks are not caught up
    await scheduling.at(40)
    assert ticks(await scheduling.runs_of(schedule.id)) == [at(40)]


async def test_start_and_end_time_bound_the_ticks(scheduling: Scheduling) -> None:
    schedule = await scheduling.schedules.create_schedule(
        every(
            10,
            max_concurrency=100,
            start_time=T0 + timedelta(seconds=25),
            end_time=T0 + timedelta(seconds=55),
        )
    )
    assert schedule.upcoming(5) == [T0 + timedelta(seconds=s) for s in (25, 35, 45)]
    for second in range(0, 90, 5):
        await scheduling.at(second)
    assert ticks(await scheduling.runs_of(schedule.id)) == [at(25), at(35), at(45)]
    assert (await scheduling.schedules.get_schedule(schedule.name)).next_tick() is None


async def test_backfill_makes_each_ticks_run_once(scheduling: Scheduling) -> None:
    schedule = await scheduling.schedules.create_schedule(every(10, max_concurrency=1))
    await scheduling.at(10)
    runs = await scheduling.schedules.backfill_schedule(
        schedule.name, T0 - timedelta(seconds=30), T0 + timedelta(seconds=11)
    )
    # Backfill ignores max_concurrency, and tick 10 keeps the run the scheduler made.
    assert ticks(runs) == [at(s) for s in (-30, -20, -10, 0, 10)]
    again = await scheduling.schedules.backfill_schedule(
        schedule.name, T0 - timedelta(seconds=30), T0 + timedelta(seconds=11)
    )
    assert [r.id for r in again] == [r.id for r in runs]
    assert len(await scheduling.runs_of(schedule.id)) == 5
    stored = await scheduling.schedules.get_schedule(schedule.name)
    assert stored.runs_created == 5


async def test_backfill_is_bounded(scheduling: Scheduling) -> None:
    from skit_pipelines.errors import InvalidArgument

    schedule = await scheduling.schedules.create_schedule(every(1))
    with pytest.raises(InvalidArgument) as error:
        await scheduling.schedules.backfill_schedule(schedule.name, T0, T0 + timedelta(hours=1))
    assert error.value.violations[0].field == "end_time"
    assert await scheduling.runs_of(schedule.id) == []


async def test_a_changed_trigger_starts_from_now(scheduling: Scheduling) -> None:
    schedule = await scheduling.schedules.create_schedule(
        every(100, catchup_policy=int(CatchupPolicy.RUN_ALL))
    )
    scheduling.clock.set(50)
    updated = await scheduling.schedules.update_schedule(schedule.name, every(7), ["trigger"])
    assert updated.trigger.interval_seconds == 7
    assert updated.catchup_policy is CatchupPolicy.RUN_ALL  # not in the mask: kept
    assert updated.next_tick() == T0 + timedelta(seconds=56)
    await scheduling.at(57)
    assert ticks(await scheduling.runs_of(schedule.id)) == [at(56)]
