"""What the image needs from the service: it runs outside a checkout with its pipelines
and images configured, and a plaintext health-only port answers Kubernetes' grpc probes
while the main port needs TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc
from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.server import SERVICE_NAME, Application, build_application
from skit_pipelines_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
SMALL_PROJECT = ROOT / "tests" / "scaleout" / "project"
"""One quick pipeline (ticker), so the in-process server starts fast."""
START_TIMEOUT_SECONDS = 90.0
CALL_TIMEOUT_SECONDS = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAIN_LOG = "serving PipelineService on "
HEALTH_LOG = "serving health alone on "


def test_the_layout_settings_come_from_the_environment_and_flags(tmp_path: Path) -> None:
    config = ServerConfig.from_env(
        {
            "SKIT_PIPELINES_DIR": "/opt/p",
            "SKIT_IMAGES_DIR": "/opt/i",
            "SKIT_HEALTH_PORT": "8081",
        }
    )
    assert (config.pipelines_root, config.images_root) == (Path("/opt/p"), Path("/opt/i"))
    assert config.health_port == 8081
    # The images lock defaults to the configured images directory's.
    assert config.images_lock_path == Path("/opt/i/images.lock.json")
    # From a checkout, the checkout's directories.
    checkout = ServerConfig(project_root=tmp_path)
    assert (checkout.pipelines_root, checkout.images_root, checkout.health_port) == (
        tmp_path / "pipelines",
        tmp_path / "images",
        None,
    )
    args = build_parser({}).parse_args(
        ["serve", "--pipelines-dir", "p", "--images-dir", "i", "--health-port", "0"]
    )
    assert (args.pipelines_dir, args.images_dir, args.health_port) == (Path("p"), Path("i"), 0)


def _distribution(where: Path) -> tuple[Path, Path]:
    """One pipeline module and the image folders' specs, in two unrelated directories
    (as the image has them), so nothing can be found beside the module."""
    pipelines = where / "share" / "pipelines"
    pipelines.mkdir(parents=True)
    shutil.copy(ROOT / "pipelines" / "random_sample_calls.py", pipelines)
    images = where / "opt" / "components"
    for folder in (ROOT / "images").iterdir():
        if (folder / "component.yaml").is_file():
            (images / folder.name).mkdir(parents=True)
            for name in ("component.yaml", "VERSION"):
                shutil.copy(folder / name, images / folder.name / name)
    return pipelines, images


def _serving_on(log: Path, process: subprocess.Popen[str]) -> tuple[str, str]:
    """(PipelineService address, health-only address) from the server's log."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}:\n{log.read_text()}")
        found: dict[str, str] = {}
        for line in log.read_text().splitlines():
            try:
                message = str(json.loads(line).get("message", ""))
            except ValueError:
                continue
            for prefix in (MAIN_LOG, HEALTH_LOG):
                if message.startswith(prefix):
                    found[prefix] = message.removeprefix(prefix)
        if len(found) == 2:
            return found[MAIN_LOG], found[HEALTH_LOG]
        time.sleep(0.05)
    raise AssertionError(f"serve did not start in {START_TIMEOUT_SECONDS}s:\n{log.read_text()}")


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working directory and an environment with no checkout in sight."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SKIT_PROJECT_ROOT": str(tmp_path / "no-checkout"),
        "SKIT_HOME": str(tmp_path / "home"),
        "SKIT_DEMO_DATA": "0",
    }
    yield cwd, env


def test_serve_runs_outside_a_checkout_with_its_directories_configured(
    tmp_path: Path, outside: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = outside
    pipelines, images = _distribution(tmp_path)
    env["SKIT_IMAGES_DIR"] = str(images)
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skit_pipelines_cli",
                "serve",
                "--port",
                "0",
                "--health-port",
                "0",
                "--pipelines-dir",
                str(pipelines),
            ],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        address, health_address = _serving_on(log, process)
        with grpc.insecure_channel(health_address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        assert answer.status == SERVING
        with grpc.insecure_channel(address) as channel:
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
            listed = stub.ListPipelines(pb.ListPipelinesRequest(), timeout=CALL_TIMEOUT_SECONDS)
        assert [p.name for p in listed.pipelines] == ["pipelines/random-sample-calls"]
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    # Nothing was written where it was started.
    assert list(cwd.iterdir()) == []


def test_serve_outside_a_checkout_names_the_setting_it_needs(
    outside: tuple[Path, dict[str, str]],
) -> None:
    cwd, env = outside
    result = subprocess.run(
        [sys.executable, "-m", "skit_pipelines_cli", "serve", "--port", "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "--pipelines-dir (SKIT_PIPELINES_DIR)" in result.stdout + result.stderr


async def test_a_missing_images_directory_stops_the_start(tmp_path: Path) -> None:
    config = ServerConfig(
        home=tmp_path,
        port=0,
        demo_data=False,
        project_root=SMALL_PROJECT,
        images_dir=tmp_path / "none",
    )
    with pytest.raises(ConfigError, match=r"none is not a directory: set --images-dir"):
        await build_application(config)


def _tls_files(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = where / "server.pem", where / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def _health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_SECONDS
        )
    status: int = answer.status
    return status


@pytest.fixture
async def tls_app(tmp_path: Path) -> AsyncIterator[Application]:
    cert, key = _tls_files(tmp_path)
    app = await build_application(
        ServerConfig(
            home=tmp_path / "home",
            port=0,
            health_port=0,
            demo_data=False,
            project_root=SMALL_PROJECT,
            tls_cert_file=cert,
            tls_key_file=key,
        )
    )
    await app.start()
    yield app
    await app.stop(grace=0)


async def test_the_health_port_answers_in_plaintext_while_the_main_port_needs_tls(
    tls_app: Application,
) -> None:
    assert tls_app.health_only is not None
    health_address = f"127.0.0.1:{tls_app.health_only.port}"
    assert await _health(health_address) == SERVING
    assert await _health(health_address, SERVICE_NAME) == SERVING
    # A probe without TLS gets nowhere on the main port.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _health(f"127.0.0.1:{tls_app.port}")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # Shutting down: the probes see NOT_SERVING, so Kubernetes stops routing to the pod.
    await tls_app.health.enter_graceful_shutdown()
    assert await _health(health_address) == NOT_SERVING
    assert await _health(health_address, SERVICE_NAME) == NOT_SERVING


async def test_without_a_health_port_there_is_no_second_server(tmp_path: Path) -> None:
    app = await build_application(
        ServerConfig(home=tmp_path, port=0, demo_data=False, project_root=SMALL_PROJECT)
    )
    assert app.health_only is None
    await app.start()
    await app.stop(grace=0)
