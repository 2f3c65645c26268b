"""Component inputs and arguments: optional inputs, IfPresent and Concat placeholders,
environment variables set on a task, OneOf over artifacts, ignore_upstream_failure and
a loop's parallelism limit."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import itertools
import json
from typing import Optional

from kfp import components, dsl

from skit_pipelines.domain import StepState

BASE = "python:3.11"

if_placeholder = components.load_component_from_text(
    """
name: Component with optional inputs
inputs:
- {name: required_input, type: String}
- {name: optional_input_1, type: String, optional: true}
- {name: optional_input_2, type: String, optional: true}
outputs:
- {name: argv, type: String}
implementation:
  container:
    image: skit-pipelines/t-shell:0.1.0
    command:
    - python3
    - -c
    - "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    args:
    - {outputPath: argv}
    - --arg0
    - {inputValue: required_input}
    - if:
        cond: {isPresent: optional_input_1}
        then: [--arg1, {inputValue: optional_input_1}]
    - if:
        cond: {isPresent: optional_input_2}
        then: [--arg2, {inputValue: optional_input_2}]
        else: [--arg2, default]
    - concat: [--joined=, {inputValue: required_input}, +, {inputValue: required_input}]
"""
)


async def test_if_present_and_concat_placeholders(kfp_local):
    """Adapted from pipeline_with_if_placeholder.py and pipeline_with_concat_placeholder.py."""

    @dsl.pipeline(name="if-placeholder")
    def pipeline(input0: str = "a", input1: str = "b"):
        if_placeholder(required_input=input0, optional_input_1=input1)

    ran = await kfp_local.succeed(pipeline)

    assert json.loads(ran.parameter("component-with-optional-inputs", "argv")) == [
        "--arg0",
        "a",
        "--arg1",
        "b",
        "--arg2",
        "default",
        "--joined=a+a",
    ]


@dsl.component(base_image=BASE)
def optional_inputs(
    name: str = "default",
    count: Optional[int] = None,  # noqa: UP045 - kfp reads typing.Optional, not `| None`
    dataset: dsl.Input[dsl.Dataset] = None,
) -> str:
    contents = None
    if dataset is not None:
        with open(dataset.path) as f:
            contents = f.read()
    return f"{name} {count} {contents}"


@dsl.component(base_image=BASE)
def make_dataset(out: dsl.Output[dsl.Dataset]):
    with open(out.path, "w") as f:
        f.write("rows")


async def test_optional_inputs_and_artifacts(kfp_local):
    """Adapted from component_with_optional_inputs.py and
    components_with_optional_artifacts.py."""

    @dsl.pipeline(name="optional-inputs")
    def pipeline():
        optional_inputs().set_display_name("none-given")
        data = make_dataset()
        optional_inputs(name="given", count=3, dataset=data.outputs["out"]).set_display_name(
            "all-given"
        )

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("none-given") == "default None None"
    assert ran.parameter("all-given") == "given 3 rows"


@dsl.component(base_image=BASE)
def read_env() -> str:
    import os

    return f"{os.environ.get('ENV1')} {os.environ.get('SKIT_TEST_SECRET')}"


async def test_environment_variables_set_on_a_task_only(kfp_local, monkeypatch):
    """Adapted from pipeline_with_env.py: set_env_variable reaches the step; the service's
    own environment (a secret) does not."""
    monkeypatch.setenv("SKIT_TEST_SECRET", "leaked")

    @dsl.pipeline(name="env")
    def pipeline():
        read_env().set_env_variable(name="ENV1", value="val1")

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("read-env") == "val1 None"


@dsl.component(base_image=BASE)
def coin(value: int) -> str:
    return "heads" if value else "tails"


@dsl.component(base_image=BASE)
def param_to_artifact(text: str, a: dsl.Output[dsl.Artifact]):
    with open(a.path, "w") as f:
        f.write(text)


@dsl.component(base_image=BASE)
def print_artifact(a: dsl.Input[dsl.Artifact]) -> str:
    with open(a.path) as f:
        return f.read()


async def test_one_of_over_artifacts(kfp_local):
    """Adapted from if_else_with_oneof_artifacts.py."""

    @dsl.pipeline(name="flip-coin")
    def flip_coin(value: int) -> dsl.Artifact:
        flipped = coin(value=value)
        with dsl.If(flipped.output == "heads"):
            t1 = param_to_artifact(text="Got heads!")
        with dsl.Else():
            t2 = param_to_artifact(text="Got tails!")
        return dsl.OneOf(t1.outputs["a"], t2.outputs["a"])

    @dsl.pipeline(name="outer-coin")
    def outer(value: int = 1) -> str:
        flipped = flip_coin(value=value)
        return print_artifact(a=flipped.output).output

    heads = await kfp_local.succeed(outer)
    tails = await kfp_local.succeed(outer, {"value": 0})

    assert heads.output_parameters == {"Output": "Got heads!"}
    assert tails.output_parameters == {"Output": "Got tails!"}


@dsl.component(base_image=BASE)
def fail_op(message: str) -> str:
    import sys

    print(message)
    sys.exit(1)


@dsl.component(base_image=BASE)
def clean_up(message: str = "default") -> str:
    return message


async def test_a_task_ignoring_upstream_failure_still_runs(kfp_local):
    """Adapted from pipeline_with_task_using_ignore_upstream_failure.py."""

    @dsl.pipeline(name="ignore-upstream-failure")
    def pipeline(sample_input: str = "message"):
        task = fail_op(message=sample_input)
        clean_up(message=task.output).ignore_upstream_failure()

    ran = await kfp_local.run(pipeline)

    assert ran.steps["fail-op"].state is StepState.FAILED
    assert ran.steps["clean-up"].state is StepState.SUCCEEDED
    # The failed producer's output is absent: the input's default stands.
    assert ran.parameter("clean-up") == "default"
    assert ran.error is not None and ran.error.message.startswith("step fail-op failed:")


@dsl.component(base_image=BASE)
def interval(seconds: float) -> str:
    import time

    start = time.time()
    time.sleep(seconds)
    return f"{start} {time.time()}"


async def test_a_loops_parallelism_limit_holds(kfp_local):
    """Adapted from pipeline_with_parallelfor_parallelism.py."""

    @dsl.pipeline(name="parallelism")
    def pipeline():
        with dsl.ParallelFor([0.3, 0.3, 0.3], parallelism=1) as seconds:
            interval(seconds=seconds)

    ran = await kfp_local.succeed(pipeline)

    spans = sorted(
        tuple(map(float, step.output_parameters["Output"].split())) for step in ran.steps.values()
    )
    assert len(spans) == 3
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
