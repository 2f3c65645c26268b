"""`skit-pipelines serve` as a subprocess for tests: started on port 0 with its JSON log in
its home, found by the address its "serving" line names, killed or stopped like a real one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from skit.pipelines.v1 import pipeline_service_pb2_grpc

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
_SERVING = "serving PipelineService on "
_POLL_SECONDS = 0.05


@dataclass
class ServeProcess:
    """One running `serve`; its log is `<home>/server.log` (appended to on a restart)."""

    process: subprocess.Popen[str]
    address: str
    home: Path
    log: Path

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def stub(self, channel: grpc.aio.Channel) -> pipeline_service_pb2_grpc.PipelineServiceStub:
        # The generated *_pb2_grpc module has no annotations.
        return pipeline_service_pb2_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]

    def messages(self) -> list[str]:
        return [str(entry.get("message", "")) for entry in _entries(self.log.read_text())]

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def stop(self) -> int:
        """Graceful (SIGTERM); the exit code, 0 when it had already ended."""
        if self.process.poll() is not None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Launched:
    """A `serve` started but not yet serving: several start together, then each is awaited."""

    process: subprocess.Popen[str]
    home: Path
    log: Path
    offset: int
    """Where this start's lines begin in the log (earlier starts of the home come before)."""

    def serving(self, timeout: float = START_TIMEOUT_SECONDS) -> ServeProcess:
        """Waits for this start's "serving" line; fails with the log if it exits or hangs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited {self.process.returncode}:\n{self.log.read_text()}"
                )
            for entry in _entries(self.log.read_text()[self.offset :]):
                message = str(entry.get("message", ""))
                if message.startswith(_SERVING):
                    return ServeProcess(
                        self.process, message.removeprefix(_SERVING), self.home, self.log
                    )
            time.sleep(_POLL_SECONDS)
        raise AssertionError(f"server did not start in {timeout:g}s:\n{self.log.read_text()}")


def launch(home: Path, *flags: str, env: Mapping[str, str] | None = None) -> Launched:
    """Starts `serve --port 0 --home HOME FLAGS` with the test's environment plus `env`."""
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
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    return Launched(process, home, log, offset)


def _entries(text: str) -> list[dict[str, object]]:
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
