"""Cache keys, and whether a step completed earlier can be reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.domain import Artifact, Step, StepState
from skit_pipelines.executor._cache import (
    NotReusable,
    Reusable,
    cache_key,
    check_outputs,
    declared_artifact_uris,
    gone_artifacts,
    restored,
)
from skit_pipelines.images import ImageFolder

FOLDER = ImageFolder(name="t_tool", path=Path("/images/t_tool"), version="0.1.0", declared_env=())
COMPONENT = json_format.ParseDict(
    {
        "outputDefinitions": {
            "parameters": {"n": {"parameterType": "NUMBER_INTEGER"}},
            "artifacts": {"data": {"artifactType": {"schemaTitle": "system.Dataset"}}},
        }
    },
    pipeline_spec_pb2.ComponentSpec(),
)
CONTAINER = json_format.ParseDict(
    {"image": "skit-pipelines/t-tool:0.1.0", "env": [{"name": "A", "value": "1"}]},
    pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec(),
)


def key(**changes: Any) -> str:
    arguments: dict[str, Any] = {
        "folder": FOLDER,
        "container": CONTAINER,
        "component": COMPONENT,
        "templates": ["python", "-m", "tool"],
        "parameters": {"x": 1},
        "artifacts": {"in": (Artifact(name="in", uri="file:///a", sha256="h1"),)},
    } | changes
    return cache_key(**arguments)


def test_the_key_counts_inputs_by_value_and_artifacts_by_content() -> None:
    assert key() == key()
    same_content = {"in": (Artifact(name="in", uri="file:///elsewhere", sha256="h1"),)}
    assert key(artifacts=same_content) == key()
    assert key(parameters={"x": 2}) != key()
    assert key(templates=["python", "-m", "other"]) != key()
    other_version = ImageFolder(name="t_tool", path=FOLDER.path, version="0.2.0", declared_env=())
    assert key(folder=other_version) != key()


def step(tmp_path: Path, **changes: Any) -> Step:
    data = tmp_path / "data"
    data.write_text("x")
    values: dict[str, Any] = {
        "name": "emit",
        "state": StepState.SUCCEEDED,
        "output_parameters": {"n": 4.0},
        "output_artifacts": (Artifact(name="data", uri=data.as_uri()),),
    } | changes
    return Step(**values)


def test_a_complete_step_is_reusable_with_typed_values(tmp_path: Path) -> None:
    check = check_outputs(step(tmp_path), COMPONENT)
    assert isinstance(check, Reusable)
    assert check.parameters == {"n": 4} and isinstance(check.parameters["n"], int)
    uris = declared_artifact_uris(step(tmp_path), COMPONENT)
    assert gone_artifacts(uris) == []


def test_missing_outputs_and_gone_files_are_not_reusable(tmp_path: Path) -> None:
    no_value = check_outputs(step(tmp_path, output_parameters={}), COMPONENT)
    assert isinstance(no_value, NotReusable) and "'n'" in no_value.reason
    no_uri = check_outputs(
        step(tmp_path, output_artifacts=(Artifact(name="data", uri=""),)), COMPONENT
    )
    assert isinstance(no_uri, NotReusable) and "'data'" in no_uri.reason
    gone = (tmp_path / "gone").as_uri()
    assert gone_artifacts([gone, "s3://bucket/key"]) == [gone]


def test_restored_artifacts_name_the_step_that_reuses_them() -> None:
    artifact = Artifact(name="data", uri="file:///a", step="old", sha256="h", size_bytes=3)
    assert restored("new", [artifact]) == (
        Artifact(name="data", uri="file:///a", step="new", sha256="h", size_bytes=3),
    )
