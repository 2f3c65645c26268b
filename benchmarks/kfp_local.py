"""The same pipelines, written as lightweight @dsl.component Python components, run by
kfp.local's SubprocessRunner (use_venv=False) and by our local executor from their
compiled IR, alternately, in the same run (medians of several repetitions).

Both run each step as `sh -ec ... python3 -m kfp.dsl.executor_main` with this interpreter
(kfp.local substitutes it for python3; for ours, its folder leads PATH), and neither
installs packages (install_kfp_package=False), so what differs is the orchestration: a
chain shows the cost per step, and a pipeline with independent branches shows that ours
runs them at once (as Kubeflow would) where kfp.local runs them one after another.
"""

# No `from __future__ import annotations`: kfp reads the components' real annotations.

import asyncio
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, dsl, local

from benchmarks.report import Figure
from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import Step
from skit_pipelines.executor import ExecutorConfig, LocalExecutor

STEPS = 6
REPETITIONS = 3
IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def add(a: int, b: int) -> int:
    return a + b


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def add4(a: int, b: int, c: int, d: int) -> int:
    return a + b + c + d


@dsl.pipeline(name="chain")
def chain(start: int = 0) -> int:
    task = add(a=start, b=1)
    task.set_caching_options(False)
    for _ in range(STEPS - 1):
        task = add(a=task.output, b=1)
        task.set_caching_options(False)
    return task.output


@dsl.pipeline(name="branches")
def branches(start: int = 0) -> int:
    parts = [add(a=start, b=i) for i in range(4)]
    total = add4(a=parts[0].output, b=parts[1].output, c=parts[2].output, d=parts[3].output)
    final = add(a=total.output, b=1)
    for task in (*parts, total, final):
        task.set_caching_options(False)
    return final.output


PIPELINES = (
    # (pipeline, its output for start=0, target)
    (chain, STEPS, "informational: the cost per step"),
    (branches, 7, "faster than kfp.local"),
)


class _Quiet:
    async def step_changed(self, *steps: Step) -> None:
        return None


def _kfp_local(pipeline: Any, expected: int, root: Path) -> float:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    started = time.perf_counter()
    # kfp.local narrates every task on stdout and through logging.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        task = pipeline(start=0)
    elapsed = time.perf_counter() - started
    assert task.output == expected, task.output
    return elapsed


def _ours(executor: LocalExecutor, spec: dict[str, Any], expected: int, run_id: str) -> float:
    started = time.perf_counter()
    result = asyncio.run(executor.execute(run_id, spec, {"start": 0}, _Quiet()))
    elapsed = time.perf_counter() - started
    assert result.output_parameters.get("Output") == expected, result.output_parameters
    return elapsed


def _steps(spec: dict[str, Any]) -> int:
    return len(spec["root"]["dag"]["tasks"])


def run() -> list[Figure]:
    logging.getLogger("kfp").setLevel(logging.WARNING)
    figures = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # The image resolves to a folder, as every image does for the local executor.
        folder = tmp / "images" / "python"
        folder.mkdir(parents=True)
        (folder / "component.yaml").write_text("name: Python\n")
        (folder / "VERSION").write_text("3.11.0\n")
        bin_dir = str(Path(sys.executable).parent)
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=tmp / "images",
                work_root=tmp / "work",
                # Steps inherit only what the service passes on: this interpreter first.
                inherited_env={"PATH": path},
            ),
            LocalArtifactStore(tmp / "artifacts"),
        )
        for pipeline, expected, target in PIPELINES:
            name = pipeline.name
            compiler.Compiler().compile(pipeline, str(tmp / f"{name}.yaml"))
            spec = yaml.safe_load((tmp / f"{name}.yaml").read_text())
            kfp_times, our_times = [], []
            for rep in range(REPETITIONS):
                kfp_times.append(_kfp_local(pipeline, expected, tmp / f"kfp-{name}-{rep}"))
                our_times.append(_ours(executor, spec, expected, f"{name}-{rep}"))
            kfp_s, ours_s = statistics.median(kfp_times), statistics.median(our_times)
            steps = _steps(spec)
            figures.append(
                Figure(
                    name=f"Pipeline {name!r} ({steps} lightweight Python steps) vs kfp.local",
                    value=ours_s,
                    unit="s",
                    baseline=kfp_s,
                    detail=f"local executor {ours_s:.2f} s vs kfp.local SubprocessRunner"
                    f" {kfp_s:.2f} s: {kfp_s / ours_s:.2f} x as fast"
                    f" ({ours_s / steps * 1000:.0f} vs {kfp_s / steps * 1000:.0f} ms/step,"
                    f" median of {REPETITIONS})",
                    target=target,
                    met=ours_s < kfp_s or target.startswith("informational"),
                )
            )
    return figures
