"""`skit-pipelines serve` processes to break: killed with SIGKILL, restarted on the same
home, or left without their PostgreSQL database. Modelled on tests/scaleout/conftest.py's
replicas (which a conftest of another directory cannot share)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

FAULTS_PROJECT = Path(__file__).resolve().parent / "project"
"""The `steps` pipeline: three steps that print to their logs and ignore SIGTERM."""

START_TIMEOUT_SECONDS = 60


@dataclass
class Server:
    process: subprocess.Popen[str]
    address: str
    home: Path
    log: Path

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def messages(self) -> list[str]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line).get("message", ""))
            except ValueError:
                continue
        return lines

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """Graceful (SIGTERM); the exit code, 0 when it had already ended."""
        if self.process.poll() is not None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _address(process: subprocess.Popen[str], log: Path, offset: int) -> str:
    """The address from this process's "serving" line (the log may hold earlier starts')."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
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
    raise AssertionError(f"server did not start in {START_TIMEOUT_SECONDS}s:\n{log.read_text()}")


StartServers = Callable[..., list[Server]]


@pytest.fixture
def start_servers(tmp_path: Path) -> Iterator[StartServers]:
    """start_servers(homes, *serve_flags, project=..., env={...}) -> [Server]: one
    process per home, started together; a home used before is started again."""
    started: list[Server] = []

    def start(
        homes: list[Path],
        *flags: str,
        project: Path = FAULTS_PROJECT,
        env: Mapping[str, str] | None = None,
    ) -> list[Server]:
        pending = []
        for home in homes:
            home.mkdir(parents=True, exist_ok=True)
            log = home / "server.log"
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
                        *flags,
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env={
                        **os.environ,
                        "PYTHONUNBUFFERED": "1",
                        "SKIT_PROJECT_ROOT": str(project),
                        "SKIT_DEMO_DATA": "0",
                        **(env or {}),
                    },
                )
            pending.append((process, home, log, offset))
        servers = [
            Server(process, _address(process, log, offset), home, log)
            for process, home, log, offset in pending
        ]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        if server.stop() != 0:
            print(server.log.read_text())
