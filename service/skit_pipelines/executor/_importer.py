"""dsl.importer on the local executor: an existing file becomes an artifact of the run.

The URI (a constant of the IR, or the task's `uri` input: a pipeline parameter, an upstream
output) must be one the ImportPolicy allows (artifact_imports.py). The content is copied
into the run's artifacts (`runs/<run>/<step>/<output>`), as every step output is: the run
then owns what it read, reuse and caching check it by content hash, and DeleteRun never
touches the original. The artifact keeps the importer's type and metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from kfp.pipeline_spec.pipeline_spec_pb2 import (
    ComponentSpec,
    PipelineDeploymentConfig,
    PipelineTaskSpec,
)

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.artifacts import ArtifactStore
from skit_pipelines.domain import Artifact
from skit_pipelines.errors import InvalidArgument, PipelinesError
from skit_pipelines.executor._inputs import TaskInputs
from skit_pipelines.executor._ir import names, to_python
from skit_pipelines.executor._outcome import AttemptFailed, rejected_error, step_error
from skit_pipelines.executor._outputs import artifact_key, copy_into, json_safe, take_in
from skit_pipelines.executor._values import to_text

_WHOLE_PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']*)'\]\}\}$")
_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']*)'\]\}\}")
_DEFAULT_OUTPUT = "artifact"


@dataclass(frozen=True)
class ImporterTask:
    """An importer task ready to run: what the DAG walk resolved for it."""

    name: str
    task: PipelineTaskSpec
    component: ComponentSpec
    importer: PipelineDeploymentConfig.ImporterSpec
    inputs: TaskInputs
    always: bool

    @property
    def output(self) -> str:
        """The importer's output name ("artifact", as kfp compiles it)."""
        declared = names(self.component.output_definitions.artifacts)
        return declared[0] if declared else _DEFAULT_OUTPUT

    def uri(self) -> str:
        """The URI to import; "" when the task has none."""
        source = self.importer.artifact_uri
        kind = source.WhichOneof("value")
        if kind == "runtime_parameter":
            value = self.inputs.parameters.get(source.runtime_parameter)
        elif kind == "constant":
            value = to_python(source.constant)
        elif kind == "constant_value":
            value = source.constant_value.string_value
        else:
            value = None
        return "" if value is None else to_text(value)

    def metadata(self) -> dict[str, Any]:
        """The importer's metadata, its `{{$.inputs.parameters['x']}}` placeholders (which
        kfp compiles pipeline channels to) replaced by the task's input values."""
        raw = _raw_metadata(self.importer)
        return {
            _substitute(key, self.inputs.parameters): _resolve(value, self.inputs.parameters)
            for key, value in raw.items()
        }


def _raw_metadata(importer: PipelineDeploymentConfig.ImporterSpec) -> dict[str, Any]:
    return {key: to_python(value) for key, value in importer.metadata.fields.items()}


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _WHOLE_PLACEHOLDER.match(value)
        if whole is not None:
            return parameters.get(whole.group(1))
        return _substitute(value, parameters)
    if isinstance(value, dict):
        return {_substitute(k, parameters): _resolve(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, parameters) for v in value]
    return value


def _substitute(text: str, parameters: Mapping[str, Any]) -> str:
    return _PLACEHOLDER.sub(lambda m: to_text(parameters.get(m.group(1))), text)


def import_artifact(
    store: ArtifactStore,
    policy: ImportPolicy,
    *,
    run_id: str,
    step_name: str,
    item: ImporterTask,
    scratch: Path,
) -> Artifact | AttemptFailed:
    """Copies the importer's URI into the run's artifacts. Blocking."""
    uri = item.uri()
    if not uri:
        return AttemptFailed(rejected_error("the importer has no artifact URI"))
    refusal = policy.refusal(uri)
    if refusal is not None:
        return AttemptFailed(rejected_error(f"cannot import {refusal}"))
    try:
        source = _fetch(store, uri, scratch)
    except FileNotFoundError:
        return AttemptFailed(rejected_error(f"cannot import {uri}: it does not exist"))
    except (PipelinesError, OSError) as exc:
        return AttemptFailed(step_error(f"cannot import {uri}: {exc}"))
    output = item.output
    try:
        stored = store.put(source, artifact_key(run_id, step_name, output))
    except (PipelinesError, OSError) as exc:
        return AttemptFailed(step_error(f"cannot store the imported {uri}: {exc}"))
    return Artifact(
        name=output,
        uri=stored.uri,
        step=step_name,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        type=str(item.importer.type_schema.schema_title),
        metadata=json_safe(item.metadata()),
    )


def _fetch(store: ArtifactStore, uri: str, scratch: Path) -> Path:
    """A copy of what `uri` names below `scratch`: from the artifact store when it holds
    the URI, else (a file:// URI the policy allowed) straight from the file system."""
    try:
        return take_in(store, uri, scratch)
    except InvalidArgument:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise
    path = Path(unquote(parsed.path))
    if not path.exists():
        raise FileNotFoundError(path)
    scratch.mkdir(parents=True, exist_ok=True)
    return copy_into(path, scratch)
