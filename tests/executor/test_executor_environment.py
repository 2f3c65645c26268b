"""A step's environment: inherited names only, declared variables only."""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.executor._environment import StepEnvironment
from skit_pipelines.images import ImageFolder

FOLDER = ImageFolder(
    name="t_tool", path=Path("/images/t_tool"), version="0.1.0", declared_env=("DB_URL", "UNSET")
)
CONTAINER = json_format.ParseDict(
    {"env": [{"name": "FROM_IR", "value": "1"}]},
    pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec(),
)


def test_only_inherited_names_and_declared_values_reach_the_step() -> None:
    environment = StepEnvironment(
        {"PATH": "/custom/bin", "SECRET": "no", "LANG": "de_DE.UTF-8"},
        {"DB_URL": "postgresql://db", "OTHER": "withheld"},
    )
    env = environment.for_step(FOLDER, CONTAINER, Path("/tmp/step"), {"TRACEPARENT": "00-x"})
    assert env == {
        "PATH": "/custom/bin",
        "HOME": "/",
        "LANG": "de_DE.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": "/tmp/step",
        "FROM_IR": "1",
        "DB_URL": "postgresql://db",
        "TRACEPARENT": "00-x",
    }


def test_without_an_inherited_environment_the_defaults_apply() -> None:
    env = StepEnvironment({}, {}).for_step(FOLDER, CONTAINER, Path("/t"), {})
    assert env["PATH"] == os.defpath
    assert env["LANG"] == "C.UTF-8"
