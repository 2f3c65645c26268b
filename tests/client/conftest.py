"""Real `skit-pipelines serve` processes on a small project of slow steps, which tests
kill and restart on the same address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2

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
print("napping for", seconds, "s", flush=True)
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
                    *(sys.executable, "-m", "skit_pipelines_cli", "serve"),
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


class ScriptedWatch(pipeline_service_pb2_grpc.PipelineServiceServicer):
    """Answers the n-th WatchRun with the n-th script: revisions to send (those after the
    request's cursor, unless `replay_all`), then an optional error code."""

    def __init__(self, scripts: Sequence[tuple[Sequence[int], grpc.StatusCode | None]]) -> None:
        self.scripts = list(scripts)
        self.cursors: list[int] = []
        self.authorization: list[str] = []
        self.replay_all = False

    def WatchRun(self, request, context):
        self.cursors.append(request.after_revision)
        self.authorization.append(dict(context.invocation_metadata()).get("authorization", ""))
        revisions, error = self.scripts.pop(0)
        for revision in revisions:
            if self.replay_all or revision > request.after_revision:
                state = run_pb2.RUN_STATE_SUCCEEDED if revision == 5 else run_pb2.RUN_STATE_RUNNING
                run = run_pb2.Run(name=request.name, revision=revision, state=state)
                yield pipeline_service_pb2.WatchRunResponse(run=run)
        if error is not None:
            context.abort(error, "scripted")


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedWatch, str]]:
    servicer = ScriptedWatch([])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)
