"""A step's files: its scratch directory, its input artifacts made local, and the output
parameters and artifacts it left there (kfp.local's executor_output_utils, for this
executor's layout). Everything here blocks: call it in a thread."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from kfp.pipeline_spec.pipeline_spec_pb2 import ComponentSpec

from skit_pipelines.artifacts import ArtifactStore
from skit_pipelines.domain import Artifact
from skit_pipelines.errors import PipelinesError
from skit_pipelines.executor._command import LocalArtifact
from skit_pipelines.executor._ir import names, ordered, schema_title, type_name
from skit_pipelines.executor._outcome import (
    Artifacts,
    AttemptFailed,
    AttemptResult,
    StepOutputs,
    step_error,
)
from skit_pipelines.executor._values import ParameterTypeError, coerce, parse_output


def run_artifacts_prefix(run_id: str) -> str:
    """The artifact store prefix holding everything of one run (DeleteRun removes it)."""
    return f"runs/{run_id}"


def artifact_key(run_id: str, step_name: str, output: str) -> str:
    """Where a run's step output lives in the artifact store: below the run's own prefix,
    also when it was reused from another run."""
    return f"{run_artifacts_prefix(run_id)}/{step_name}/{output}"


@dataclass(frozen=True)
class StepDir:
    """The scratch directory of one step: `<work>/runs/<run>/<step>`."""

    path: Path

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def executor_output(self) -> Path:
        return self.path / "executor_output.json"

    def output_artifact(self, name: str) -> Path:
        return self.path / "artifacts" / name

    def output_parameter(self, name: str) -> Path:
        return self.path / "parameters" / name

    def prepare(self, component: ComponentSpec, *, fresh: bool) -> None:
        """Creates the directories the step writes into; `fresh` removes a failed
        attempt's leftovers first."""
        if fresh:
            shutil.rmtree(self.path, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        if component.output_definitions.artifacts:
            (self.path / "artifacts").mkdir(exist_ok=True)
        if component.output_definitions.parameters:
            (self.path / "parameters").mkdir(exist_ok=True)

    def output_artifacts(self, component: ComponentSpec) -> dict[str, LocalArtifact]:
        return {
            name: LocalArtifact(name, str(self.output_artifact(name)), "", schema_title(spec))
            for name, spec in ordered(component.output_definitions.artifacts)
        }

    def output_parameter_files(self, component: ComponentSpec) -> dict[str, str]:
        return {
            name: str(self.output_parameter(name))
            for name in names(component.output_definitions.parameters)
        }


def localize(
    store: ArtifactStore, artifacts: Artifacts, component: ComponentSpec, step_dir: StepDir
) -> dict[str, list[LocalArtifact]]:
    """Makes input artifacts readable locally (a no-op for the local store)."""
    definitions = component.input_definitions.artifacts
    local: dict[str, list[LocalArtifact]] = {}
    for name, found in artifacts.items():
        schema = schema_title(definitions.get(name))
        local[name] = []
        for index, artifact in enumerate(found):
            scratch = step_dir.path / "inputs" / name / str(index)
            scratch.mkdir(parents=True, exist_ok=True)
            path = store.open_local(artifact.uri, scratch)
            local[name].append(LocalArtifact(name, str(path), artifact.uri, schema))
    return local


def collect(
    store: ArtifactStore,
    run_id: str,
    step_name: str,
    step_dir: StepDir,
    component: ComponentSpec,
    read_executor_output: bool,
) -> AttemptResult:
    """Reads output parameters and stores output artifacts; removes the step's directory."""
    try:
        return _collect(store, run_id, step_name, step_dir, component, read_executor_output)
    except (PipelinesError, OSError) as exc:
        return AttemptFailed(step_error(f"cannot store its outputs: {exc}"))
    finally:
        shutil.rmtree(step_dir.path, ignore_errors=True)


def _collect(
    store: ArtifactStore,
    run_id: str,
    step_name: str,
    step_dir: StepDir,
    component: ComponentSpec,
    read_executor_output: bool,
) -> AttemptResult:
    written: dict[str, object] = {}
    if read_executor_output and step_dir.executor_output.is_file():
        try:
            written = json.loads(step_dir.executor_output.read_text()).get("parameterValues") or {}
        except (ValueError, AttributeError):
            return _failed("wrote an executor output file that is not an ExecutorOutput JSON")
    values: dict[str, object] = {}
    for name, definition in ordered(component.output_definitions.parameters):
        kind = type_name(definition.parameter_type)
        try:
            values[name] = parse_output(step_dir.output_parameter(name).read_text(), kind)
        except FileNotFoundError:
            if name not in written:
                return _failed(f"exited 0 but did not write output parameter {name!r}")
            try:
                values[name] = coerce(written[name], kind)
            except ParameterTypeError as exc:
                return _failed(f"output parameter {name!r}: {exc}")
        except ValueError as exc:
            return _failed(f"output parameter {name!r} is not a valid {kind}: {exc}")
    declared = names(component.output_definitions.artifacts)
    missing = [n for n in declared if not step_dir.output_artifact(n).exists()]
    if missing:
        return _failed(
            f"exited 0 but did not create output artifact {', '.join(map(repr, missing))}"
        )
    stored: list[Artifact] = []
    for name in declared:
        result = store.put(step_dir.output_artifact(name), artifact_key(run_id, step_name, name))
        stored.append(
            Artifact(
                name=name,
                uri=result.uri,
                step=step_name,
                sha256=result.sha256,
                size_bytes=result.size_bytes,
            )
        )
    return StepOutputs(values, tuple(stored))


def _failed(reason: str) -> AttemptFailed:
    return AttemptFailed(step_error(reason))
