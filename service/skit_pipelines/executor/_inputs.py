"""A task's inputs and a DAG's outputs, resolved from the typed IR (kfp.local's
executor_input_utils and the driver's input resolution, for this executor's values)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from kfp.pipeline_spec.pipeline_spec_pb2 import (
    ComponentSpec,
    DagOutputsSpec,
    PipelineTaskSpec,
)

from skit_pipelines.domain import Artifact, ErrorInfo
from skit_pipelines.executor._cel import select
from skit_pipelines.executor._command import substitute_system
from skit_pipelines.executor._ir import names, ordered, to_python, type_name
from skit_pipelines.executor._outcome import Artifacts, Outcome, Parameters, TaskState
from skit_pipelines.executor._values import coerce, to_text

_SELF_REFERENCE = re.compile(r"\{\{\$\.inputs\.parameters\['([^']*)'\]\}\}")


class InputError(ValueError):
    """A task's inputs cannot be resolved."""


@dataclass(frozen=True)
class Scope:
    """The inputs of the DAG a task belongs to."""

    parameters: Parameters
    artifacts: Artifacts
    fresh: bool = False
    """The DAG's inputs came from something produced in this call (see Outcome.fresh)."""


@dataclass(frozen=True)
class TaskInputs:
    """A task's resolved input values."""

    parameters: Parameters
    artifacts: Artifacts


@dataclass(frozen=True)
class FinalStatusSource:
    """What a `taskFinalStatus` input reports about its producer."""

    run_id: str
    task_name: str
    outcome: Outcome
    run_failure: ErrorInfo | None


def with_defaults(
    component: ComponentSpec, parameters: Parameters, *, required: bool
) -> dict[str, Any]:
    """Fills defaults and coerces declared inputs to their types; keeps undeclared ones.

    Raises InputError for a missing required input and ParameterTypeError for a value of
    the wrong type.
    """
    resolved = dict(parameters)
    for name, definition in ordered(component.input_definitions.parameters):
        value = resolved.get(name)
        if value is None and definition.HasField("default_value"):
            value = to_python(definition.default_value)
        if value is None and required and not definition.is_optional:
            raise InputError(f"missing required input parameter {name!r}")
        resolved[name] = coerce(value, type_name(definition.parameter_type))
    return resolved


def final_status(source: FinalStatusSource) -> dict[str, Any]:
    """A PipelineTaskFinalStatus value, as kfp's executor reads it."""
    if source.outcome.ok:
        return {
            "state": "SUCCEEDED",
            "pipelineJobResourceName": source.run_id,
            "pipelineTaskName": source.task_name,
            "error": {},
        }
    error = source.outcome.error or source.run_failure
    return {
        "state": "FAILED",
        "pipelineJobResourceName": source.run_id,
        "pipelineTaskName": source.task_name,
        "error": {"code": error.code, "message": error.message} if error else {},
    }


def resolve_inputs(
    task: PipelineTaskSpec,
    scope: Scope,
    upstream: Mapping[str, Outcome],
    final_status_of: Mapping[str, FinalStatusSource],
    system: Mapping[str, str],
) -> TaskInputs:
    """The task's input values from its DAG's inputs and its upstream tasks' outputs.

    `final_status_of` holds, by producer task key, what each `taskFinalStatus` input
    reports; `system` what the task's `{{$.pipeline_job_name}}`-style placeholders stand
    for in a constant (as KFP's driver resolves them). Raises InputError, ExpressionError
    (a selector) or ParameterTypeError.
    """
    parameters: dict[str, Any] = {}
    templated: list[str] = []
    for name, source in ordered(task.inputs.parameters):
        kind = source.WhichOneof("kind")
        value: Any
        if kind == "component_input_parameter":
            value = scope.parameters.get(source.component_input_parameter)
        elif kind == "task_output_parameter":
            ref = source.task_output_parameter
            value = upstream[ref.producer_task].parameters.get(ref.output_parameter_key)
        elif kind == "runtime_value":
            value = to_python(source.runtime_value.constant)
            if isinstance(value, str) and "{{$" in value:
                templated.append(name)
        elif kind == "task_final_status":
            value = final_status(final_status_of[source.task_final_status.producer_task])
        else:
            raise InputError(f"unsupported source for input {name!r}: {kind}")
        if source.parameter_expression_selector and value is not None:
            value = select(source.parameter_expression_selector, value)
        parameters[name] = value
    # f-strings compile to constants that embed the task's other inputs.
    for name in templated:
        parameters[name] = substitute_system(
            _SELF_REFERENCE.sub(lambda m: to_text(parameters.get(m.group(1))), parameters[name]),
            system,
        )
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    for name, artifact_source in ordered(task.inputs.artifacts):
        kind = artifact_source.WhichOneof("kind")
        if kind == "task_output_artifact":
            ref = artifact_source.task_output_artifact
            found = upstream[ref.producer_task].artifacts.get(ref.output_artifact_key, ())
        elif kind == "component_input_artifact":
            found = scope.artifacts.get(artifact_source.component_input_artifact, ())
        else:
            raise InputError(f"unsupported source for artifact {name!r}: {kind}")
        if found:
            artifacts[name] = tuple(found)
    return TaskInputs(parameters, artifacts)


def loop_iterations(task: PipelineTaskSpec, inputs: TaskInputs) -> list[TaskInputs]:
    """The inputs of each iteration of a ParallelFor task.

    Raises InputError, ParameterTypeError or ValueError for items that are not a list.
    """
    if task.WhichOneof("iterator") == "parameter_iterator":
        iterator = task.parameter_iterator
        if iterator.items.WhichOneof("kind") == "raw":
            items = coerce(iterator.items.raw, "LIST")
        else:
            items = coerce(inputs.parameters.get(iterator.items.input_parameter), "LIST")
        if items is None:
            raise InputError("it has no items")
        return [
            TaskInputs({**inputs.parameters, iterator.item_input: item}, inputs.artifacts)
            for item in items
        ]
    artifact_iterator = task.artifact_iterator
    return [
        TaskInputs(inputs.parameters, {**inputs.artifacts, artifact_iterator.item_input: (item,)})
        for item in inputs.artifacts.get(artifact_iterator.items.input_artifact, ())
    ]


def is_loop(task: PipelineTaskSpec) -> bool:
    return task.WhichOneof("iterator") is not None


def dag_outputs(outputs: DagOutputsSpec, outcomes: Mapping[str, Outcome]) -> TaskInputs:
    """A DAG's outputs; with several selectors (dsl.OneOf) the first branch that ran wins."""
    parameters: dict[str, Any] = {}
    for name, source in ordered(outputs.parameters):
        if source.WhichOneof("kind") == "value_from_parameter":
            selectors = [source.value_from_parameter]
        else:
            selectors = list(source.value_from_oneof.parameter_selectors)
        for selector in selectors:
            outcome = outcomes.get(selector.producer_subtask)
            if _ran(outcome) and selector.output_parameter_key in outcome.parameters:
                parameters[name] = outcome.parameters[selector.output_parameter_key]
                break
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    for name, artifact_source in ordered(outputs.artifacts):
        for artifact_selector in artifact_source.artifact_selectors:
            outcome = outcomes.get(artifact_selector.producer_subtask)
            if _ran(outcome) and artifact_selector.output_artifact_key in outcome.artifacts:
                artifacts[name] = outcome.artifacts[artifact_selector.output_artifact_key]
                break
    return TaskInputs(parameters, artifacts)


def collect_iterations(outputs: DagOutputsSpec, outcomes: list[Outcome]) -> TaskInputs:
    """A loop's outputs: each declared output gathered over the iterations."""
    return TaskInputs(
        {
            key: [o.parameters[key] for o in outcomes if key in o.parameters]
            for key in names(outputs.parameters)
        },
        {
            key: tuple(a for o in outcomes for a in o.artifacts.get(key, ()))
            for key in names(outputs.artifacts)
        },
    )


def _ran(outcome: Outcome | None) -> TypeGuard[Outcome]:
    return outcome is not None and outcome.state is TaskState.SUCCEEDED
