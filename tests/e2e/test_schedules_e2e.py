"""Schedules through the real `serve` process: the scheduler the server starts makes one
run per tick of an interval schedule, labelled with the schedule and the tick, and stops
when the schedule is paused."""

from __future__ import annotations

import asyncio

from skit_pipelines_client import PipelinesClient
from skit_testing.waiting import until

SCHEDULE_LABEL = "skit-schedule"
TICK_LABEL = "skit-schedule-tick"
INTERVAL_SECONDS = 1


async def test_the_served_scheduler_makes_one_run_per_tick(server) -> None:
    with PipelinesClient(server.address) as client:
        schedule = client.create_schedule(
            "random-sample-calls",
            {"call_quantity": 5},
            interval_seconds=INTERVAL_SECONDS,
            max_concurrency=10,
            schedule_id="every-second",
        )
        schedule_id = schedule.name.removeprefix("schedules/")

        def runs() -> list:
            return list(client.list_runs(labels={SCHEDULE_LABEL: schedule_id}))

        made = await until(lambda: len(runs()) >= 3 and runs(), 30, what="three ticks' runs")
        assert isinstance(made, list)
        ticks = [run.labels[TICK_LABEL] for run in made]
        assert len(set(ticks)) == len(ticks), ticks
        assert {run.pipeline for run in made} == {"pipelines/random-sample-calls"}

        paused = client.pause_schedule(schedule.name, reason="enough")
        assert paused.paused and paused.pause_reason == "enough"
        # A pass that began before the pause may still finish its tick; then none follow.
        # Absence can only be shown by letting ticks go by: three intervals.
        settled = {run.name for run in runs()}
        await asyncio.sleep(3 * INTERVAL_SECONDS)
        assert len({run.name for run in runs()} - settled) <= 1
        after = {run.name for run in runs()}
        await asyncio.sleep(3 * INTERVAL_SECONDS)
        assert {run.name for run in runs()} == after
        client.delete_schedule(schedule.name)
