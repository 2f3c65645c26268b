"""Substituting KFP container placeholders into a step's argv."""

from __future__ import annotations

import json

import pytest

from skit_pipelines.executor._command import (
    CommandContext,
    LocalArtifact,
    PlaceholderError,
    resolve,
)

CONTEXT = CommandContext(
    parameters={"text": "a b", "n": 3, "flag": False, "items": [1, 2], "absent": None},
    input_artifacts={"data": [LocalArtifact("data", "/store/data", "file:///store/data")]},
    output_artifacts={"model": LocalArtifact("model", "/work/artifacts/model", "")},
    output_parameter_files={"count": "/work/parameters/count"},
    executor_output_file="/work/executor_output.json",
    system={"pipeline_job_name": "run-1", "pipeline_task_name": "train"},
)


def test_plain_and_embedded_placeholders() -> None:
    argv = resolve(
        [
            "{{$.inputs.parameters['text']}}",
            "--n={{$.inputs.parameters['n']}}",
            "{{$.inputs.parameters['flag']}}",
            "{{$.inputs.parameters['items']}}",
            "{{$.inputs.parameters['absent']}}",
            "{{$.inputs.artifacts['data'].path}}",
            "{{$.inputs.artifacts['data'].uri}}",
            "{{$.outputs.artifacts['model'].path}}",
            "{{$.outputs.parameters['count'].output_file}}",
            "{{$.pipeline_job_name}}/{{$.pipeline_task_name}}",
        ],
        CONTEXT,
    )
    assert argv == [
        "a b",
        "--n=3",
        "false",
        "[1, 2]",
        "",
        "/store/data",
        "file:///store/data",
        "/work/artifacts/model",
        "/work/parameters/count",
        "run-1/train",
    ]


def test_if_present_and_concat_structures() -> None:
    def if_present(name: str) -> str:
        return json.dumps(
            {
                "IfPresent": {
                    "InputName": name,
                    "Then": ["--value", "{{$.inputs.parameters['n']}}"],
                    "Else": ["--none"],
                }
            }
        )

    concat = json.dumps(
        {"Concat": ["x-", "{{$.inputs.parameters['text']}}", {"Concat": ["-", "y"]}]}
    )
    no_else = json.dumps({"IfPresent": {"InputName": "absent", "Then": ["--never"]}})
    argv = resolve(
        [if_present("n"), if_present("absent"), if_present("data"), concat, no_else], CONTEXT
    )
    assert argv == ["--value", "3", "--none", "--value", "3", "x-a b-y"]


def test_executor_input_placeholder() -> None:
    [encoded] = resolve(["{{$}}"], CONTEXT)
    executor_input = json.loads(encoded)
    assert executor_input["inputs"]["parameterValues"]["text"] == "a b"
    assert "absent" not in executor_input["inputs"]["parameterValues"]
    assert executor_input["inputs"]["artifacts"]["data"]["artifacts"][0]["uri"] == "/store/data"
    assert executor_input["outputs"]["parameters"]["count"]["outputFile"] == (
        "/work/parameters/count"
    )
    assert executor_input["outputs"]["outputFile"] == "/work/executor_output.json"


@pytest.mark.parametrize(
    "template",
    [
        "{{$.inputs.parameters['nope']}}",
        "{{$.outputs.artifacts['nope'].path}}",
        "{{$.pipeline_root}}",
        '{"IfPresent": {"Then": ["x"]}}',
    ],
)
def test_unknown_placeholders_raise(template: str) -> None:
    with pytest.raises(PlaceholderError):
        resolve([template], CONTEXT)
