"""A step's files: its scratch directory, its input artifacts made local, and the output
parameters and artifacts it left there (kfp.local's executor_output_utils, for this
executor's layout). Everything here blocks: call it in a thread."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

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
from skit_pipelines.python_components import LIGHTWEIGHT_MODULE_FILE

METADATA_TYPES = frozenset(
    {"system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics"}
)
"""Artifact types whose content is their metadata (kfp's Metrics.log_metric and its kin)."""


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

    @property
    def program(self) -> Path:
        """A lightweight Python component's module (kfp's bootstrap writes it likewise)."""
        return self.path / "program" / LIGHTWEIGHT_MODULE_FILE

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
            local[name].append(
                LocalArtifact(name, str(path), artifact.uri, schema, artifact.metadata)
            )
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


@dataclass(frozen=True)
class _ExecutorOutput:
    """What a step wrote to its executor output file (kfp's ExecutorOutput as JSON)."""

    parameters: Mapping[str, Any]
    artifacts: Mapping[str, Mapping[str, Any]]
    """By output name: the first RuntimeArtifact written for it ({name, uri, metadata})."""


def _read_executor_output(path: Path) -> _ExecutorOutput | AttemptFailed:
    if not path.is_file():
        return _ExecutorOutput({}, {})
    try:
        written = json.loads(path.read_text())
        parameters = written.get("parameterValues") or {}
        artifacts = {
            str(name): (listed.get("artifacts") or [{}])[0]
            for name, listed in (written.get("artifacts") or {}).items()
        }
        if not isinstance(parameters, dict) or not all(
            isinstance(a, dict) for a in artifacts.values()
        ):
            raise ValueError("unexpected structure")
    except (ValueError, AttributeError, TypeError, IndexError):
        return _failed("wrote an executor output file that is not an ExecutorOutput JSON")
    return _ExecutorOutput(parameters, artifacts)


def _collect(
    store: ArtifactStore,
    run_id: str,
    step_name: str,
    step_dir: StepDir,
    component: ComponentSpec,
    read_executor_output: bool,
) -> AttemptResult:
    written = _ExecutorOutput({}, {})
    if read_executor_output:
        read = _read_executor_output(step_dir.executor_output)
        if isinstance(read, AttemptFailed):
            return read
        written = read
    values: dict[str, object] = {}
    for name, definition in ordered(component.output_definitions.parameters):
        kind = type_name(definition.parameter_type)
        try:
            values[name] = parse_output(step_dir.output_parameter(name).read_text(), kind)
        except FileNotFoundError:
            if name not in written.parameters:
                return _failed(f"exited 0 but did not write output parameter {name!r}")
            try:
                values[name] = coerce(written.parameters[name], kind)
            except ParameterTypeError as exc:
                return _failed(f"output parameter {name!r}: {exc}")
        except ValueError as exc:
            return _failed(f"output parameter {name!r} is not a valid {kind}: {exc}")
    found: list[tuple[str, Path, str, dict[str, Any]]] = []
    missing: list[str] = []
    for name, definition in ordered(component.output_definitions.artifacts):
        entry = written.artifacts.get(name, {})
        written_metadata = entry.get("metadata")
        metadata = json_safe(written_metadata) if isinstance(written_metadata, dict) else {}
        kind = schema_title(definition)
        source = step_dir.output_artifact(name)
        uri = str(entry.get("uri") or "")
        if uri and uri != str(source):
            elsewhere = _written_elsewhere(store, uri, step_dir, name)
            if isinstance(elsewhere, AttemptFailed):
                return elsewhere
            source = elsewhere
        if not source.exists() and kind in METADATA_TYPES:
            # log_metric and its kin set metadata and write no file: the metadata is the
            # content, kept as JSON so the artifact can be stored, hashed and downloaded.
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        if not source.exists():
            missing.append(name)
        found.append((name, source, kind, metadata))
    if missing:
        return _failed(
            f"exited 0 but did not create output artifact {', '.join(map(repr, missing))}"
        )
    stored: list[Artifact] = []
    for name, source, kind, metadata in found:
        result = store.put(source, artifact_key(run_id, step_name, name))
        stored.append(
            Artifact(
                name=name,
                uri=result.uri,
                step=step_name,
                sha256=result.sha256,
                size_bytes=result.size_bytes,
                type=kind,
                metadata=metadata,
            )
        )
    return StepOutputs(values, tuple(stored))


def _written_elsewhere(
    store: ArtifactStore, uri: str, step_dir: StepDir, name: str
) -> Path | AttemptFailed:
    """Where an output artifact is whose executor output names another URI than the path
    it was given: a path in the step's directory, or an artifact already in the store (a
    copy, taken in below the step's directory)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") and not parsed.netloc:
        path = Path(unquote(parsed.path)).resolve()
        if path.is_relative_to(step_dir.path.resolve()):
            return path
    try:
        return take_in(store, uri, step_dir.path / "taken" / name)
    except (PipelinesError, OSError) as exc:
        return _failed(
            f"output artifact {name!r} names {uri}, which is neither in the step's directory"
            f" nor readable in the artifact store: {exc}"
        )


def take_in(store: ArtifactStore, uri: str, scratch: Path) -> Path:
    """A copy below `scratch` of the stored artifact at `uri`: what `put` stores next moves
    it away, and the original stays where it is. Raises InvalidArgument when the store does
    not hold `uri`, OSError when it cannot be read."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = store.open_local(uri, scratch)
    if path.resolve().is_relative_to(scratch.resolve()):
        return path  # downloaded: a copy already
    return copy_into(path, scratch)


def copy_into(path: Path, scratch: Path) -> Path:
    """Copies a file or directory into `scratch` (FileNotFoundError when it is gone)."""
    target = scratch / (path.name or "artifact")
    if path.is_dir():
        shutil.copytree(path, target)
    else:
        shutil.copy2(path, target)
    return target


def json_safe(value: Any) -> Any:
    """A JSON value the store and protobuf both take: NaN and infinities as protojson
    writes them ("NaN", "Infinity", "-Infinity"), keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _failed(reason: str) -> AttemptFailed:
    return AttemptFailed(step_error(reason))
