"""Local executor overhead per step: a chain of N trivial steps against the same command run
as N bare subprocesses, one after another, in the same run (medians of several repetitions)."""

# No `from __future__ import annotations`: kfp reads the pipeline signature's real types.

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.report import Figure
from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import Step
from skit_pipelines.executor import ExecutorConfig, LocalExecutor

STEP_CODE = "import sys; open(sys.argv[1], 'w').write(str(int(sys.argv[2]) + 1))"
COMPONENT = f"""
name: Increment
inputs:
- {{name: value, type: Integer}}
outputs:
- {{name: result, type: Integer}}
metadata:
  annotations:
    skit.ai/env: ""
implementation:
  container:
    image: skit-pipelines/increment:0.1.0
    command: [python3, -c, "{STEP_CODE}"]
    args: [{{outputPath: result}}, {{inputValue: value}}]
"""


def _chain_spec(steps: int, tmp: Path) -> dict[str, Any]:
    from kfp import compiler, components, dsl

    increment = components.load_component_from_text(COMPONENT)

    @dsl.pipeline(name="chain")
    def chain(start: int = 0) -> int:
        task = increment(value=start)
        task.set_caching_options(False)
        for _ in range(steps - 1):
            task = increment(value=task.outputs["result"])
            task.set_caching_options(False)
        return task.outputs["result"]

    path = tmp / "chain.yaml"
    compiler.Compiler().compile(chain, str(path))
    return yaml.safe_load(path.read_text())


class _Quiet:
    async def step_changed(self, *steps: Step) -> None:
        return None


def _bare(steps: int, tmp: Path) -> float:
    started = time.perf_counter()
    value = 0
    for i in range(steps):
        out = tmp / f"bare-{i}"
        subprocess.run([sys.executable, "-c", STEP_CODE, str(out), str(value)], check=True, cwd=tmp)
        value = int(out.read_text())
    return time.perf_counter() - started


async def _executor(executor: LocalExecutor, spec: dict[str, Any], run_id: str) -> float:
    started = time.perf_counter()
    result = await executor.execute(run_id, spec, {"start": 0}, _Quiet())
    elapsed = time.perf_counter() - started
    assert result.output_parameters, "chain produced no output"
    return elapsed


def run(steps: int = 20, repetitions: int = 5) -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        images = tmp / "images" / "increment"
        images.mkdir(parents=True)
        (images / "component.yaml").write_text(COMPONENT)
        (images / "VERSION").write_text("0.1.0\n")
        spec = _chain_spec(steps, tmp)
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=tmp / "images", work_root=tmp / "work", max_parallel_steps=2
            ),
            LocalArtifactStore(tmp / "artifacts"),
        )
        bare_times, executor_times = [], []
        for rep in range(repetitions):
            bare_times.append(_bare(steps, tmp))
            executor_times.append(asyncio.run(_executor(executor, spec, f"bench-{rep}")))
    bare = statistics.median(bare_times) / steps * 1000
    ours = statistics.median(executor_times) / steps * 1000
    overhead = ours - bare
    return [
        Figure(
            name=f"Local executor, chain of {steps} steps",
            value=ours,
            unit="ms/step",
            baseline=bare,
            detail=f"{overhead:.1f} ms/step over the same commands run as bare subprocesses"
            f" one after another (median of {repetitions})",
            target="<= 25 ms/step over bare",
            met=overhead <= 25,
        )
    ]
