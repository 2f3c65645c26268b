"""What KFP users write, through the service: CreateRun over gRPC with the local backend,
the run store and the real executor. Python components, importer and metrics reach the
Run API; what would fail a second later is refused at CreateRun instead."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from kfp import compiler, dsl

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.backends.deferred import DeferredBackend
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.backends.local_checks import LocalRunChecks
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Pipeline
from skit_pipelines.errors import FailedPrecondition, InvalidArgument
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import RunController
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore

BASE = "python:3.11"


@dsl.component(base_image=BASE)
def evaluate(
    data: dsl.Input[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
) -> int:
    with open(data.path) as f:
        rows = f.read().splitlines()
    metrics.log_metric("rows", len(rows))
    metrics.log_metric("accuracy", 0.75)
    confusion.log_confusion_matrix(["yes", "no"], [[3, 1], [0, 4]])
    return len(rows)


@dsl.component(base_image=BASE, packages_to_install=["surely-not-installed-pkg>=2"])
def exotic() -> str:
    return "never"


@dsl.pipeline(name="evaluate-import")
def evaluate_import(dataset_uri: str, owner: str = "qa") -> int:
    imported = dsl.importer(
        artifact_uri=dataset_uri, artifact_class=dsl.Dataset, metadata={"owner": owner}
    )
    return evaluate(data=imported.output).outputs["Output"]


@dsl.pipeline(name="exotic")
def exotic_pipeline():
    exotic()


@dsl.pipeline(name="fixed-import")
def fixed_import():
    dsl.importer(artifact_uri="file:///etc/passwd", artifact_class=dsl.Dataset)


def compile_pipeline(pipeline: Any, tmp: Path) -> Pipeline:
    path = tmp / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return pipeline_from_spec(yaml.safe_load(path.read_text()))


class Service:
    """The controller with the local backend, served over gRPC on port 0."""

    def __init__(self, root: Path, pipelines: list[Pipeline]) -> None:
        self.data = root / "data"
        self.data.mkdir()
        artifacts = LocalArtifactStore(root / "artifacts")
        self.policy = ImportPolicy(roots=(self.data.resolve(),), artifacts_root=artifacts.root)
        self.store = SqliteRunStore(root / "runs.db")
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=root / "images",
                work_root=root / "work",
                cancel_grace_seconds=2,
                import_policy=self.policy,
            ),
            artifacts,
            cache=StoreStepCache(self.store),
        )
        self.backend = LocalBackend(executor)
        self.catalog = Catalog({p.id: p for p in pipelines})
        self.controller = RunController(self.store, self.catalog, self.backend)
        self.backend.start(self.controller)
        self.root = root

    async def serve(self) -> pipeline_service_pb2_grpc.PipelineServiceStub:
        self.server, port, health = await create_grpc_server(
            self.controller, ServerConfig(port=0, home=self.root)
        )
        await self.server.start()
        await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return pipeline_service_pb2_grpc.PipelineServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(None)
        await self.backend.shutdown()
        await self.store.close()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    pipelines = [
        compile_pipeline(p, tmp_path) for p in (evaluate_import, exotic_pipeline, fixed_import)
    ]
    service = Service(tmp_path, pipelines)
    service.stub = await service.serve()
    try:
        yield service
    finally:
        await service.close()


def request(pipeline: str, **parameters: Any) -> pb.CreateRunRequest:
    values = struct_pb2.Struct()
    values.update(parameters)
    return pb.CreateRunRequest(run=run_pb2.Run(pipeline=f"pipelines/{pipeline}", parameters=values))


async def finished(stub: Any, name: str) -> run_pb2.Run:
    async def watch() -> run_pb2.Run:
        async for event in stub.WatchRun(pb.WatchRunRequest(name=name)):
            if event.run.state in (run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED):
                return event.run
        raise AssertionError("the stream ended before the run")

    return await asyncio.wait_for(watch(), 60)


def refusal(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return reason, fields


async def test_importer_lightweight_component_and_metrics_reach_the_run_api(service):
    source = service.data / "answers.csv"
    source.write_text("a\nb\nc\nd\n")

    created = await service.stub.CreateRun(
        request("evaluate-import", dataset_uri=source.as_uri(), owner="qa-team")
    )
    run = await finished(service.stub, created.name)

    assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run.error
    steps = {step.name: step for step in run.steps}
    imported = steps["importer"].output_artifacts[0]
    assert imported.type == "system.Dataset"
    assert json_format.MessageToDict(imported.metadata) == {"owner": "qa-team"}
    evaluated = steps["evaluate"]
    assert [(m.name, m.value, m.artifact) for m in evaluated.metrics] == [
        ("accuracy", 0.75, "metrics"),
        ("rows", 4.0, "metrics"),
    ]
    confusion = next(a for a in evaluated.output_artifacts if a.name == "confusion")
    assert confusion.type == "system.ClassificationMetrics"
    rows = json_format.MessageToDict(confusion.metadata)["confusionMatrix"]["rows"]
    assert [r["row"] for r in rows] == [[3, 1], [0, 4]]
    # What the store keeps decodes back the same (GetRun reads the stored snapshot).
    again = await service.stub.GetRun(pb.GetRunRequest(name=created.name))
    assert list(again.steps) == list(run.steps)


async def test_packages_not_installed_are_refused_at_create_run(service):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(request("exotic"))

    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "exotic needs surely-not-installed-pkg>=2 (not installed)" in caught.value.details()
    assert refusal(caught.value)[0] == "PACKAGES_NOT_INSTALLED"
    listed = await service.stub.ListRuns(pb.ListRunsRequest())
    assert not listed.runs, "nothing was stored"


async def test_an_import_uri_outside_the_roots_is_refused_at_create_run(service):
    outside = service.root / "secret.csv"
    outside.write_text("x\n")

    with pytest.raises(grpc.aio.AioRpcError) as parameter:
        await service.stub.CreateRun(request("evaluate-import", dataset_uri=outside.as_uri()))
    with pytest.raises(grpc.aio.AioRpcError) as constant:
        await service.stub.CreateRun(request("fixed-import"))

    assert parameter.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(parameter.value) == ("IMPORT_NOT_ALLOWED", ["run.parameters.dataset_uri"])
    assert "is outside the import roots" in parameter.value.details()
    assert constant.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal(constant.value)[0] == "IMPORT_NOT_ALLOWED"
    assert "file:///etc/passwd is outside the import roots" in constant.value.details()
    assert not (await service.stub.ListRuns(pb.ListRunsRequest())).runs


async def test_a_missing_import_fails_the_step_not_create_run(service):
    created = await service.stub.CreateRun(
        request("evaluate-import", dataset_uri=(service.data / "later.csv").as_uri())
    )
    run = await finished(service.stub, created.name)

    assert run.state == run_pb2.RUN_STATE_FAILED
    assert run.error.code == code_pb2.FAILED_PRECONDITION
    assert run.error.message.startswith("step importer failed: cannot import file://")
    assert run.error.message.endswith("later.csv: it does not exist")


async def test_a_deferred_local_backend_checks_before_it_is_built(tmp_path: Path):
    """On SQLite the local backend is built after the service answers: its checks run
    before that, so the first CreateRun is refused like any other."""
    pipeline = compile_pipeline(exotic_pipeline, tmp_path)
    importing = compile_pipeline(evaluate_import, tmp_path)
    policy = ImportPolicy(roots=(tmp_path.resolve(),))
    built: list[str] = []
    deferred = DeferredBackend(
        "local", lambda: built.append("built"), check=LocalRunChecks(policy).check
    )

    with pytest.raises(FailedPrecondition) as packages:
        deferred.check_runnable(pipeline, {})
    with pytest.raises(InvalidArgument) as uri:
        deferred.check_runnable(importing, {"dataset_uri": "file:///etc/hosts", "owner": "x"})
    deferred.check_runnable(importing, {"dataset_uri": (tmp_path / "x").as_uri(), "owner": "x"})

    assert packages.value.reason == "PACKAGES_NOT_INSTALLED"
    assert [v.field for v in uri.value.violations] == ["run.parameters.dataset_uri"]
    assert not built
