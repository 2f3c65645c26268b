"""Vanished artifacts (issue 13, item 2): the step cache reuses only what is still there.

The whole service path: the runs controller, the local backend, the executor, the step
cache in the run store, and a local or S3 artifact store. The artifacts of the run that
filled the cache disappear (a cleaned directory, an S3 lifecycle rule, DeleteRun); the
next run reruns the step instead of failing, and runs that reused a step keep working
after the run they reused it from is deleted.
"""

# No `from __future__ import annotations`: kfp reads the components' real signatures.

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from skit_pipelines.artifacts import ArtifactStore, LocalArtifactStore
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.errors import NotFound
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore

IMAGES = Path(__file__).resolve().parents[1] / "executor" / "images"
IMAGE = "skit-pipelines/t-tool:0.1.0"
TOOL = ["python", "-m", "tool"]
RUN_TIMEOUT_SECONDS = 60


def pipeline_spec(tmp_path: Path, executions: Path) -> dict[str, Any]:
    """prepare (counted in `executions`) -> train, which reads prepare's artifact: the
    shape of retrain-slu's prepare-slu-dataset -> train-slu."""

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

    path = tmp_path / "retrain.yaml"
    compiler.Compiler().compile(retrain, str(path))
    return yaml.safe_load(path.read_text())


class Service:
    """The service's run path on one artifact store, as server.py wires it."""

    def __init__(self, root: Path, artifacts: ArtifactStore) -> None:
        self.executions = root / "executions.log"
        self.artifacts = artifacts
        self.store = SqliteRunStore(root / "runs.db")
        pipeline = pipeline_from_spec(pipeline_spec(root, self.executions))
        self.executor = LocalExecutor(
            ExecutorConfig(images_root=IMAGES, work_root=root / "work"),
            artifacts,
            cache=StoreStepCache(self.store),
        )
        self.backend = LocalBackend(self.executor)
        self.controller = RunController(self.store, Catalog({pipeline.id: pipeline}), self.backend)
        self.backend.start(self.controller)

    def executed(self) -> int:
        """How many times the prepare step really ran."""
        return len(self.executions.read_text().split()) if self.executions.exists() else 0

    async def run(self) -> Run:
        run = await self.controller.create_run(CreateRunInput(pipeline="pipelines/retrain"))

        async def ended() -> Run:
            async for snapshot in self.controller.watch_run(run.name):
                last = snapshot
            return last

        return await asyncio.wait_for(ended(), RUN_TIMEOUT_SECONDS)

    def read(self, uri: str, scratch: Path) -> str:
        return self.artifacts.open_local(uri, scratch).read_text()

    async def close(self) -> None:
        await self.backend.shutdown()
        await self.store.close()


@pytest.fixture(params=["local", "s3"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Service]:
    if request.param == "local":
        artifacts: ArtifactStore = LocalArtifactStore(tmp_path / "artifacts")
    else:
        bucket = request.getfixturevalue("bucket")
        endpoint = request.getfixturevalue("s3_endpoint")
        artifacts = S3ArtifactStore.from_url(
            f"s3://{bucket}/pipelines", S3Settings(endpoint_url=endpoint)
        )
    service = Service(tmp_path, artifacts)
    try:
        yield service
    finally:
        await service.close()


def step_states(run: Run) -> dict[str, StepState]:
    return {step.name: step.state for step in run.steps}


def artifact_uris(run: Run) -> list[str]:
    return [a.uri for step in run.steps for a in step.output_artifacts] + [
        a.uri for a in run.outputs
    ]


async def test_a_cached_run_keeps_its_outputs_in_its_own_folder(
    service: Service, tmp_path: Path
) -> None:
    first = await service.run()
    second = await service.run()
    assert step_states(second) == {"prepare": StepState.CACHED, "train": StepState.CACHED}
    assert service.executed() == 1
    uris = artifact_uris(second)
    assert uris and all(f"/runs/{second.id}/" in uri for uri in uris), uris
    assert not any(f"/runs/{first.id}/" in uri for uri in uris)


async def test_vanished_cache_artifacts_rerun_the_step_instead_of_failing(
    service: Service, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filler = await service.run()
    assert filler.state is RunState.SUCCEEDED, filler.error
    # What a cleaned directory or an S3 lifecycle rule does: the run stays, its files go.
    service.artifacts.delete_prefix(f"runs/{filler.id}")

    with caplog.at_level(logging.INFO, logger="skit_pipelines.executor"):
        after = await service.run()

    assert after.state is RunState.SUCCEEDED, after.error
    assert step_states(after) == {"prepare": StepState.SUCCEEDED, "train": StepState.SUCCEEDED}
    assert service.executed() == 2, "prepare ran again"
    assert "not reusing step prepare from the cache" in caplog.text
    (output,) = after.outputs
    assert service.read(output.uri, tmp_path / "scratch") == "dataset+model"
    # The cache holds the new run's outputs now: the next run reuses them again.
    again = await service.run()
    assert step_states(again)["prepare"] is StepState.CACHED
    assert service.executed() == 2


async def test_deleting_the_run_that_filled_the_cache_breaks_no_other_run(
    service: Service, tmp_path: Path
) -> None:
    filler = await service.run()
    reuser = await service.run()
    assert step_states(reuser)["prepare"] is StepState.CACHED

    await service.controller.delete_run(filler.name)

    with pytest.raises(NotFound):
        await service.controller.get_run(filler.name)
    (output,) = reuser.outputs
    assert service.read(output.uri, tmp_path / "scratch") == "dataset+model"
    for step in reuser.steps:
        for artifact in step.output_artifacts:
            service.read(artifact.uri, tmp_path / "scratch" / step.name)
    # The cache entry still named the deleted run's files: the next run reruns, and
    # succeeds.
    after = await service.run()
    assert after.state is RunState.SUCCEEDED, after.error
    assert step_states(after)["prepare"] is StepState.SUCCEEDED
    assert service.executed() == 2
