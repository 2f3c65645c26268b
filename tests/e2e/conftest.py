"""A real `skit-pipelines serve` process on a free port, driven from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    address: str
    home: Path
    log: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "skit_pipelines_cli", "--server", self.address, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result


def _wait_for_address(
    process: subprocess.Popen[str], log: Path, timeout: float, offset: int = 0
) -> str:
    """The address from this process's "serving" line (the log may hold earlier starts')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}:\n{log.read_text()}")
        for line in log.read_text()[offset:].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry.get("message", "")
            if message.startswith("serving PipelineService on "):
                return message.removeprefix("serving PipelineService on ")
        time.sleep(0.1)
    raise AssertionError(f"server did not start in {timeout}s:\n{log.read_text()}")


def start_server(home: Path, *extra: str, env: dict[str, str] | None = None) -> RunningServer:
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    offset = len(log.read_text()) if log.exists() else 0
    with log.open("a") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skit_pipelines_cli",
                "serve",
                "--port",
                "0",
                "--home",
                str(home),
                *extra,
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    address = _wait_for_address(process, log, timeout=60, offset=offset)
    with grpc.insecure_channel(address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    return RunningServer(process=process, address=address, home=home, log=log)


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
