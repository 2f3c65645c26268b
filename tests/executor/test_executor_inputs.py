"""Resolving a task's inputs and a DAG's outputs from the typed IR."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.domain import Artifact, ErrorInfo
from skit_pipelines.executor._command import system_values
from skit_pipelines.executor._inputs import (
    FinalStatusSource,
    InputError,
    Scope,
    TaskInputs,
    collect_iterations,
    dag_outputs,
    loop_iterations,
    resolve_inputs,
    with_defaults,
)
from skit_pipelines.executor._outcome import Outcome, TaskState
from skit_pipelines.executor._values import ParameterTypeError

DATA = Artifact(name="data", uri="file:///store/data", sha256="abc")

WHERE = "{{$.pipeline_job_name}}/{{$.pipeline_task_name}}"


def task(spec: dict[str, Any]) -> Any:
    return json_format.ParseDict(spec, pipeline_spec_pb2.PipelineTaskSpec())


def component(spec: dict[str, Any]) -> Any:
    return json_format.ParseDict(spec, pipeline_spec_pb2.ComponentSpec())


def test_inputs_from_the_dag_upstream_constants_and_selectors() -> None:
    consumer = task(
        {
            "inputs": {
                "parameters": {
                    "a": {"componentInputParameter": "pipelinechannel--a"},
                    "b": {
                        "taskOutputParameter": {"producerTask": "up", "outputParameterKey": "out"},
                        "parameterExpressionSelector": 'parseJson(string_value)["k"]',
                    },
                    "greeting": {"runtimeValue": {"constant": "hi {{$.inputs.parameters['a']}}"}},
                    "where": {"runtimeValue": {"constant": WHERE}},
                },
                "artifacts": {
                    "d": {"taskOutputArtifact": {"producerTask": "up", "outputArtifactKey": "x"}},
                    "e": {"componentInputArtifact": "missing"},
                },
            }
        }
    )
    upstream = {"up": Outcome(TaskState.SUCCEEDED, {"out": '{"k": 5}'}, {"x": (DATA,)})}
    inputs = resolve_inputs(
        consumer,
        Scope({"pipelinechannel--a": "x"}, {}),
        upstream,
        final_status_of={},
        system=system_values("run-1", "consumer"),
    )
    # Constants' placeholders resolve as KFP's driver resolves them: inputs and system ones.
    assert inputs.parameters == {"a": "x", "b": 5, "greeting": "hi x", "where": "run-1/consumer"}
    assert inputs.artifacts == {"d": (DATA,)}, "an absent artifact is left out"


def test_a_final_status_input_reports_the_producer() -> None:
    handler = task({"inputs": {"parameters": {"s": {"taskFinalStatus": {"producerTask": "t"}}}}})
    error = ErrorInfo(code=2, message="step t failed: boom", reason="STEP_FAILED")
    source = FinalStatusSource("run-1", "t", Outcome.failed(error), None)
    inputs = resolve_inputs(handler, Scope({}, {}), {"t": source.outcome}, {"t": source}, {})
    assert inputs.parameters["s"] == {
        "state": "FAILED",
        "pipelineJobResourceName": "run-1",
        "pipelineTaskName": "t",
        "error": {"code": 2, "message": "step t failed: boom"},
    }


def test_defaults_fill_in_and_values_take_their_declared_types() -> None:
    spec = component(
        {
            "inputDefinitions": {
                "parameters": {
                    "n": {"parameterType": "NUMBER_INTEGER", "defaultValue": 200.0},
                    "flag": {"parameterType": "BOOLEAN"},
                    "maybe": {"parameterType": "STRING", "isOptional": True},
                }
            }
        }
    )
    assert with_defaults(spec, {"flag": "true", "extra": 1}, required=True) == {
        "n": 200,
        "flag": True,
        "maybe": None,
        "extra": 1,
    }
    with pytest.raises(InputError, match="flag"):
        with_defaults(spec, {}, required=True)
    assert with_defaults(spec, {}, required=False)["flag"] is None
    with pytest.raises(ParameterTypeError):
        with_defaults(spec, {"flag": "maybe"}, required=False)


def test_loop_iterations_over_raw_items_parameters_and_artifacts() -> None:
    raw = task({"parameterIterator": {"items": {"raw": "[1, 2]"}, "itemInput": "i"}})
    assert [it.parameters for it in loop_iterations(raw, TaskInputs({"z": 0}, {}))] == [
        {"z": 0, "i": 1},
        {"z": 0, "i": 2},
    ]
    from_input = task({"parameterIterator": {"items": {"inputParameter": "xs"}, "itemInput": "i"}})
    assert len(loop_iterations(from_input, TaskInputs({"xs": '["a", "b", "c"]'}, {}))) == 3
    with pytest.raises(InputError):
        loop_iterations(from_input, TaskInputs({}, {}))
    over_artifacts = task(
        {"artifactIterator": {"items": {"inputArtifact": "all"}, "itemInput": "one"}}
    )
    other = Artifact(name="data", uri="file:///store/other")
    iterations = loop_iterations(over_artifacts, TaskInputs({}, {"all": (DATA, other)}))
    assert [it.artifacts["one"] for it in iterations] == [(DATA,), (other,)]


def test_dag_outputs_take_the_first_branch_that_ran() -> None:
    outputs = json_format.ParseDict(
        {
            "parameters": {
                "p": {
                    "valueFromOneof": {
                        "parameterSelectors": [
                            {"producerSubtask": "skipped", "outputParameterKey": "out"},
                            {"producerSubtask": "ran", "outputParameterKey": "out"},
                        ]
                    }
                }
            },
            "artifacts": {
                "a": {"artifactSelectors": [{"producerSubtask": "ran", "outputArtifactKey": "x"}]}
            },
        },
        pipeline_spec_pb2.DagOutputsSpec(),
    )
    outcomes = {
        "skipped": Outcome(TaskState.NOT_TRIGGERED),
        "ran": Outcome(TaskState.SUCCEEDED, {"out": 7}, {"x": (DATA,)}),
    }
    assert dag_outputs(outputs, outcomes) == TaskInputs({"p": 7}, {"a": (DATA,)})
    gathered = collect_iterations(
        outputs,
        [
            Outcome(TaskState.SUCCEEDED, {"p": 1}, {"a": (DATA,)}),
            Outcome(TaskState.SUCCEEDED, {"p": 2}, {}),
        ],
    )
    assert gathered == TaskInputs({"p": [1, 2]}, {"a": (DATA,)})
