"""Real `skit-pipelines serve` processes on a small project of slow steps, which tests
kill and restart on the same address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

COMPONENT = """
name: Nap
inputs:
- {name: seconds, type: Float}
outputs:
- {name: out, type: String}
implementation:
  container:
    image: skit-pipelines/t-nap:0.1.0
    command: [python, nap.py]
"""

NAP = """
import os, sys, time
out, seconds = sys.argv[1], float(sys.argv[2])
time.sleep(seconds)
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write("ok")
"""

PIPELINE = '''
from kfp import dsl


@dsl.container_component
def nap(seconds: float, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image="skit-pipelines/t-nap:0.1.0", command=["python", "nap.py"], args=[out, seconds]
    )


@dsl.pipeline(name="naps", description="Naps in a row.")
def pipeline(seconds: float = 0.3) -> str:
    """Four naps.

    Args:
        seconds: How long each nap lasts.
    """
    task = nap(seconds=seconds)
    task.set_caching_options(False)
    for _ in range(3):
        task = nap(seconds=seconds).after(task)
        task.set_caching_options(False)
    return task.outputs["out"]
'''


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    image = root / "images" / "t_nap"
    image.mkdir(parents=True)
    (image / "component.yaml").write_text(COMPONENT)
    (image / "VERSION").write_text("0.1.0\n")
    (image / "nap.py").write_text(NAP)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "naps.py").write_text(PIPELINE)
    return root


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: str
    log: Path


def _serving_address(process: subprocess.Popen[bytes], log: Path, offset: int) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}:\n{log.read_text()}")
        for line in log.read_text()[offset:].splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if message.startswith("serving PipelineService on "):
                return message.removeprefix("serving PipelineService on ")
        time.sleep(0.05)
    raise AssertionError(f"server did not start:\n{log.read_text()}")


@pytest.fixture
def serve(tmp_path: Path, project: Path) -> Iterator[Callable[[int], Server]]:
    """Starts a server on a port (0: any) with state in tmp_path; all are stopped at the end."""
    started: list[Server] = []
    log = tmp_path / "server.log"

    def start(port: int = 0) -> Server:
        offset = len(log.read_text()) if log.exists() else 0
        with log.open("a") as sink:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "skit_pipelines.cli", "serve"),
                    *("--port", str(port), "--home", str(tmp_path / "home")),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "SKIT_PROJECT_ROOT": str(project),
                    "SKIT_DEMO_DATA": "0",
                },
            )
        server = Server(process, _serving_address(process, log, offset), log)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=30)
