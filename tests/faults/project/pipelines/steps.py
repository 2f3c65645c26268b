"""Three steps in a row, each printing to its log, for the fault tests."""

# No `from __future__ import annotations`: kfp reads the signatures' real types.

from kfp import dsl

IMAGE = "skit-pipelines/f-step:0.1.0"


@dsl.container_component
def step(name: str, seconds: float, out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(
        image=IMAGE, command=["python", "-m", "step"], args=[name, seconds, out.path]
    )


@dsl.pipeline(name="steps", description="Three steps in a row that print what they do.")
def pipeline(seconds: float = 0.2) -> dsl.Dataset:
    """Steps.

    Args:
        seconds: How long each step sleeps.
    """
    first = step(name="first", seconds=seconds).set_caching_options(False)
    second = step(name="second", seconds=seconds).after(first).set_caching_options(False)
    third = step(name="third", seconds=seconds).after(second).set_caching_options(False)
    return third.outputs["out"]
