"""Schedules over a real store and RunController, with a fake backend and a clock the
tests move (no waiting for real ticks), and the gRPC server with the Schedule RPCs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from skit.pipelines.v1 import pipeline_service_pb2_grpc
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Pipeline, Run
from skit_pipelines.runs import RunController
from skit_pipelines.schedules import SCHEDULE_LABEL, ScheduleController, Scheduler
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.base import RunQuery, RunStore
from skit_pipelines.store.sqlite import SqliteRunStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)


class FakeClock:
    """Now is whatever the test says."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, seconds: float) -> datetime:
        """Moves to T0 + seconds."""
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


@dataclass
class Scheduling:
    clock: FakeClock
    store: RunStore
    backend: Any
    runs: RunController
    schedules: ScheduleController
    scheduler: Scheduler

    async def runs_of(self, schedule_id: str) -> list[Run]:
        page = await self.store.list_runs(
            RunQuery(labels={SCHEDULE_LABEL: schedule_id}, page_size=1000)
        )
        return sorted(page.runs, key=lambda r: r.labels["skit-schedule-tick"])

    async def at(self, seconds: float) -> None:
        """A scheduler pass at T0 + seconds."""
        self.clock.set(seconds)
        await self.scheduler.run_once()


def build(
    store: RunStore,
    pipeline: Pipeline,
    backend: Any,
    clock: FakeClock,
    *,
    grace: timedelta = timedelta(seconds=2),
) -> Scheduling:
    runs = RunController(store, Catalog({pipeline.id: pipeline}), backend, clock=clock)
    backend.start(runs)
    scheduler = Scheduler(runs, clock=clock, misfire_grace=grace)
    schedules = ScheduleController(
        runs, Catalog({pipeline.id: pipeline}), clock=clock, on_change=scheduler.wake
    )
    return Scheduling(clock, store, backend, runs, schedules, scheduler)


@pytest.fixture
async def scheduling(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> AsyncIterator[Scheduling]:
    store = SqliteRunStore(tmp_path / "runs.db")
    try:
        yield build(store, typed_pipeline, fake_backend_class(), FakeClock())
    finally:
        await store.close()


@dataclass
class ScheduleService:
    harness: Scheduling
    stub: pipeline_service_pb2_grpc.PipelineServiceStub
    address: str


@pytest.fixture
def service_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(port=0, home=tmp_path)


@pytest.fixture
async def schedule_service(
    scheduling: Scheduling, service_config: ServerConfig
) -> AsyncIterator[ScheduleService]:
    server, port, health = await create_grpc_server(
        scheduling.runs, service_config, schedules=lambda: scheduling.schedules
    )
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield ScheduleService(
            scheduling, pipeline_service_pb2_grpc.PipelineServiceStub(channel), address
        )
    finally:
        await channel.close()
        await server.stop(None)
