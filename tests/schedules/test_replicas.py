"""Two replicas sharing PostgreSQL: exactly one run per tick, whether they take turns
(the scheduler task) or both run a pass at the same moment."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from skit_pipelines.domain import Pipeline
from skit_pipelines.schedules import ScheduleSpec
from skit_pipelines.store.postgres import PostgresRunStore
from skit_pipelines.triggers import Trigger

from .conftest import T0, FakeClock, build

pytest_plugins = ["skit_testing.postgres"]
pytestmark = pytest.mark.postgres


async def test_two_replicas_make_exactly_one_run_per_tick(
    postgres_dsn: str, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    clock = FakeClock()
    stores = [await PostgresRunStore.open(postgres_dsn) for _ in range(2)]
    try:
        a, b = (build(store, typed_pipeline, fake_backend_class(), clock) for store in stores)
        schedule = await a.schedules.create_schedule(
            ScheduleSpec(
                pipeline="pipelines/typed",
                parameters={"greeting": "hi"},
                trigger=Trigger(interval_seconds=1),
                max_concurrency=100,
            )
        )
        for step in range(1, 21):
            clock.now = T0 + timedelta(seconds=step * 0.5 + 0.1)
            # Taking turns: at most one of them holds the scheduler task at a time.
            held = await asyncio.gather(a.scheduler.pass_once(), b.scheduler.pass_once())
            assert any(wait is not None for wait in held)
            # And both at once, bypassing the task: the tick's request_id still holds.
            await asyncio.gather(a.scheduler.run_once(), b.scheduler.run_once())
        runs = await a.runs_of(schedule.id)
        expected = [
            (T0 + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ") for s in range(1, 11)
        ]
        assert [r.labels["skit-schedule-tick"] for r in runs] == expected
        assert len({r.id for r in runs}) == 10
        submitted = a.backend.submitted + b.backend.submitted
        assert sorted(submitted) == sorted(r.id for r in runs)
    finally:
        for store in stores:
            await store.close()
