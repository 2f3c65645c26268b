"""Builds the service's image (deploy/Dockerfile) with buildah and smoke-runs it.

    .venv/bin/python deploy/image.py [--base-image REF] [--no-smoke]

Like `skit-release build --smoke` for a component image: no Docker daemon (buildah with
vfs storage and chroot isolation, as root), the base is the local debootstrap image
(`skit-release base-image`, cached weekly) unless --base-image (SKIT_BASE_IMAGE) names
one. The smoke run starts `serve` inside the image with a plaintext health port and
checks, from outside, that health answers SERVING there and that ListPipelines lists
every pipeline module the image carries. Exit 0 on success, 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
REPOSITORY = "skit-pipelines/server"
"""What the image is called: its OCI title label, and the name the manifests use."""
BUILDAH = ("buildah", "--storage-driver", "vfs")
BUILD_TIMEOUT_SECONDS = 1800
START_TIMEOUT_SECONDS = 120
"""The server compiles every pipeline before it listens: seconds, more on a busy CI."""
CALL_TIMEOUT_SECONDS = 10
STOP_TIMEOUT_SECONDS = 30
_BASE_REF = re.compile(r"localhost/skit-pipelines-base:\S+")


class ImageError(Exception):
    """The image cannot be built or failed its smoke run; the message says why."""


def project_version() -> str:
    """The skit-pipelines package version (pyproject.toml), the image's tag."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


def local_ref(version: str) -> str:
    return f"localhost/{REPOSITORY}:{version}"


def _run(command: Sequence[str], *, timeout: float, what: str) -> str:
    try:
        result = subprocess.run(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ImageError(f"{what}: {command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: timed out after {timeout:.0f}s") from None
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def base_image() -> str:
    """The local debootstrap base the component images build on (made once a week)."""
    release = Path(sys.executable).with_name("skit-release")
    output = _run(
        [str(release), "base-image"], timeout=BUILD_TIMEOUT_SECONDS, what="skit-release base-image"
    )
    found: list[str] = _BASE_REF.findall(output)
    if not found:
        raise ImageError(f"skit-release base-image named no image:\n{output}")
    return found[-1]


def _image_id(ref: str) -> str | None:
    result = subprocess.run(
        [*BUILDAH, "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def build(ref: str, base: str, version: str, dockerfile: Path = DOCKERFILE) -> None:
    """Builds `dockerfile` (the service's by default; the Slack bot's is
    deploy/slackbot/Dockerfile) from the repository root."""
    previous = _image_id(ref)
    output = _run(
        [
            *BUILDAH,
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            # Reproducible, as the component images (skit_release.engines).
            "--timestamp=0",
            "--unsetenv=SOURCE_DATE_EPOCH",
            f"--build-arg=BASE_IMAGE={base}",
            f"--build-arg=VERSION={version}",
            "-t",
            ref,
            "-f",
            str(dockerfile),
            str(ROOT),
        ],
        timeout=BUILD_TIMEOUT_SECONDS,
        what=f"building {ref}",
    )
    print(output.splitlines()[-1] if output else "")
    # vfs keeps every image in full: drop the one this build replaced under the tag.
    if previous and previous != _image_id(ref):
        subprocess.run([*BUILDAH, "rmi", previous], capture_output=True, check=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _pipelines_in(container: str) -> int:
    """How many pipeline modules the container's filesystem carries."""
    mount = Path(_run([*BUILDAH, "mount", container], timeout=60, what="buildah mount").strip())
    try:
        modules = list((mount / "opt/skit-pipelines/pipelines").glob("*.py"))
    finally:
        _run([*BUILDAH, "umount", container], timeout=60, what="buildah umount")
    return sum(not module.name.startswith("_") for module in modules)


def _wait_serving(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    request = health_pb2.HealthCheckRequest()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise ImageError(f"the server exited {server.returncode}:\n{log.read_text()}")
            try:
                answer = stub.Check(request, timeout=CALL_TIMEOUT_SECONDS, wait_for_ready=True)
            except grpc.RpcError:
                # Not listening yet (wait_for_ready gave up after the call timeout).
                continue
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
    raise ImageError(f"health did not answer SERVING in {START_TIMEOUT_SECONDS}s")


def _serve_in(container: str, port: int, health_port: int, log: Path) -> None:
    """Serves from the container until health answers SERVING; ListPipelines must then
    list every pipeline module the container carries."""
    expected = _pipelines_in(container)
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [
                *BUILDAH,
                "run",
                "--isolation",
                "chroot",
                container,
                "--",
                "python3",
                "-m",
                "skit_pipelines_cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--health-port",
                str(health_port),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        _wait_serving(health_port, server, log)
        print(f"health SERVING on the health port after {time.monotonic() - started:.1f}s")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The generated stub is untyped.
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]
            listed = stub.ListPipelines(
                pipeline_service_pb2.ListPipelinesRequest(), timeout=CALL_TIMEOUT_SECONDS
            )
        names = [pipeline.name for pipeline in listed.pipelines]
        if len(names) != expected:
            raise ImageError(f"ListPipelines gave {names}, expected {expected} pipelines")
        print(f"ListPipelines: {len(names)} pipelines")
    finally:
        if server.poll() is None:
            # buildah run ends the server it started when it gets SIGTERM.
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def smoke(ref: str) -> None:
    """Serves from the image (as its non-root user, with its settings) on loopback ports:
    chroot isolation shares this machine's network, so the checks run from outside."""
    container = _run([*BUILDAH, "from", "--pull=never", ref], timeout=120, what="buildah from")
    name = container.strip().splitlines()[-1]
    try:
        with tempfile.TemporaryDirectory(prefix="skit-server-smoke-") as tmp:
            _serve_in(name, _free_port(), _free_port(), Path(tmp) / "server.log")
    finally:
        subprocess.run([*BUILDAH, "rm", name], capture_output=True, check=False)


def check_config(ref: str) -> None:
    """The image runs as a numeric non-root user (Kubernetes runAsNonRoot checks it)."""
    user = _run(
        [*BUILDAH, "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}", ref],
        timeout=60,
        what="buildah inspect",
    ).strip()
    if not user.isdigit() or int(user) == 0:
        raise ImageError(f"{ref} runs as {user!r}, not a numeric non-root user")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-image",
        default=os.environ.get("SKIT_BASE_IMAGE"),
        help="BASE_IMAGE build argument (SKIT_BASE_IMAGE; default: the local debootstrap base)",
    )
    parser.add_argument("--no-smoke", action="store_true", help="build only")
    args = parser.parse_args(argv)
    version = project_version()
    ref = local_ref(version)
    try:
        started = time.monotonic()
        base = args.base_image or base_image()
        build(ref, base, version)
        print(f"built {ref} on {base} in {time.monotonic() - started:.0f}s")
        check_config(ref)
        if not args.no_smoke:
            started = time.monotonic()
            smoke(ref)
            print(f"smoke run of {ref} passed in {time.monotonic() - started:.0f}s")
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
