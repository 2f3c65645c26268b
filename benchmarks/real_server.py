"""The real service for benchmarks: `skit-pipelines serve` in a new process (SQLite, the
local executor) over a small layout of bench pipelines whose steps really execute, and a
synchronous client to drive it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2

SERVING_PREFIX = "serving PipelineService on "
START_TIMEOUT_SECONDS = 120.0
"""The first start in a home compiles the pipelines (imports kfp)."""
RUN_TIMEOUT_SECONDS = 120.0
_POLL_SECONDS = 0.05

GATE_PIPELINE = "pipelines/bench-gate"
"""One step that waits until the file named by its `path` parameter exists: with
max_active_runs=1 it holds every later run in QUEUED until the benchmark releases it."""
CHAIN_PIPELINE = "pipelines/bench-chain"
"""CHAIN_STEPS steps one after another, each a new Python process adding 1."""
CHAIN_STEPS = 3
SERVER_ENV = {"PYTHONMALLOC": "malloc"}
"""What the server's launchers set (deploy/Dockerfile, `make run`), so benchmarks start it
as it is deployed: Python objects in the C library's allocator (README.md,
"Configuration")."""

_INCREMENT_CODE = "import sys; open(sys.argv[1], 'w').write(str(int(sys.argv[2]) + 1))"
_GATE_CODE = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.01)\n"
    "open(sys.argv[2], 'w').write('open')"
)
_COMPONENTS = {
    "bench_increment": f"""
name: Bench increment
inputs:
- {{name: value, type: Integer}}
outputs:
- {{name: result, type: Integer}}
metadata:
  annotations:
    skit.ai/env: ""
implementation:
  container:
    image: skit-pipelines/bench-increment:0.1.0
    command: [python3, -c, {json.dumps(_INCREMENT_CODE)}]
    args: [{{outputPath: result}}, {{inputValue: value}}]
""",
    "bench_gate": f"""
name: Bench gate
inputs:
- {{name: path, type: String}}
outputs:
- {{name: done, type: String}}
metadata:
  annotations:
    skit.ai/env: ""
implementation:
  container:
    image: skit-pipelines/bench-gate:0.1.0
    command: [python3, -c, {json.dumps(_GATE_CODE)}]
    args: [{{inputValue: path}}, {{outputPath: done}}]
""",
}
# Pipeline modules: no `from __future__ import annotations` (kfp reads real annotations).
_PIPELINES = {
    "bench_gate.py": """
from kfp import dsl

from skit_pipelines.images import load_component

gate = load_component(__file__, "bench_gate")


@dsl.pipeline(name="bench-gate")
def pipeline(path: str = "") -> str:
    task = gate(path=path)
    task.set_caching_options(False)
    return task.outputs["done"]
""",
    "bench_chain.py": f"""
from kfp import dsl

from skit_pipelines.images import load_component

increment = load_component(__file__, "bench_increment")


@dsl.pipeline(name="bench-chain")
def pipeline(start: int = 0) -> int:
    task = increment(value=start)
    task.set_caching_options(False)
    for _ in range({CHAIN_STEPS} - 1):
        task = increment(value=task.outputs["result"])
        task.set_caching_options(False)
    return task.outputs["result"]
""",
}


def write_layout(root: Path) -> tuple[Path, Path]:
    """The bench pipelines and image folders under `root`: (pipelines dir, images dir)."""
    pipelines, images = root / "pipelines", root / "images"
    pipelines.mkdir(parents=True, exist_ok=True)
    for name, text in _PIPELINES.items():
        (pipelines / name).write_text(text)
    for name, text in _COMPONENTS.items():
        folder = images / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "component.yaml").write_text(text)
        (folder / "VERSION").write_text("0.1.0\n")
    return pipelines, images


@dataclass
class ServeProcess:
    """A running `skit-pipelines serve`."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_serve(
    home: Path, layout_root: Path, *, env: Mapping[str, str] = {}, max_active_runs: int = 1
) -> ServeProcess:
    """`skit-pipelines serve` on a free port over the bench layout: the real server with the
    SQLite store and the local executor, logging JSON lines to <home>/server.log."""
    pipelines, images = write_layout(layout_root)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "skit_pipelines_cli", "serve", "--port", "0"),
                *("--home", str(home), "--pipelines-dir", str(pipelines)),
                *("--images-dir", str(images)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "SKIT_DEMO_DATA": "0",
                "SKIT_MAX_ACTIVE_RUNS": str(max_active_runs),
                "SKIT_MAX_STREAMS_PER_PRINCIPAL": "1000000",
                **SERVER_ENV,
                **env,
            },
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited {process.returncode}; see {log}")
        with log.open("rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                try:
                    message = json.loads(line).get("message", "")
                except (ValueError, AttributeError):
                    continue
                if message.startswith(SERVING_PREFIX):
                    return ServeProcess(process, message.removeprefix(SERVING_PREFIX), log)
        time.sleep(_POLL_SECONDS)
    process.kill()
    raise RuntimeError(f"the server did not start in {START_TIMEOUT_SECONDS:g} s; see {log}")


class Driver:
    """Creates runs and waits for their states, over a synchronous channel."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pipeline_service_pb2_grpc.PipelineServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def create(self, pipeline: str, parameters: Mapping[str, object]) -> run_pb2.Run:
        run = run_pb2.Run(pipeline=pipeline)
        run.parameters.update(dict(parameters))
        return self._stub.CreateRun(pipeline_service_pb2.CreateRunRequest(run=run), timeout=30)

    def get(self, name: str) -> run_pb2.Run:
        return self._stub.GetRun(pipeline_service_pb2.GetRunRequest(name=name), timeout=30)

    def wait_for(self, name: str, states: set[int]) -> run_pb2.Run:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            run = self.get(name)
            if run.state in states:
                return run
            time.sleep(_POLL_SECONDS)
        raise RuntimeError(f"{name} did not reach {states} in {RUN_TIMEOUT_SECONDS:g} s")

    def wait_step_running(self, name: str) -> None:
        """Until a step of the run is executing (its process started)."""
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            run = self.get(name)
            if any(step.state == run_pb2.STEP_STATE_RUNNING for step in run.steps):
                return
            time.sleep(_POLL_SECONDS)
        raise RuntimeError(f"no step of {name} started in {RUN_TIMEOUT_SECONDS:g} s")
