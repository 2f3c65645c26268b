"""A run with the step cache off (Run.disable_cache), through the gRPC API: with the local
backend, the run store's step cache and the real executor, every step of such a run runs
and what it computes is cached for later runs; CreateRun's idempotency and RetryRun (with
the fake backend) keep the setting."""

# No `from __future__ import annotations`: kfp reads the components' real signatures.

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2
from kfp import compiler, dsl

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import run_pb2
from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import ErrorInfo, Step, StepState
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import RunController
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_pipelines_client import AsyncPipelinesClient, Run, RunState
from skit_pipelines_client import StepState as ClientStepState

IMAGES = Path(__file__).resolve().parents[1] / "executor" / "images"
IMAGE = "skit-pipelines/t-tool:0.1.0"
TOOL = ["python", "-m", "tool"]
RUN_TIMEOUT_SECONDS = 60


def pipeline_spec(root: Path, executions: Path) -> dict[str, Any]:
    """prepare (each execution counted in `executions`) -> train, both cached."""

    @dsl.container_component
    def prepare(text: str, out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["count", str(executions), out.path, text]
        )

    @dsl.container_component
    def train(data: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["append", data.path, out.path, "+model"]
        )

    @dsl.pipeline(name="retrain")
    def retrain(text: str = "dataset") -> dsl.Dataset:
        return train(data=prepare(text=text).outputs["out"]).outputs["out"]

    path = root / "retrain.yaml"
    compiler.Compiler().compile(retrain, str(path))
    return yaml.safe_load(path.read_text())


class LocalService:
    """The server as `serve` wires it on the embedded default, on port 0."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.executions = root / "executions.log"
        self.store = SqliteRunStore(root / "runs.db")
        pipeline = pipeline_from_spec(pipeline_spec(root, self.executions))
        executor = LocalExecutor(
            ExecutorConfig(images_root=IMAGES, work_root=root / "work"),
            LocalArtifactStore(root / "artifacts"),
            cache=StoreStepCache(self.store),
        )
        self.backend = LocalBackend(executor)
        self.controller = RunController(self.store, Catalog({pipeline.id: pipeline}), self.backend)
        self.backend.start(self.controller)

    async def start(self) -> str:
        self.server, port, health = await create_grpc_server(
            self.controller, ServerConfig(port=0, home=self.root)
        )
        await self.server.start()
        await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        return f"127.0.0.1:{port}"

    def executed(self) -> int:
        """How many times the prepare step really ran."""
        return len(self.executions.read_text().split()) if self.executions.exists() else 0

    async def close(self) -> None:
        await self.server.stop(None)
        await self.backend.shutdown()
        await self.store.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[LocalService, AsyncPipelinesClient]]:
    service = LocalService(tmp_path)
    address = await service.start()
    try:
        async with AsyncPipelinesClient(address, timeout=10) as client:
            yield service, client
    finally:
        await service.close()


async def finished(client: AsyncPipelinesClient, run: Run) -> Run:
    async def last() -> Run:
        ended = run
        async for snapshot in client.watch_run(run.name):
            ended = snapshot
        return ended

    ended = await asyncio.wait_for(last(), RUN_TIMEOUT_SECONDS)
    assert ended.state is RunState.SUCCEEDED, ended.error
    return ended


def states(run: Run) -> dict[str, tuple[ClientStepState, bool]]:
    return {step.name: (step.state, step.cached) for step in run.steps}


RAN = (ClientStepState.SUCCEEDED, False)
REUSED = (ClientStepState.CACHED, True)


async def test_a_run_with_the_cache_off_reruns_cached_steps_and_refills_the_cache(
    client: tuple[LocalService, AsyncPipelinesClient],
) -> None:
    service, api = client
    filler = await finished(api, await api.create_run("retrain", {}, {}))
    assert states(filler) == {"prepare": RAN, "train": RAN} and not filler.disable_cache

    created = await api.create_run("retrain", {}, {}, disable_cache=True)
    assert created.disable_cache
    uncached = await finished(api, created)

    assert states(uncached) == {"prepare": RAN, "train": RAN}
    assert service.executed() == 2, "the run with the cache off reused prepare"
    assert (await api.get_run(created.name)).disable_cache
    # The cache now holds what the run with the cache off computed: with the first
    # run's files gone, a later run still reuses every step.
    await api.delete_run(filler.name)
    later = await finished(api, await api.create_run("retrain", {}, {}))
    assert states(later) == {"prepare": REUSED, "train": REUSED}
    assert service.executed() == 2


def create_request(**kwargs: Any) -> pb.CreateRunRequest:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"})
    return pb.CreateRunRequest(
        run=run_pb2.Run(
            pipeline="pipelines/typed",
            parameters=parameters,
            disable_cache=kwargs.pop("disable_cache", False),
        ),
        **kwargs,
    )


async def test_a_request_id_replayed_with_another_cache_setting_is_already_exists(
    service: Any,
) -> None:
    first = await service.stub.CreateRun(create_request(request_id="k-1", disable_cache=True))
    again = await service.stub.CreateRun(create_request(request_id="k-1", disable_cache=True))
    assert again.name == first.name and again.disable_cache

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(create_request(request_id="k-1"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.name in caught.value.details()
    assert len(service.backend.submitted) == 1


@pytest.mark.parametrize("disable_cache", [True, False])
async def test_a_retry_keeps_the_cache_setting_of_the_run_it_retries(
    service: Any, disable_cache: bool
) -> None:
    run = await service.stub.CreateRun(create_request(disable_cache=disable_cache))
    run_id = run.name.removeprefix("runs/")
    sink = service.backend.sinks[run_id]
    await sink.step_changed(run_id, Step(name="first", state=StepState.SUCCEEDED))
    await sink.run_failed(run_id, ErrorInfo(code=2, message="boom", reason="STEP_FAILED"))

    retry = await service.stub.RetryRun(pb.RetryRunRequest(name=run.name))

    assert retry.disable_cache is disable_cache
    # Its succeeded steps are reused all the same: RetryRun's contract, not the cache.
    assert [(s.name, s.state) for s in retry.steps] == [("first", run_pb2.STEP_STATE_CACHED)]
    stored = await service.store.get_run(retry.name.removeprefix("runs/"))
    assert stored.disable_cache is disable_cache
