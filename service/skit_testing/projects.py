"""Small projects (image folders and pipeline modules) written into a temp dir for tests."""

from __future__ import annotations

from pathlib import Path

TRACED_IMAGE = "skit-pipelines/t-traced:0.1.0"

COMPONENT = """
name: Traced
inputs:
- {name: mode, type: String}
outputs:
- {name: traceparent, type: String}
implementation:
  container:
    image: skit-pipelines/t-traced:0.1.0
    command: [python, traced.py]
"""

# The step's own view of the trace: what a component would hand to its OpenTelemetry SDK.
STEP = """
import os, sys
out, mode = sys.argv[1:3]
if mode == "fail":
    print("told to fail", file=sys.stderr)
    sys.exit(3)
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write(os.environ.get("TRACEPARENT", ""))
"""

PIPELINE = '''
from kfp import dsl

IMAGE = "skit-pipelines/t-traced:0.1.0"


@dsl.container_component
def traced(mode: str, traceparent: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=["python", "traced.py"], args=[traceparent, mode])


@dsl.pipeline(name="traced", description="Two steps that report their trace context.")
def pipeline(mode: str = "ok") -> str:
    """Traced.

    Args:
        mode: "fail" makes the second step fail.
    """
    first = traced(mode="ok")
    first.set_caching_options(False)
    second = traced(mode=mode).after(first)
    second.set_caching_options(False)
    return second.outputs["traceparent"]
'''


def write_traced_project(root: Path) -> Path:
    """One image folder (t_traced) and one pipeline (traced: two steps, the second fails
    when mode="fail"); each step writes the TRACEPARENT it was given."""
    image = root / "images" / "t_traced"
    image.mkdir(parents=True)
    (image / "component.yaml").write_text(COMPONENT)
    (image / "VERSION").write_text("0.1.0\n")
    (image / "traced.py").write_text(STEP)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "traced.py").write_text(PIPELINE)
    return root
