"""Containerized Python components of the conformance suite (their image is this folder)."""

# No `from __future__ import annotations`: kfp reads the signatures' real types.

from kfp import dsl

IMAGE = "skit-pipelines/t-pycomp:0.1.0"


@dsl.component(base_image="python:3.11", target_image=IMAGE)
def multiply(a: int, b: int) -> int:
    return a * b


@dsl.component(base_image="python:3.11", target_image=IMAGE, packages_to_install=["PyYAML>=5"])
def describe_dataset(data: dsl.Input[dsl.Dataset], summary: dsl.Output[dsl.Markdown]) -> str:
    import os

    import yaml

    with open(data.path) as f:
        rows = f.read().splitlines()
    with open(summary.path, "w") as f:
        f.write(f"# {len(rows)} rows\n")
    return yaml.safe_dump({"rows": len(rows), "cwd": os.path.basename(os.getcwd())}).strip()
