"""Several `skit-pipelines serve` processes sharing one PostgreSQL database (and S3 through
moto's server): the replicas of a scaled-out deployment, on one machine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import boto3
import pytest

from skit_testing.serve import ServeProcess, launch

PROJECT = Path(__file__).resolve().parent / "project"
"""A project root with one slow pipeline (ticker), so replicas start fast."""


Replica = ServeProcess


@pytest.fixture
def start_replicas(tmp_path: Path, aws_env: dict[str, str]) -> Iterator[object]:
    """start_replicas(n, *serve_flags, env=[{...} per replica]) -> [Replica]: n processes
    started together."""
    started: list[Replica] = []

    def start(count: int, *flags: str, env: Sequence[Mapping[str, str]] = ()) -> list[Replica]:
        common = {**aws_env, "SKIT_PROJECT_ROOT": str(PROJECT), "SKIT_DEMO_DATA": "0"}
        launched = [
            launch(
                tmp_path / f"replica-{len(started) + index}",
                *flags,
                env={**common, **(env[index] if index < len(env) else {})},
            )
            for index in range(count)
        ]
        replicas = [one.serving() for one in launched]
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
