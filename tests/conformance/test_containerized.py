"""Containerized Python components (`@dsl.component(target_image=...)`) and container
components: their image names an image folder, where the command runs."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import importlib.util
import sys
from pathlib import Path

from kfp import dsl

from skit_pipelines.domain import Code, StepState

SHELL = "skit-pipelines/t-shell:0.1.0"
_PYCOMP = Path(__file__).parent / "images" / "t_pycomp" / "pycomp.py"


def _load_pycomp():
    """The components' module, as a pipeline's author imports it from their source tree."""
    spec = importlib.util.spec_from_file_location("pycomp", _PYCOMP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pycomp = _load_pycomp()


@dsl.container_component
def write_lines(text: str, lines: int, data: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(
        image=SHELL,
        command=["sh", "-c", 'for i in $(seq "$1"); do echo "$0 $i"; done > "$2"'],
        args=[text, lines, data.path],
    )


async def test_containerized_python_components_run_from_their_image_folder(kfp_local):
    @dsl.pipeline(name="containerized")
    def pipeline(a: int = 6) -> str:
        product = pycomp.multiply(a=a, b=7)
        data = write_lines(text="row", lines=product.output)
        return pycomp.describe_dataset(data=data.outputs["data"]).outputs["Output"]

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("multiply") == 42
    # The module and kfp_config.ini are found in the image folder, the working directory.
    assert ran.output_parameters == {"Output": "cwd: t_pycomp\nrows: 42"}
    summary = ran.artifact("describe-dataset", "summary")
    assert summary.type == "system.Markdown"
    assert kfp_local.content(summary) == "# 42 rows\n"
    assert ran.steps["multiply"].image == pycomp.IMAGE


@dsl.component(base_image="python:3.11", target_image="registry.example/unknown:1.0")
def nowhere() -> str:
    return "never"


async def test_a_containerized_component_without_an_image_folder_fails_clearly(kfp_local):
    @dsl.pipeline(name="nowhere")
    def pipeline():
        nowhere()

    ran = await kfp_local.run(pipeline)

    step = ran.steps["nowhere"]
    assert step.state is StepState.FAILED
    assert step.error is not None and step.error.code == Code.FAILED_PRECONDITION
    assert "no image folder" in step.error.message and "unknown:1.0" in step.error.message


@dsl.container_component
def reject(code: int):
    return dsl.ContainerSpec(
        image=SHELL,
        command=["sh", "-c", 'echo "bad start_date: 2026-13-45" >&2; exit "$0"'],
        args=[code],
    )


async def test_a_failed_step_is_never_unknown(kfp_local):
    """Exit code 2 (the components' bad input) is FAILED_PRECONDITION: retrying cannot help;
    any other failure is ABORTED: RetryRun may. Either reads as the step's failure."""

    @dsl.pipeline(name="rejected")
    def rejected(code: int):
        reject(code=code)

    bad_input = await kfp_local.run(rejected, {"code": 2})
    crashed = await kfp_local.run(rejected, {"code": 13})

    for ran, code in ((bad_input, Code.FAILED_PRECONDITION), (crashed, Code.ABORTED)):
        assert ran.error is not None
        assert (ran.error.code, ran.error.reason) == (code, "STEP_FAILED")
        assert ran.error.message == "step reject failed: bad start_date: 2026-13-45"
        assert ran.steps["reject"].error is not None
        assert ran.steps["reject"].error.code == code


async def test_container_components_use_the_projects_interpreter_for_python(kfp_local):
    @dsl.container_component
    def version(out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(
            image=SHELL,
            command=["python3", "-c", "import sys; open(sys.argv[1], 'w').write(sys.executable)"],
            args=[out],
        )

    @dsl.pipeline(name="interpreter")
    def pipeline():
        version()

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("version", "out") == sys.executable
