"""The skit-pipelines-client distribution: built from client/, it holds only the client and
the generated stubs, and works in an environment holding nothing but its dependencies."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Iterable
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
DECLARED = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
# Shipped files: the client's and the generated code's sources, type stubs and markers.
SHIPPED_SUFFIXES = {".py", ".pyi", ".typed"}
PIP_TIMEOUT = 120

# Run in the fresh environment: the whole client stack (grpcio, grpc_status, the stubs) on
# a call that fails without a server. The port is one the test just found free and closed.
PROBE = """
import socket, sys
import grpc
from skit_pipelines_client import AsyncPipelinesClient, PipelinesClient, RPCError

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
with PipelinesClient(f"127.0.0.1:{port}", timeout=10) as client:
    try:
        client.get_run("abc")
    except RPCError as error:
        assert error.code is grpc.StatusCode.UNAVAILABLE, error
    else:
        raise AssertionError("a call without a server succeeded")
for name in ("skit_pipelines", "skit_pipelines_cli", "skit_components"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise AssertionError(f"{name} is importable in the client's environment")
import skit_pipelines_client
print(skit_pipelines_client.__file__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of client/, built from a copy so the checkout gets no build/ or egg-info."""
    work = tmp_path_factory.mktemp("client-wheel")
    source = work / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = work / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=PIP_TIMEOUT,
    )
    (built,) = out.glob("skit_pipelines_client-*.whl")
    return built


def _sources() -> set[str]:
    return {
        path.relative_to(CLIENT_DIR).as_posix()
        for path in CLIENT_DIR.rglob("*")
        if path.is_file()
        and path.suffix in SHIPPED_SUFFIXES
        and "__pycache__" not in path.parts
        and path.parent != CLIENT_DIR
    }


def test_the_wheel_holds_the_client_and_the_generated_stubs_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    files = {name for name in names if ".dist-info/" not in name}
    assert {name.split("/")[0] for name in files} == {"skit", "skit_pipelines_client"}
    assert files == _sources()
    assert {
        "skit/py.typed",
        "skit_pipelines_client/py.typed",
        "skit/pipelines/v1/pipeline_service_pb2.pyi",
        "skit/pipelines/v1/pipeline_service_pb2_grpc.py",
    } <= files


def test_the_wheel_requires_grpc_and_protobuf_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["Name"] == "skit-pipelines-client"
    required = {canonicalize_name(Requirement(r).name) for r in metadata.get_all("Requires-Dist")}
    assert required == DECLARED


def _with_requirements(names: Iterable[str]) -> set[str]:
    """The installed distributions `names` need, theirs included (extras left out)."""
    needed: set[str] = set()
    pending = [canonicalize_name(name) for name in names]
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        for text in importlib.metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return needed


def _copy_distribution(name: str, site_packages: Path) -> None:
    distribution = importlib.metadata.distribution(name)
    for file in distribution.files or ():
        source = Path(str(distribution.locate_file(file)))
        if source.is_file():
            target = site_packages / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_the_wheel_works_with_its_declared_dependencies_alone(wheel: Path, tmp_path: Path) -> None:
    # A venv without system site-packages; the dependencies are copies of the installed
    # distributions (the versions requirements.lock pins), so no index is needed.
    env = tmp_path / "env"
    venv.create(env, with_pip=False, system_site_packages=False)
    python = env / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    assert site_packages != Path(sysconfig.get_path("purelib"))
    for name in sorted(_with_requirements(DECLARED)):
        _copy_distribution(name, site_packages)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=PIP_TIMEOUT,
    )
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert check.returncode == 0, check.stdout + check.stderr

    # -I: neither PYTHONPATH, the user's site-packages nor the working directory count.
    probe = subprocess.run(
        [str(python), "-I", "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(site_packages)
