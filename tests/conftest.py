"""Shared fixtures: a compiled test pipeline, a fake backend, and the real gRPC server."""

# No `from __future__ import annotations`: kfp reads the pipeline signature's real types.

import asyncio
import fcntl
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2
from moto.server import ThreadedMotoServer

from skit.pipelines.v1 import pipeline_service_pb2_grpc
from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import LogLine, Pipeline, Run
from skit_pipelines.runs import RunController
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUF_VERSION = "1.75.0"
BUF_PREFIX = PROJECT_ROOT / ".venv" / "buf"

ECHO_COMPONENT = """
name: Echo
inputs:
- {name: text, type: String}
outputs:
- {name: out, type: Dataset}
implementation:
  container:
    image: skit-pipelines/echo:0.1.0
    command: [python3, -c, "import sys; open(sys.argv[2], 'w').write(sys.argv[1])"]
    args: [{inputValue: text}, {outputPath: out}]
"""


def _compile_typed_pipeline(tmp_dir: Path) -> dict[str, Any]:
    from kfp import compiler, components, dsl

    echo = components.load_component_from_text(ECHO_COMPONENT)

    @dsl.pipeline(name="typed", description="A pipeline with one parameter of each type.")
    def typed(
        greeting: str,
        count: int = 3,
        ratio: float = 0.5,
        flag: bool = False,
        items: list = [1, 2],  # noqa: B006 - kfp reads defaults from the signature
        options: dict = {},  # noqa: B006
    ) -> dsl.Dataset:
        """Echoes a greeting.

        Args:
            greeting: What to say.
            count: How many times.
            ratio: A fraction.
            flag: A switch.
            items: Some numbers.
            options: Free-form settings.
        """
        return echo(text=greeting).outputs["out"]

    path = tmp_dir / "typed.yaml"
    compiler.Compiler().compile(typed, str(path))
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def typed_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return pipeline_from_spec(_compile_typed_pipeline(tmp_path_factory.mktemp("typed")))


class FakeBackend(Backend):
    """Records submissions; tests drive progress through the sink it was started with."""

    name = "fake"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.sinks: dict[str, RunSink] = {}
        self.cancel_completes = True
        self.logs: dict[tuple[str, str], list[LogLine]] = {}

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        self.submitted.append(run.id)
        self.sinks[run.id] = self.sink

    async def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)
        if self.cancel_completes:
            await self.sinks[run_id].run_cancelled(run_id)

    async def shutdown(self) -> None:
        pass

    async def read_logs(self, run: Run, step: str, attempt: int, still_writing):
        lines = self.logs.setdefault((run.id, step), [])
        sent = 0
        while True:
            writing = still_writing()
            for line in lines[sent:]:
                if attempt in (0, line.attempt):
                    yield line
            sent = len(lines)
            if not writing:
                return
            await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def fake_backend_class() -> type[FakeBackend]:
    return FakeBackend


@dataclass
class ServiceHarness:
    controller: RunController
    store: SqliteRunStore
    backend: FakeBackend
    channel: grpc.aio.Channel
    stub: pipeline_service_pb2_grpc.PipelineServiceStub
    server: grpc.aio.Server
    health: Any
    address: str


@pytest.fixture
def service_config(tmp_path: Path) -> ServerConfig:
    """The configuration the `service` fixture serves with; override to change it."""
    return ServerConfig(port=0, home=tmp_path)


@pytest.fixture
async def service(
    tmp_path: Path, typed_pipeline: Pipeline, service_config: ServerConfig
) -> AsyncIterator[ServiceHarness]:
    store = SqliteRunStore(tmp_path / "runs.db")
    backend = FakeBackend()
    controller = RunController(store, Catalog({typed_pipeline.id: typed_pipeline}), backend)
    backend.start(controller)
    server, port, health = await create_grpc_server(controller, service_config)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield ServiceHarness(
            controller=controller,
            store=store,
            backend=backend,
            channel=channel,
            stub=pipeline_service_pb2_grpc.PipelineServiceStub(channel),
            server=server,
            health=health,
            address=address,
        )
    finally:
        await channel.close()
        await server.stop(None)
        await store.close()


@pytest.fixture(scope="session")
def buf() -> Path:
    """The real buf binary, installed from npm into .venv/buf once (no grpcurl here)."""
    binary = BUF_PREFIX / "node_modules" / ".bin" / "buf"
    BUF_PREFIX.mkdir(parents=True, exist_ok=True)
    # Test workers start in parallel: one installs, the others wait for it.
    with (BUF_PREFIX / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is needed to install buf for the end-to-end tests")
            subprocess.run(
                [
                    npm,
                    "install",
                    "--silent",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(BUF_PREFIX),
                    f"@bufbuild/buf@{BUF_VERSION}",
                ],
                check=True,
                timeout=300,
            )
    return binary


# An S3 endpoint (moto's server on 127.0.0.1) and an AWS configuration taken from the
# environment as in production, for the artifact store, the model registry and pipelines.


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The standard AWS configuration, from the environment only (no ~/.aws files)."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_client(s3_endpoint: str, aws_env: None) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name
