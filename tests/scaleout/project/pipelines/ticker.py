"""Three slow steps passing an artifact along, for the scale-out tests."""

# No `from __future__ import annotations`: kfp reads the signatures' real types.

from kfp import dsl

IMAGE = "skit-pipelines/t-tick:0.1.0"
TICK = ["python", "-m", "tick"]


@dsl.container_component
def start(text: str, seconds: float, out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=TICK, args=["start", out.path, text, seconds])


@dsl.container_component
def tick(data: dsl.Input[dsl.Dataset], seconds: float, out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=TICK, args=["next", data.path, out.path, seconds])


@dsl.pipeline(name="ticker", description="Three slow steps passing an artifact along.")
def pipeline(text: str = "tick", seconds: float = 0.2) -> dsl.Dataset:
    """Ticks.

    Args:
        text: What the first step writes.
        seconds: How long each step sleeps.
    """
    first = start(text=text, seconds=seconds)
    second = tick(data=first.outputs["out"], seconds=seconds)
    return tick(data=second.outputs["out"], seconds=seconds).outputs["out"]
