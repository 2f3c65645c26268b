"""The local executor with S3ArtifactStore: components read and write local paths, the
executor uploads their outputs and downloads the next step's inputs, and the run's
outputs are s3:// URIs with content hashes."""

# No `from __future__ import annotations`: kfp reads component signatures' annotations.

import hashlib
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, dsl

from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.domain import Step
from skit_pipelines.executor import ExecutorConfig, InMemoryStepCache, LocalExecutor

IMAGES = Path(__file__).resolve().parents[1] / "executor" / "images"
IMAGE = "skit-pipelines/t-tool:0.1.0"
TOOL = ["python", "-m", "tool"]


@dsl.container_component
def emit(text: str, out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["write", out.path, text])


@dsl.container_component
def append(data: dsl.Input[dsl.Dataset], out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["append", data.path, out.path, "!"])


@dsl.pipeline(name="s3-chain")
def chain(text: str = "hello") -> dsl.Dataset:
    first = emit(text=text)
    return append(data=first.outputs["out"]).outputs["out"]


class Recorder:
    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}

    async def step_changed(self, *steps: Step) -> None:
        self.steps.update((step.name, step) for step in steps)


def compiled(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "chain.yaml"
    compiler.Compiler().compile(chain, str(path))
    return yaml.safe_load(path.read_text())


async def test_steps_exchange_artifacts_through_s3(
    bucket: str, s3_endpoint: str, s3_client: Any, tmp_path: Path
) -> None:
    store = S3ArtifactStore.from_url(f"s3://{bucket}/prod", S3Settings(endpoint_url=s3_endpoint))
    executor = LocalExecutor(
        ExecutorConfig(images_root=IMAGES, work_root=tmp_path / "work"),
        store,
        InMemoryStepCache(),
    )
    recorder = Recorder()
    result = await executor.execute("run-1", compiled(tmp_path), {"text": "hi"}, recorder)

    [output] = result.outputs
    assert output.uri == f"s3://{bucket}/prod/runs/run-1/append/out"
    body = s3_client.get_object(Bucket=bucket, Key="prod/runs/run-1/append/out")["Body"].read()
    assert body == b"hi!"
    assert output.sha256 == hashlib.sha256(b"hi!").hexdigest()
    [emitted] = recorder.steps["emit"].output_artifacts
    assert emitted.uri == f"s3://{bucket}/prod/runs/run-1/emit/out"
    assert emitted.sha256 == hashlib.sha256(b"hi").hexdigest()
    assert not (tmp_path / "work" / "run-1").exists()
