"""Lightweight Python components (`@dsl.component` functions): run with the project's
interpreter in their own scratch directory, without pip or the shell bootstrap."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import json
import sys
from typing import NamedTuple

from kfp import dsl

from skit_pipelines.domain import Code, StepState

BASE = "python:3.11"


@dsl.component(base_image=BASE)
def preprocess(
    message: str,
    input_dict_parameter: dict[str, int],
    input_list_parameter: list[str],
    output_dataset_one: dsl.Output[dsl.Dataset],
    output_dataset_two_path: dsl.OutputPath("Dataset"),
    output_parameter_path: dsl.OutputPath(str),
    output_bool_parameter_path: dsl.OutputPath(bool),
    output_dict_parameter_path: dsl.OutputPath(dict[str, int]),
    output_list_parameter_path: dsl.OutputPath(list[str]),
):
    import json

    with open(output_dataset_one.path, "w") as f:
        f.write(message)
    with open(output_dataset_two_path, "w") as f:
        f.write(message.upper())
    with open(output_parameter_path, "w") as f:
        f.write(message)
    with open(output_bool_parameter_path, "w") as f:
        f.write(str(True))
    with open(output_dict_parameter_path, "w") as f:
        f.write(json.dumps(input_dict_parameter))
    with open(output_list_parameter_path, "w") as f:
        f.write(json.dumps(input_list_parameter))


@dsl.component(base_image=BASE)
def train(
    dataset_one_path: dsl.InputPath("Dataset"),
    dataset_two: dsl.Input[dsl.Dataset],
    message: str,
    model: dsl.Output[dsl.Model],
    input_bool: bool,
    input_dict: dict[str, int],
    input_list: list[str],
    num_steps: int = 3,
) -> str:
    with open(dataset_one_path) as f:
        one = f.read()
    with open(dataset_two.path) as f:
        two = f.read()
    with open(model.path, "w") as f:
        for step in range(num_steps):
            f.write(f"step {step}: {one}|{two}\n")
    model.metadata["accuracy"] = 0.9
    kinds = [type(v).__name__ for v in (input_bool, input_dict, input_list, num_steps)]
    return f"{message} {input_bool} {sorted(input_dict.items())} {input_list} {kinds}"


async def test_data_passing_between_lightweight_components(kfp_local):
    """Adapted from lightweight_python_functions_pipeline.py: every kind of input and output,
    artifacts by Output[T] and by OutputPath, typed parameters."""

    @dsl.pipeline(name="lightweight-data-passing")
    def pipeline(message: str, input_dict: dict[str, int] = {"A": 1, "B": 2}):  # noqa: B006
        pre = preprocess(
            message=message, input_dict_parameter=input_dict, input_list_parameter=["a", "b"]
        )
        train(
            dataset_one_path=pre.outputs["output_dataset_one"],
            dataset_two=pre.outputs["output_dataset_two_path"],
            message=pre.outputs["output_parameter_path"],
            input_bool=pre.outputs["output_bool_parameter_path"],
            input_dict=pre.outputs["output_dict_parameter_path"],
            input_list=pre.outputs["output_list_parameter_path"],
        )

    ran = await kfp_local.succeed(pipeline, {"message": "hello"})

    assert ran.states() == {"preprocess": StepState.SUCCEEDED, "train": StepState.SUCCEEDED}
    assert ran.parameter("preprocess", "output_bool_parameter_path") is True
    assert ran.parameter("preprocess", "output_dict_parameter_path") == {"A": 1, "B": 2}
    assert ran.parameter("train") == (
        "hello True [('A', 1), ('B', 2)] ['a', 'b'] ['bool', 'dict', 'list', 'int']"
    )
    model = ran.artifact("train", "model")
    assert (model.type, model.metadata) == ("system.Model", {"accuracy": 0.9})
    assert kfp_local.content(model).splitlines()[-1] == "step 2: hello|HELLO"


@dsl.component(base_image=BASE)
def stats(
    values: list[int],
) -> NamedTuple("Outputs", [("total", int), ("mean", float), ("label", str)]):
    from collections import namedtuple

    total = sum(values)
    outputs = namedtuple("Outputs", ["total", "mean", "label"])
    return outputs(total, total / len(values), f"n={len(values)}")


@dsl.component(base_image=BASE)
def describe(total: int, mean: float, label: str) -> str:
    return f"{label} total={total!r} mean={mean!r} {type(total).__name__}"


async def test_named_tuple_outputs_keep_their_types(kfp_local):
    """Adapted from lightweight_python_functions_with_outputs.py."""

    @dsl.pipeline(name="named-outputs")
    def pipeline(values: list[int] = [1, 2, 4]) -> int:  # noqa: B006
        s = stats(values=values)
        describe(total=s.outputs["total"], mean=s.outputs["mean"], label=s.outputs["label"])
        return s.outputs["total"]

    ran = await kfp_local.succeed(pipeline)

    assert ran.steps["stats"].output_parameters == {"total": 7, "mean": 7 / 3, "label": "n=3"}
    assert ran.parameter("describe") == f"n=3 total=7 mean={7 / 3!r} int"
    assert ran.output_parameters == {"Output": 7}
    assert type(ran.output_parameters["Output"]) is int


@dsl.component(base_image=BASE)
def whereami() -> str:
    import json
    import os
    import sys

    return json.dumps(
        {
            "python": sys.executable,
            "cwd": os.getcwd(),
            "module": __file__ if "__file__" in globals() else "",
            "runtime": os.environ.get("_KFP_RUNTIME", ""),
        }
    )


async def test_runs_with_the_projects_interpreter_in_its_own_directory(kfp_local):
    @dsl.pipeline(name="whereami")
    def pipeline():
        whereami()

    ran = await kfp_local.succeed(pipeline)

    seen = json.loads(ran.parameter("whereami"))
    # The service's interpreter (which has kfp), not a python3 from PATH after a pip install.
    assert seen["python"] == sys.executable
    step_dir = kfp_local.root / "work" / "runs" / "run-1" / "whereami"
    assert seen["cwd"] == str(step_dir)
    assert seen["runtime"] == "true"
    # The scratch directory is gone with the step.
    assert not step_dir.exists()


@dsl.component(base_image=BASE, packages_to_install=["PyYAML>=5", "packaging"])
def dump_yaml(data: dict[str, int]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=True).strip()


@dsl.component(base_image=BASE, packages_to_install=["PyYAML"], use_venv=True)
def in_venv() -> str:
    import sys

    return sys.prefix


async def test_installed_packages_to_install_run_without_an_install(kfp_local):
    @dsl.pipeline(name="packages")
    def pipeline():
        dump_yaml(data={"b": 2, "a": 1})
        in_venv()

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("dump-yaml") == "a: 1\nb: 2"
    # use_venv's venv is part of the bootstrap: the project's environment runs it.
    assert ran.parameter("in-venv") == sys.prefix


@dsl.component(base_image=BASE, packages_to_install=["surely-not-installed-pkg==1.0"])
def needs_missing() -> str:
    return "never"


async def test_packages_not_installed_fail_the_step_before_it_runs(kfp_local):
    """CreateRun refuses such a pipeline (test_service); the executor refuses it too, for a
    run that resumes in a changed environment."""

    @dsl.pipeline(name="missing-packages")
    def pipeline():
        needs_missing()

    ran = await kfp_local.run(pipeline)

    step = ran.steps["needs-missing"]
    assert step.state is StepState.FAILED and step.start_time is None
    assert step.error is not None and step.error.code == Code.FAILED_PRECONDITION
    assert "surely-not-installed-pkg==1.0 (not installed)" in step.error.message
    assert ran.error is not None and ran.error.message.startswith("step needs-missing failed:")


def helper_double(x: int) -> int:
    return 2 * x


@dsl.component(base_image=BASE, additional_funcs=[helper_double])
def uses_helper(x: int) -> int:
    return helper_double(x) + 1


@dsl.component(base_image=BASE)
def make_artifact(text: str) -> dsl.Dataset:
    dataset = dsl.Dataset(uri=dsl.get_uri())
    with open(dataset.path, "w") as f:
        f.write(text)
    dataset.metadata["chars"] = len(text)
    return dataset


@dsl.component(base_image=BASE)
def read_artifact(data: dsl.Input[dsl.Dataset]) -> str:
    with open(data.path) as f:
        return f"{f.read()} ({data.metadata['chars']} chars)"


async def test_helpers_and_pythonic_artifact_returns(kfp_local):
    """Adapted from pythonic_artifact_with_single_return.py: a function returning an
    artifact it made with dsl.get_uri(), and additional_funcs."""

    @dsl.pipeline(name="pythonic")
    def pipeline(text: str = "hey") -> str:
        made = make_artifact(text=text)
        uses_helper(x=20)
        return read_artifact(data=made.output).output

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("uses-helper") == 41
    assert ran.output_parameters == {"Output": "hey (3 chars)"}
    made = ran.artifact("make-artifact", "Output")
    assert made.metadata == {"chars": 3} and kfp_local.content(made) == "hey"


@dsl.component(base_image=BASE)
def divide(a: float, b: float) -> float:
    return a / b


async def test_an_exception_fails_the_step_with_its_last_line(kfp_local):
    @dsl.pipeline(name="divide")
    def pipeline(b: float = 0.0):
        divide(a=1.0, b=b)

    ran = await kfp_local.run(pipeline)

    step = ran.steps["divide"]
    assert step.state is StepState.FAILED
    assert step.error is not None and step.error.code == Code.ABORTED
    # KFP's launcher writes 1.0 as 1 (protojson), so kfp hands the function an int.
    assert step.error.message == "ZeroDivisionError: division by zero"
    assert ran.error is not None
    assert ran.error.message == "step divide failed: ZeroDivisionError: division by zero"
