"""Several `skit-pipelines serve` processes sharing one PostgreSQL database (and S3 through
moto's server): the replicas of a scaled-out deployment, on one machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import boto3
import grpc
import pytest

from skit.pipelines.v1 import pipeline_service_pb2_grpc

PROJECT = Path(__file__).resolve().parent / "project"
"""A project root with one slow pipeline (ticker), so replicas start fast."""


@dataclass
class Replica:
    process: subprocess.Popen[str]
    address: str
    log: Path

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def stub(self, channel: grpc.aio.Channel) -> pipeline_service_pb2_grpc.PipelineServiceStub:
        return pipeline_service_pb2_grpc.PipelineServiceStub(channel)

    def messages(self) -> list[str]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line).get("message", ""))
            except ValueError:
                continue
        return lines

    def kill(self) -> None:
        """Ends the process abruptly, as a crash would."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """Graceful (SIGTERM); the exit code, 0 when it had already ended."""
        if self.process.poll() is not None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _address(process: subprocess.Popen[str], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"replica exited {process.returncode}:\n{log.read_text()}")
        for line in log.read_text().splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if message.startswith("serving PipelineService on "):
                return message.removeprefix("serving PipelineService on ")
        time.sleep(0.05)
    raise AssertionError(f"replica did not start in {timeout}s:\n{log.read_text()}")


@pytest.fixture
def start_replicas(tmp_path: Path, aws_env: dict[str, str]) -> Iterator[object]:
    """start_replicas(n, *serve_flags, env=[{...} per replica]) -> [Replica]: n processes
    started together."""
    started: list[Replica] = []

    def start(count: int, *flags: str, env: Sequence[Mapping[str, str]] = ()) -> list[Replica]:
        pending = []
        for index in range(count):
            home = tmp_path / f"replica-{len(started) + len(pending)}"
            home.mkdir()
            log = home / "server.log"
            with log.open("w") as sink:
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
                        **aws_env,
                        "PYTHONUNBUFFERED": "1",
                        "SKIT_PROJECT_ROOT": str(PROJECT),
                        "SKIT_DEMO_DATA": "0",
                        **(env[index] if index < len(env) else {}),
                    },
                )
            pending.append((process, log))
        replicas = [Replica(p, _address(p, log, timeout=60), log) for p, log in pending]
        started.extend(replicas)
        return replicas

    yield start
    for replica in started:
        if replica.stop() != 0:
            print(replica.log.read_text())


@pytest.fixture
def aws_env(tmp_path: Path) -> dict[str, str]:
    """The standard AWS configuration the replicas read (environment only)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: dict[str, str]) -> str:
    name = f"scaleout-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
        region_name=aws_env["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=name)
    return name
