"""The compiled pipeline (KFP IR), parsed once per run into kfp-pipeline-spec's protos.

Everything below the executor's entry point walks these typed messages, as kfp.local's
orchestrator and KFP's launcher do: `PipelineSpec` for the DAGs and components, and the
`PipelineDeploymentConfig` that `deploymentSpec` (a Struct in PipelineSpec) holds for the
executors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec.pipeline_spec_pb2 import (
    ComponentInputsSpec,
    ComponentSpec,
    ParameterType,
    PipelineDeploymentConfig,
    PipelineSpec,
    PipelineTaskSpec,
)

V = TypeVar("V")

_DEFAULT_SCHEMA = "system.Artifact"
_RUN_ALWAYS = PipelineTaskSpec.TriggerPolicy.TriggerStrategy.ALL_UPSTREAM_TASKS_COMPLETED


class IRError(ValueError):
    """The IR refers to something it does not define, or cannot be parsed."""


@dataclass(frozen=True)
class PipelineIR:
    """One compiled pipeline: the PipelineSpec and its executors by label."""

    spec: PipelineSpec
    executors: Mapping[str, PipelineDeploymentConfig.ExecutorSpec]
    """The deployment config's executors by label."""

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> PipelineIR:
        """Parses the IR as compiled to YAML/JSON; raises IRError when it does not fit.

        Unknown fields are ignored, as the dict walk before it did: IR from a newer
        compiler still runs as far as this executor understands it.
        """
        try:
            parsed = json_format.ParseDict(dict(spec), PipelineSpec(), ignore_unknown_fields=True)
            deployment = json_format.ParseDict(
                spec.get("deploymentSpec") or {},
                PipelineDeploymentConfig(),
                ignore_unknown_fields=True,
            )
        except json_format.ParseError as exc:
            raise IRError(f"the pipeline spec is not valid KFP IR: {exc}") from None
        return cls(spec=parsed, executors=dict(deployment.executors))

    @property
    def root(self) -> ComponentSpec:
        """The root ComponentSpec (its `dag` is the pipeline)."""
        return self.spec.root

    def component(self, task: PipelineTaskSpec) -> ComponentSpec:
        """The ComponentSpec a PipelineTaskSpec runs."""
        ref = str(task.component_ref.name)
        if ref not in self.spec.components:
            raise IRError(f"the pipeline has no component {ref!r}")
        return self.spec.components[ref]

    def find_component(self, task: PipelineTaskSpec) -> ComponentSpec | None:
        ref = str(task.component_ref.name)
        return self.spec.components.get(ref)

    def container(
        self, component: ComponentSpec
    ) -> PipelineDeploymentConfig.PipelineContainerSpec | None:
        """The component's PipelineContainerSpec, or None for a DAG or another executor."""
        if is_dag(component):
            return None
        executor = self.executors.get(str(component.executor_label))
        if executor is None or executor.WhichOneof("spec") != "container":
            return None
        return executor.container

    def importer(self, component: ComponentSpec) -> PipelineDeploymentConfig.ImporterSpec | None:
        """The component's ImporterSpec (dsl.importer), or None for anything else."""
        if is_dag(component):
            return None
        executor = self.executors.get(str(component.executor_label))
        if executor is None or executor.WhichOneof("spec") != "importer":
            return None
        return executor.importer

    def is_step(self, component: ComponentSpec) -> bool:
        """Whether the component runs as a step: a container or an importer."""
        return self.container(component) is not None or self.importer(component) is not None

    def reports_step(self, task: PipelineTaskSpec) -> bool:
        """Whether the task is a step (a container or an importer: what the observer hears
        about)."""
        component = self.find_component(task)
        return component is not None and self.is_step(component)


def ordered(proto_map: Mapping[str, V]) -> list[tuple[str, V]]:
    """A proto map's entries by key.

    Proto maps iterate in no fixed order (upb's differs per process), while kfp writes
    the IR with sorted keys: by key is the compiled order, so steps, outputs and messages
    come out as they did when the IR was walked as YAML.
    """
    return sorted(proto_map.items(), key=lambda entry: entry[0])


def names(proto_map: Mapping[str, Any]) -> list[str]:
    """A proto map's keys, sorted (see `ordered`)."""
    return sorted(proto_map)


def is_dag(component: ComponentSpec) -> bool:
    return bool(component.WhichOneof("implementation") == "dag")


def task_name(key: str, task: PipelineTaskSpec) -> str:
    """The task's display name: `taskInfo.name`, else its key in the DAG."""
    return str(task.task_info.name) or key


def component_name(task: PipelineTaskSpec) -> str:
    """The component's name as steps report it (`comp-` removed)."""
    return str(task.component_ref.name).removeprefix("comp-")


def runs_always(task: PipelineTaskSpec) -> bool:
    """An exit handler's task: it runs whatever happened upstream."""
    return bool(task.trigger_policy.strategy == _RUN_ALWAYS)


def upstream(task: PipelineTaskSpec) -> set[str]:
    """Tasks that must finish first: explicit dependencies plus producers of inputs."""
    deps = {str(d) for d in task.dependent_tasks}
    for source in task.inputs.parameters.values():
        kind = source.WhichOneof("kind")
        if kind == "task_output_parameter":
            deps.add(str(source.task_output_parameter.producer_task))
        elif kind == "task_final_status":
            deps.add(str(source.task_final_status.producer_task))
    for source in task.inputs.artifacts.values():
        if source.WhichOneof("kind") == "task_output_artifact":
            deps.add(str(source.task_output_artifact.producer_task))
    return deps


def type_name(parameter_type: int) -> str | None:
    """The ParameterTypeEnum's name ("NUMBER_INTEGER"), None when unspecified."""
    if parameter_type == ParameterType.PARAMETER_TYPE_ENUM_UNSPECIFIED:
        return None
    return str(ParameterType.ParameterTypeEnum.Name(parameter_type))


def schema_title(artifact_spec: ComponentInputsSpec.ArtifactSpec | None) -> str:
    """An artifact definition's `artifactType.schemaTitle`, system.Artifact by default."""
    if artifact_spec is None:
        return _DEFAULT_SCHEMA
    return str(artifact_spec.artifact_type.schema_title) or _DEFAULT_SCHEMA


def to_python(value: struct_pb2.Value) -> Any:
    """A google.protobuf.Value as its JSON value (numbers are floats, as in the IR)."""
    return json_format.MessageToDict(value)


def to_value(value: Any) -> struct_pb2.Value:
    """A JSON value as a google.protobuf.Value."""
    message = struct_pb2.Value()
    json_format.ParseDict(value, message)
    return message
