"""dsl.importer: an existing file, named by a constant, a parameter or a step's output,
becomes an artifact of the run with the importer's type and metadata."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.domain import Code, Step, StepState
from skit_pipelines.executor import ExecutorConfig, LocalExecutor, PipelineFailed

BASE = "python:3.11"


@dsl.component(base_image=BASE)
def train(dataset: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]) -> str:
    with open(dataset.path) as f:
        lines = f.read().splitlines()
    with open(model.path, "w") as f:
        f.write(f"trained on {len(lines)} lines")
    return f"{len(lines)} {dataset.metadata.get('name')} {dataset.metadata.get('containerSpec')}"


@dsl.component(base_image=BASE)
def make_name(name: str) -> str:
    return name


@dsl.component(base_image=BASE)
def path_of(root: str) -> str:
    return f"file://{root}/shakespeare.txt"


async def test_imports_a_file_given_by_a_parameter_with_dynamic_metadata(kfp_local):
    """Adapted from pipeline_with_importer.py and pipeline_with_dynamic_importer_metadata.py:
    the URI from a pipeline parameter, metadata from parameters and a step's output."""
    source = kfp_local.data / "shakespeare.txt"
    source.write_text("to be\nor not\nto be\n")

    @dsl.pipeline(name="importer")
    def pipeline(dataset_uri: str, name: str, image: str = "tf2:latest") -> str:
        imported = dsl.importer(
            artifact_uri=dataset_uri,
            artifact_class=dsl.Dataset,
            reimport=False,
            metadata={"name": name, "containerSpec": {"imageUri": image}},
        )
        made = make_name(name="the_name")
        dsl.importer(
            artifact_uri=dataset_uri,
            artifact_class=dsl.Dataset,
            metadata={"name": made.output, "list_field": [made.output, "x"], "n": 3},
        ).set_display_name("second-importer")
        return train(dataset=imported.output).outputs["Output"]

    ran = await kfp_local.succeed(pipeline, {"dataset_uri": source.as_uri(), "name": "plays"})

    imported = ran.artifact("importer", "artifact")
    assert imported.type == "system.Dataset"
    assert imported.metadata == {"name": "plays", "containerSpec": {"imageUri": "tf2:latest"}}
    # A copy in the run's own artifacts: the run owns what it read.
    assert imported.uri.startswith(kfp_local.artifacts.root.as_uri() + "/runs/run-1/importer/")
    assert kfp_local.content(imported) == source.read_text()
    assert imported.size_bytes == len(source.read_bytes()) and imported.sha256
    assert ran.output_parameters == {"Output": "3 plays {'imageUri': 'tf2:latest'}"}
    second = ran.artifact("second-importer", "artifact")
    assert second.metadata == {"name": "the_name", "list_field": ["the_name", "x"], "n": 3}
    assert ran.steps["importer"].state is StepState.SUCCEEDED
    assert ran.steps["importer"].component == "importer"


async def test_imports_a_directory_and_a_uri_a_step_computed(kfp_local):
    folder = kfp_local.data / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("bb")
    (kfp_local.data / "shakespeare.txt").write_text("one line\n")

    @dsl.component(base_image=BASE)
    def count_files(corpus: dsl.Input[dsl.Artifact]) -> int:
        import os

        return len(os.listdir(corpus.path))

    @dsl.pipeline(name="importer-dynamic")
    def pipeline(corpus_uri: str, root: str) -> int:
        corpus = dsl.importer(artifact_uri=corpus_uri, artifact_class=dsl.Artifact)
        computed = dsl.importer(
            artifact_uri=path_of(root=root).output, artifact_class=dsl.Dataset
        ).set_display_name("computed")
        train(dataset=computed.output)
        return count_files(corpus=corpus.output).output

    ran = await kfp_local.succeed(
        pipeline, {"corpus_uri": folder.as_uri(), "root": str(kfp_local.data)}
    )

    assert ran.output_parameters == {"Output": 2}
    assert ran.artifact("importer", "artifact").size_bytes == 3
    assert ran.parameter("train").startswith("1 ")


async def test_a_uri_outside_the_import_roots_or_missing_fails_the_importer(kfp_local):
    outside = kfp_local.root / "secret.txt"
    outside.write_text("no")

    @dsl.pipeline(name="importer-refused")
    def pipeline(dataset_uri: str):
        train(dataset=dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset).output)

    refused = await kfp_local.run(pipeline, {"dataset_uri": outside.as_uri()})
    missing = await kfp_local.run(pipeline, {"dataset_uri": (kfp_local.data / "gone.csv").as_uri()})
    remote = await kfp_local.run(pipeline, {"dataset_uri": "gs://bucket/data.csv"})

    for ran in (refused, missing, remote):
        step = ran.steps["importer"]
        assert step.state is StepState.FAILED
        assert step.error is not None and step.error.code == Code.FAILED_PRECONDITION
        assert ran.steps["train"].state is StepState.SKIPPED
        assert ran.error is not None and ran.error.message.startswith("step importer failed: ")
    assert refused.steps["importer"].error.message == (
        f"cannot import {outside.as_uri()} is outside the import roots ({kfp_local.data})"
    )
    assert missing.steps["importer"].error.message == (
        f"cannot import {(kfp_local.data / 'gone.csv').as_uri()}: it does not exist"
    )
    assert "imports file:// URIs below its import roots and s3:// URIs in its artifact" in (
        remote.steps["importer"].error.message
    )


async def test_a_symlink_cannot_lead_out_of_the_import_roots(kfp_local):
    outside = kfp_local.root / "secret.txt"
    outside.write_text("no")
    (kfp_local.data / "innocent.txt").symlink_to(outside)

    @dsl.pipeline(name="importer-symlink")
    def pipeline(dataset_uri: str):
        dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)

    ran = await kfp_local.run(pipeline, {"dataset_uri": (kfp_local.data / "innocent.txt").as_uri()})

    assert ran.steps["importer"].state is StepState.FAILED
    assert "outside the import roots" in ran.steps["importer"].error.message


async def test_an_importer_inside_a_sub_pipeline_under_a_condition(kfp_local):
    """Adapted from pipeline_with_importer.py: the importer in a pipeline used as a
    component, under dsl.If."""
    source = kfp_local.data / "lines.txt"
    source.write_text("x\ny\n")

    @dsl.pipeline(name="inner")
    def inner(uri: str) -> str:
        imported = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset)
        return train(dataset=imported.output).outputs["Output"]

    @dsl.pipeline(name="outer-importer")
    def outer(uri: str, train_too: bool = True):
        with dsl.If(train_too == True):  # noqa: E712 - a pipeline expression, not Python's
            inner(uri=uri)

    ran = await kfp_local.succeed(outer, {"uri": source.as_uri()})
    skipped = await kfp_local.succeed(outer, {"uri": source.as_uri(), "train_too": False})

    names = {name for name, step in ran.steps.items() if step.state is StepState.SUCCEEDED}
    assert {n.rsplit("/", 1)[-1] for n in names} == {"importer", "train"}
    assert {step.state for step in skipped.steps.values()} == {StepState.SKIPPED}


async def test_an_imported_artifact_feeds_cached_steps_by_content(kfp_cached):
    source = kfp_cached.data / "data.txt"
    source.write_text("v1\n")

    @dsl.pipeline(name="importer-cache")
    def pipeline(uri: str) -> str:
        imported = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset)
        return train(dataset=imported.output).outputs["Output"]

    first = await kfp_cached.succeed(pipeline, {"uri": source.as_uri()})
    again = await kfp_cached.succeed(pipeline, {"uri": source.as_uri()})
    source.write_text("v2\nv2\n")
    changed = await kfp_cached.succeed(pipeline, {"uri": source.as_uri()})

    # The importer always reads the file; what uses it is cached by the content.
    assert again.steps["importer"].state is StepState.SUCCEEDED
    assert again.steps["train"].state is StepState.CACHED
    assert again.output_parameters == first.output_parameters
    assert changed.steps["train"].state is StepState.SUCCEEDED
    assert changed.output_parameters["Output"].startswith("2 ")


async def test_imports_an_object_of_the_s3_artifact_store(
    bucket: str, s3_endpoint: str, s3_client: Any, tmp_path: Path
) -> None:
    """On S3 artifacts, an s3:// URI in the store's bucket and prefix is imported (a
    server-side read, then stored below the run); one outside it is refused."""
    s3_client.put_object(Bucket=bucket, Key="prod/datasets/lines.txt", Body=b"a\nb\n")
    s3_client.put_object(Bucket=bucket, Key="other/lines.txt", Body=b"x\n")
    url = f"s3://{bucket}/prod"
    executor = LocalExecutor(
        ExecutorConfig(
            images_root=tmp_path / "images",
            work_root=tmp_path / "work",
            import_policy=ImportPolicy(artifacts_url=url),
        ),
        S3ArtifactStore.from_url(url, S3Settings(endpoint_url=s3_endpoint)),
    )

    @dsl.pipeline(name="s3-import")
    def pipeline(uri: str) -> str:
        imported = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, metadata={"k": 1})
        return train(dataset=imported.output).outputs["Output"]

    path = tmp_path / "s3-import.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    spec = yaml.safe_load(path.read_text())
    recorder = Recorder()
    result = await executor.execute("run-1", spec, {"uri": f"{url}/datasets/lines.txt"}, recorder)
    with pytest.raises(PipelineFailed) as refused:
        await executor.execute("run-2", spec, {"uri": f"s3://{bucket}/other/lines.txt"}, Recorder())

    assert result.output_parameters == {"Output": "2 None None"}
    [imported] = recorder.steps["importer"].output_artifacts
    assert imported.uri == f"{url}/runs/run-1/importer/artifact"
    assert imported.metadata == {"k": 1}
    assert imported.sha256 == hashlib.sha256(b"a\nb\n").hexdigest()
    assert refused.value.error.code == Code.FAILED_PRECONDITION
    assert f"is outside the artifact store {url}" in refused.value.error.message


class Recorder:
    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}

    async def step_changed(self, *steps: Step) -> None:
        self.steps.update((step.name, step) for step in steps)
