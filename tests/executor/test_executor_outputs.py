"""A step's scratch directory and collecting what it wrote there."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.executor._outcome import AttemptFailed, StepOutputs
from skit_pipelines.executor._outputs import StepDir, collect

COMPONENT = json_format.ParseDict(
    {
        "outputDefinitions": {
            "parameters": {
                "count": {"parameterType": "NUMBER_INTEGER"},
                "names": {"parameterType": "LIST"},
            },
            "artifacts": {"data": {"artifactType": {"schemaTitle": "system.Dataset"}}},
        }
    },
    pipeline_spec_pb2.ComponentSpec(),
)


def prepared(tmp_path: Path) -> StepDir:
    step_dir = StepDir(tmp_path / "work" / "emit")
    step_dir.prepare(COMPONENT, fresh=False)
    return step_dir


def test_outputs_are_read_typed_and_artifacts_stored(tmp_path: Path) -> None:
    step_dir = prepared(tmp_path)
    assert step_dir.output_artifacts(COMPONENT)["data"].schema_title == "system.Dataset"
    step_dir.output_parameter("count").write_text("3\n")
    step_dir.output_artifact("data").write_text("rows")
    step_dir.executor_output.write_text(json.dumps({"parameterValues": {"names": ["a"]}}))
    store = LocalArtifactStore(tmp_path / "artifacts")

    result = collect(store, "run-1", "emit", step_dir, COMPONENT, read_executor_output=True)

    assert isinstance(result, StepOutputs)
    assert result.parameters == {"count": 3, "names": ["a"]}
    [artifact] = result.artifacts
    assert (artifact.name, artifact.step, artifact.size_bytes) == ("data", "emit", 4)
    assert not step_dir.path.exists(), "the scratch directory goes"


def test_a_missing_output_fails_the_attempt(tmp_path: Path) -> None:
    step_dir = prepared(tmp_path)
    step_dir.output_parameter("count").write_text("3")
    store = LocalArtifactStore(tmp_path / "artifacts")

    result = collect(store, "run-1", "emit", step_dir, COMPONENT, read_executor_output=False)

    assert isinstance(result, AttemptFailed)
    assert result.error.message == "exited 0 but did not write output parameter 'names'"
    assert result.error.reason == "STEP_FAILED"


def test_a_retry_starts_from_an_empty_directory(tmp_path: Path) -> None:
    step_dir = prepared(tmp_path)
    step_dir.output_parameter("count").write_text("left by attempt 1")
    step_dir.prepare(COMPONENT, fresh=True)
    assert not step_dir.output_parameter("count").exists()
    assert step_dir.tmp.is_dir()
