"""A small project (one image folder, one pipeline) and the whole service built on it
with telemetry on: spans to an in-memory exporter, metrics on /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2
from skit_pipelines.config import ServerConfig
from skit_pipelines.server import Application, build_application
from skit_pipelines.telemetry import Telemetry
from skit_testing.projects import write_traced_project


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_traced_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def app(
    tmp_path: Path, project: Path, spans: InMemorySpanExporter
) -> AsyncIterator[Application]:
    config = ServerConfig(
        port=0, home=tmp_path / "home", project_root=project, demo_data=False, metrics_port=0
    )
    application = await build_application(
        config, telemetry=Telemetry.from_config(config, span_exporter=spans)
    )
    await application.start()
    try:
        yield application
    finally:
        await application.stop(0)


@pytest.fixture
async def stub(app: Application) -> AsyncIterator[pipeline_service_pb2_grpc.PipelineServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pipeline_service_pb2_grpc.PipelineServiceStub(channel)


async def _run_to_end(
    stub: pipeline_service_pb2_grpc.PipelineServiceStub, mode: str = "ok"
) -> run_pb2.Run:
    run = run_pb2.Run(pipeline="pipelines/traced")
    run.parameters.update({"mode": mode})
    created = await stub.CreateRun(pipeline_service_pb2.CreateRunRequest(run=run), timeout=10)
    last = created
    async for message in stub.WatchRun(
        pipeline_service_pb2.WatchRunRequest(name=created.name), timeout=60
    ):
        last = message.run
    return last


@pytest.fixture
def run_to_end() -> Callable[..., Awaitable[run_pb2.Run]]:
    """Creates a run of "traced" with `mode` and watches it to its end; returns the last
    snapshot (test modules cannot import this conftest)."""
    return _run_to_end
