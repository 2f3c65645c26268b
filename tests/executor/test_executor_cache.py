"""Cache keys, and whether a step completed earlier can be reused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import Artifact, Step, StepState
from skit_pipelines.executor._cache import (
    NotReusable,
    Reusable,
    cache_key,
    check_outputs,
    restore_artifacts,
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
    values: dict[str, Any] = {
        "name": "emit",
        "state": StepState.SUCCEEDED,
        "output_parameters": {"n": 4.0},
        "output_artifacts": (Artifact(name="data", uri=(tmp_path / "data").as_uri()),),
    } | changes
    return Step(**values)


def test_a_complete_step_is_reusable_with_typed_values(tmp_path: Path) -> None:
    check = check_outputs(step(tmp_path), COMPONENT)
    assert isinstance(check, Reusable)
    assert check.parameters == {"n": 4} and isinstance(check.parameters["n"], int)


def test_missing_outputs_are_not_reusable(tmp_path: Path) -> None:
    no_value = check_outputs(step(tmp_path, output_parameters={}), COMPONENT)
    assert isinstance(no_value, NotReusable) and "'n'" in no_value.reason
    no_uri = check_outputs(
        step(tmp_path, output_artifacts=(Artifact(name="data", uri=""),)), COMPONENT
    )
    assert isinstance(no_uri, NotReusable) and "'data'" in no_uri.reason


def stored_artifact(store: LocalArtifactStore, tmp_path: Path, key: str) -> Artifact:
    source = tmp_path / "source"
    source.write_text("x")
    stored = store.put(source, key)
    return Artifact(
        name="data", uri=stored.uri, step="old", sha256=stored.sha256, size_bytes=stored.size_bytes
    )


def test_restored_artifacts_are_copies_below_the_reusing_run(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    artifact = stored_artifact(store, tmp_path, "runs/old/emit/data")
    restored = restore_artifacts(store, "new", "emit", [artifact])
    assert not isinstance(restored, NotReusable)
    (copy,) = restored
    assert copy.uri == (store.root / "runs/new/emit/data").as_uri()
    assert (copy.step, copy.sha256, copy.size_bytes) == ("emit", artifact.sha256, 1)
    store.delete_prefix("runs/old")
    assert store.open_local(copy.uri, tmp_path).read_text() == "x"


def test_a_run_reusing_its_own_artifacts_copies_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    artifact = stored_artifact(store, tmp_path, "runs/same/emit/data")
    restored = restore_artifacts(store, "same", "emit", [artifact])
    assert not isinstance(restored, NotReusable)
    assert [a.uri for a in restored] == [artifact.uri]


def test_gone_or_altered_artifacts_are_not_reusable(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    artifact = stored_artifact(store, tmp_path, "runs/old/emit/data")
    (store.root / "runs/old/emit/data").write_text("y")
    altered = restore_artifacts(store, "new", "emit", [artifact])
    assert isinstance(altered, NotReusable) and "changed" in altered.reason
    store.delete_prefix("runs/old")
    gone = restore_artifacts(store, "new", "emit", [artifact])
    assert isinstance(gone, NotReusable) and "gone" in gone.reason
    assert not (store.root / "runs/new").exists()
