"""Parsing the compiled IR once into kfp-pipeline-spec's protos, and walking it in order."""

from __future__ import annotations

from typing import Any

import pytest

from skit_pipelines.executor._ir import (
    IRError,
    PipelineIR,
    component_name,
    names,
    ordered,
    runs_always,
    schema_title,
    task_name,
    to_python,
    type_name,
    upstream,
)

SPEC: dict[str, Any] = {
    "pipelineInfo": {"name": "p"},
    "components": {
        "comp-emit": {
            "executorLabel": "exec-emit",
            "outputDefinitions": {
                "parameters": {"out": {"parameterType": "NUMBER_INTEGER"}},
                "artifacts": {"data": {"artifactType": {"schemaTitle": "system.Dataset"}}},
            },
        },
        "comp-inner": {"dag": {"tasks": {}}},
    },
    "deploymentSpec": {
        "executors": {
            "exec-emit": {"container": {"image": "skit-pipelines/t-tool:0.1.0", "command": ["x"]}}
        }
    },
    "root": {
        "dag": {
            "tasks": {
                key: {"taskInfo": {"name": key}, "componentRef": {"name": "comp-emit"}}
                for key in ("zeta", "alpha", "mid", "beta", "omega", "fetch-calls", "a2")
            }
            | {
                "consume": {
                    "componentRef": {"name": "comp-inner"},
                    "dependentTasks": ["alpha"],
                    "inputs": {
                        "parameters": {
                            "n": {
                                "taskOutputParameter": {
                                    "producerTask": "beta",
                                    "outputParameterKey": "out",
                                }
                            },
                            "status": {"taskFinalStatus": {"producerTask": "mid"}},
                            "k": {"runtimeValue": {"constant": 3}},
                        },
                        "artifacts": {
                            "d": {
                                "taskOutputArtifact": {
                                    "producerTask": "zeta",
                                    "outputArtifactKey": "data",
                                }
                            }
                        },
                    },
                    "triggerPolicy": {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"},
                }
            }
        }
    },
}


def test_tasks_come_in_compiled_order_whatever_the_map_order() -> None:
    ir = PipelineIR.parse(SPEC)
    keys = [key for key, _ in ordered(ir.root.dag.tasks)]
    assert keys == sorted(SPEC["root"]["dag"]["tasks"])
    assert names(ir.root.dag.tasks) == keys


def test_components_executors_and_containers() -> None:
    ir = PipelineIR.parse(SPEC)
    emit = ir.root.dag.tasks["alpha"]
    component = ir.component(emit)
    container = ir.container(component)
    assert container is not None and container.image == "skit-pipelines/t-tool:0.1.0"
    assert ir.reports_step(emit)
    consume = ir.root.dag.tasks["consume"]
    assert ir.container(ir.component(consume)) is None, "a DAG is not a container"
    assert not ir.reports_step(consume)
    assert component_name(emit) == "emit"
    assert task_name("key", emit) == "alpha"
    assert type_name(component.output_definitions.parameters["out"].parameter_type) == (
        "NUMBER_INTEGER"
    )
    assert schema_title(component.output_definitions.artifacts["data"]) == "system.Dataset"
    assert schema_title(None) == "system.Artifact"


def test_upstream_counts_dependencies_and_producers_of_inputs() -> None:
    consume = PipelineIR.parse(SPEC).root.dag.tasks["consume"]
    assert upstream(consume) == {"alpha", "beta", "mid", "zeta"}
    assert runs_always(consume)
    assert to_python(consume.inputs.parameters["k"].runtime_value.constant) == 3.0


def test_a_missing_component_or_malformed_ir_is_an_ir_error() -> None:
    ir = PipelineIR.parse(
        {"root": {"dag": {"tasks": {"t": {"componentRef": {"name": "comp-nope"}}}}}}
    )
    with pytest.raises(IRError, match="comp-nope"):
        ir.component(ir.root.dag.tasks["t"])
    assert ir.find_component(ir.root.dag.tasks["t"]) is None
    with pytest.raises(IRError, match="not valid KFP IR"):
        PipelineIR.parse({"root": {"dag": {"tasks": {"t": {"dependentTasks": 7}}}}})


def test_unknown_fields_are_ignored() -> None:
    ir = PipelineIR.parse({"root": {"dag": {"tasks": {}}}, "fromANewerCompiler": {"x": 1}})
    assert not ir.root.dag.tasks
