"""Reusing step results: the cache key of a step, and the check that a step completed
earlier (resume, RetryRun) still has everything its dependents need."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from kfp.pipeline_spec.pipeline_spec_pb2 import ComponentSpec, PipelineDeploymentConfig

from skit_pipelines.domain import Artifact, Step
from skit_pipelines.executor._ir import names, ordered, type_name
from skit_pipelines.executor._outcome import Artifacts, Parameters
from skit_pipelines.executor._values import ParameterTypeError, coerce
from skit_pipelines.images import ImageFolder


def cache_key(
    folder: ImageFolder,
    container: PipelineDeploymentConfig.PipelineContainerSpec,
    component: ComponentSpec,
    templates: Sequence[str],
    parameters: Parameters,
    artifacts: Artifacts,
) -> str:
    """A step's identity: the image, the command templates, and the inputs by value.

    The templates plus the inputs determine the resolved command except for paths, which
    differ per run and are deliberately left out; artifacts count by content hash. The
    payload is the one the dict-walking executor hashed, so earlier cache entries hit.
    """
    outputs = component.output_definitions
    payload = {
        "image_version": folder.version,
        "image": container.image,
        "env": [{"name": e.name, "value": e.value} for e in container.env],
        "command": list(templates),
        "outputs": [sorted(outputs.parameters), sorted(outputs.artifacts)],
        "parameters": parameters,
        "artifacts": {
            name: [a.sha256 or a.uri for a in found] for name, found in artifacts.items()
        },
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class Reusable:
    """A completed step whose outputs are all there, as its dependents will see them."""

    step: Step
    parameters: Parameters


@dataclass(frozen=True)
class NotReusable:
    """Why a completed step runs again."""

    reason: str


def check_outputs(step: Step, component: ComponentSpec) -> Reusable | NotReusable:
    """Whether the step has every declared output (not yet whether its files exist).

    Parameter values are coerced to their declared types: the store may hand back 4.0
    for 4, and downstream should see what a run would pass.
    """
    values = dict(step.output_parameters)
    outputs = component.output_definitions
    for key, definition in ordered(outputs.parameters):
        if key not in values:
            return NotReusable(f"it has no output parameter {key!r}")
        try:
            values[key] = coerce(values[key], type_name(definition.parameter_type))
        except ParameterTypeError as exc:
            return NotReusable(f"output parameter {key!r}: {exc}")
    by_name = {a.name: a for a in step.output_artifacts}
    missing = [n for n in names(outputs.artifacts) if n not in by_name or not by_name[n].uri]
    if missing:
        return NotReusable(f"it has no output artifact {', '.join(map(repr, missing))}")
    return Reusable(step, values)


def declared_artifact_uris(step: Step, component: ComponentSpec) -> list[str]:
    """The URIs of the step's declared output artifacts (after check_outputs passed)."""
    by_name = {a.name: a for a in step.output_artifacts}
    return [by_name[n].uri for n in names(component.output_definitions.artifacts)]


def gone_artifacts(uris: Sequence[str]) -> list[str]:
    """The file:// URIs whose file is missing. Blocking.

    Other schemes count as present: checking them would mean a request per artifact,
    and a gone one fails the step that reads it, which the retry policy can rerun.
    """
    gone = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme == "file" and not Path(unquote(parsed.path)).exists():
            gone.append(uri)
    return gone


def restored(step_name: str, artifacts: Sequence[Artifact]) -> tuple[Artifact, ...]:
    """A cache hit's artifacts, as the step that reuses them produced them."""
    return tuple(replace(a, step=step_name) for a in artifacts)
