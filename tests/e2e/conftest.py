"""A real `skit-pipelines serve` process on a free port, driven from outside."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skit_testing.serve import ServeProcess, launch

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningServer(ServeProcess):
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "skit_pipelines_cli", "--server", self.address, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result


def start_server(home: Path, *extra: str, env: dict[str, str] | None = None) -> RunningServer:
    serving = launch(home, *extra, env=env).serving()
    with grpc.insecure_channel(serving.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    return RunningServer(serving.process, serving.address, serving.home, serving.log)


def stop_server(server: RunningServer, timeout: float = 30) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=timeout)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "home")
    try:
        yield running
    finally:
        if stop_server(running) != 0:
            print(running.log.read_text())


@pytest.fixture
def server_control():
    """(start_server, stop_server), for tests that manage the process themselves."""
    return start_server, stop_server
