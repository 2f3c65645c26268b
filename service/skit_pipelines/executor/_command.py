"""Substitutes KFP container placeholders in a step's command and args.

Handles the string placeholders kfp 2 emits (`{{$.inputs.parameters['x']}}`, artifact
`.path`/`.uri`/`.metadata`/`.metadata['key']`, `{{$.outputs.parameters['x'].output_file}}`,
`{{$}}`, the pipeline/task name placeholders), embedded anywhere in an argument, and the
JSON-encoded `{"IfPresent": ...}` and `{"Concat": [...]}` structures compiled from classic
component.yaml `if`/`concat`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from kfp.pipeline_spec.pipeline_spec_pb2 import ExecutorInput, RuntimeArtifact

from skit_pipelines.executor._ir import to_value
from skit_pipelines.executor._values import to_text

_PLACEHOLDER = re.compile(
    r"\{\{\$(?:\.(?P<io>inputs|outputs)\.(?P<kind>parameters|artifacts)\['(?P<name>[^']*)'\]"
    r"(?:\.(?P<attr>\w+)(?:\['(?P<key>[^']*)'\])?)?|\.(?P<system>[\w.]+))?\}\}"
)
_STRUCT_PREFIXES = ('{"IfPresent"', '{"Concat"')


_SYSTEM = re.compile(r"\{\{\$\.(pipeline_[a-z_]+)\}\}")


def system_values(run_id: str, task_name: str) -> dict[str, str]:
    """What the `{{$.pipeline_job_name}}`-style placeholders (dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    and its kin) stand for in one task of one run."""
    return {
        "pipeline_job_name": run_id,
        "pipeline_job_resource_name": run_id,
        "pipeline_job_uuid": run_id,
        "pipeline_task_name": task_name,
        "pipeline_task_uuid": f"{run_id}/{task_name}",
    }


def substitute_system(text: str, system: Mapping[str, str]) -> str:
    """The text with the system placeholders it has replaced (unknown ones kept)."""
    return _SYSTEM.sub(lambda m: system.get(m.group(1), m.group(0)), text)


class PlaceholderError(ValueError):
    """A placeholder refers to something the step does not have, or is unsupported."""


@dataclass(frozen=True)
class LocalArtifact:
    """An artifact as a step sees it: where its content is, and its stored URI."""

    name: str
    path: str
    uri: str
    schema_title: str = "system.Artifact"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """What the artifact carries (an input's, as its producer or importer set it); what
    `.metadata` placeholders and kfp's `Artifact.metadata` read."""


@dataclass(frozen=True)
class CommandContext:
    """Everything a step's placeholders can refer to."""

    parameters: Mapping[str, Any]
    input_artifacts: Mapping[str, Sequence[LocalArtifact]]
    output_artifacts: Mapping[str, LocalArtifact]
    output_parameter_files: Mapping[str, str]
    executor_output_file: str
    system: Mapping[str, str]
    """Values of `{{$.pipeline_job_name}}`-style placeholders, keyed by the name after `$.`."""

    def is_present(self, name: str) -> bool:
        return self.parameters.get(name) is not None or bool(self.input_artifacts.get(name))

    def executor_input(self) -> ExecutorInput:
        """The step's ExecutorInput, with local paths as URIs (as `kfp.local` does)."""
        message = ExecutorInput()
        for name, value in self.parameters.items():
            if value is not None:
                message.inputs.parameter_values[name].CopyFrom(to_value(value))
        for name, artifacts in self.input_artifacts.items():
            listed = message.inputs.artifacts[name].artifacts
            for artifact in artifacts:
                _runtime_artifact(listed.add(), artifact)
        for name, path in self.output_parameter_files.items():
            message.outputs.parameters[name].output_file = path
        for name, artifact in self.output_artifacts.items():
            _runtime_artifact(message.outputs.artifacts[name].artifacts.add(), artifact)
        message.outputs.output_file = self.executor_output_file
        return message


def _as_launcher_json(message: ExecutorInput) -> Any:
    """The message as JSON, integral numbers without ".0", as KFP's launcher (Go's
    protojson) writes them: a component's `int` input must not read 3.0."""
    return _integral(json_format.MessageToDict(message))


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _runtime_artifact(message: RuntimeArtifact, artifact: LocalArtifact) -> None:
    message.name = artifact.name
    message.type.schema_title = artifact.schema_title
    message.uri = artifact.path
    if artifact.metadata:
        message.metadata.update(dict(artifact.metadata))


def uses_executor_output(templates: Sequence[str]) -> bool:
    """Whether the component may write an executor output file (kfp's Python executor does)."""
    return any("{{$}}" in t or "{{$.outputs.output_file}}" in t for t in templates)


def resolve(templates: Sequence[str], context: CommandContext) -> list[str]:
    """Returns the argv for a container's command + args templates."""
    resolved: list[str] = []
    executor_input: list[str] = []

    def substitute(text: str) -> str:
        if "{{$" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: _replace(m, context, executor_input), text)

    for template in templates:
        if template.startswith(_STRUCT_PREFIXES):
            try:
                struct = json.loads(template)
            except json.JSONDecodeError:
                resolved.append(substitute(template))
                continue
            resolved.extend(_resolve_struct(struct, context, substitute))
        else:
            resolved.append(substitute(template))
    return resolved


def _resolve_struct(
    node: Any, context: CommandContext, substitute: Callable[[str], str]
) -> list[str]:
    """Expands IfPresent/Concat into zero or more arguments."""
    if isinstance(node, str):
        return [substitute(node)]
    if isinstance(node, list):
        return [arg for item in node for arg in _resolve_struct(item, context, substitute)]
    if isinstance(node, dict) and len(node) == 1:
        ((kind, body),) = node.items()
        if kind == "Concat" and isinstance(body, list):
            return [
                "".join(arg for part in body for arg in _resolve_struct(part, context, substitute))
            ]
        if kind == "IfPresent" and isinstance(body, dict) and "InputName" in body:
            branch = body.get("Then") if context.is_present(body["InputName"]) else body.get("Else")
            return [] if branch is None else _resolve_struct(branch, context, substitute)
    raise PlaceholderError(f"unsupported placeholder structure {json.dumps(node)}")


def _metadata(artifact: LocalArtifact, key: str | None) -> str:
    """`.metadata` as JSON, `.metadata['key']` as the value's command-line text ("" when
    the artifact has no such key, as for an output, whose metadata the step writes)."""
    if key is None:
        return json.dumps(artifact.metadata, sort_keys=True)
    return to_text(artifact.metadata.get(key))


def _replace(match: re.Match[str], context: CommandContext, cache: list[str]) -> str:
    io, kind, name, attr, key, system = match.group("io", "kind", "name", "attr", "key", "system")
    if key is not None and attr != "metadata":
        raise PlaceholderError(f"unsupported placeholder {match.group(0)}")
    if io is None and system is None:
        if not cache:
            cache.append(json.dumps(_as_launcher_json(context.executor_input()), sort_keys=True))
        return cache[0]
    if system is not None:
        if system == "outputs.output_file":
            return context.executor_output_file
        if system not in context.system:
            raise PlaceholderError(f"unsupported placeholder {match.group(0)}")
        return context.system[system]
    if io == "inputs" and kind == "parameters" and attr is None:
        if name not in context.parameters:
            raise PlaceholderError(f"the component has no input parameter {name!r}")
        return to_text(context.parameters[name])
    if io == "inputs" and kind == "artifacts":
        artifacts = context.input_artifacts.get(name)
        if not artifacts:
            return ""
        if attr is None:
            return json.dumps([a.path for a in artifacts])
        if attr == "path":
            return artifacts[0].path
        if attr == "uri":
            return artifacts[0].uri
        if attr == "metadata":
            return _metadata(artifacts[0], key)
    if io == "outputs" and kind == "artifacts" and name in context.output_artifacts:
        artifact = context.output_artifacts[name]
        if attr in ("path", "uri"):
            return artifact.path
        if attr == "metadata":
            return _metadata(artifact, key)
    if (
        io == "outputs"
        and kind == "parameters"
        and attr == "output_file"
        and name in context.output_parameter_files
    ):
        return context.output_parameter_files[name]
    raise PlaceholderError(f"unsupported placeholder {match.group(0)}")
