"""Reusing step results: the cache key of a step, and the check that a step completed
earlier (resume, RetryRun) or found in the step cache still has everything its dependents
need.

Reuse never trusts a record alone: every artifact must still be in the artifact store as
it was stored (`ArtifactStore.check`: the local file's content hash; S3's size and SHA-256
metadata), or the step runs again. What is reused is copied below the reusing run's own
prefix (`runs/<run>/<step>/<output>`, a server-side copy on S3), so a run never points
into another run's folder and deleting one run (DeleteRun, retention) breaks no other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kfp.pipeline_spec.pipeline_spec_pb2 import ComponentSpec, PipelineDeploymentConfig

from skit_pipelines.artifacts import ArtifactStore, Unusable
from skit_pipelines.domain import Artifact, Step
from skit_pipelines.errors import PipelinesError
from skit_pipelines.executor._ir import names, ordered, type_name
from skit_pipelines.executor._outcome import Artifacts, Parameters
from skit_pipelines.executor._outputs import artifact_key
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


def restore_artifacts(
    store: ArtifactStore, run_id: str, step_name: str, artifacts: Sequence[Artifact]
) -> tuple[Artifact, ...] | NotReusable:
    """The artifacts of a reused step as this run's step `step_name` has them: checked
    intact, then copied below the run's own prefix (nothing is copied when they are
    there already, as after a resume). NotReusable when one is gone, altered or cannot be
    copied. Blocking."""
    for artifact in artifacts:
        check = store.check(artifact.uri, artifact.sha256, artifact.size_bytes)
        if isinstance(check, Unusable):
            return NotReusable(check.reason)
    restored = []
    for artifact in artifacts:
        try:
            uri = store.copy(artifact.uri, artifact_key(run_id, step_name, artifact.name))
        except (PipelinesError, OSError) as exc:
            return NotReusable(f"its artifact {artifact.uri} cannot be copied: {exc}")
        restored.append(replace(artifact, uri=uri, step=step_name))
    return tuple(restored)
