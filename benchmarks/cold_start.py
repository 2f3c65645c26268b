"""Server cold start: from starting `skit-pipelines serve` (a new process) to health
SERVING, against a bare grpc.aio server with health in a new process (the interpreter and
gRPC floor), alternately (medians of several repetitions), both with their modules'
bytecode compiled. Also, for information, the time to the first answered ListRuns (a
SERVING that left the service's work to the first call would show there), a start that
has to compile the pipelines (no IR cache yet), and both servers started with this
environment's bytecode setting."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.real_server import SERVER_ENV
from benchmarks.report import Figure, spread
from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc

REPETITIONS = 9
PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 2.0
"""The target: at most this many times the bare server's start, on a warm home."""
BARE_SERVER = """
import asyncio, sys
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()

asyncio.run(main())
"""
_PORT_POLL_SECONDS = 0.002
_START_TIMEOUT_SECONDS = 60.0
"""Longest a start may take, the pipelines compiled included."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Start:
    serving: float
    """Seconds from starting the process to health SERVING."""
    first_list: float | None
    """Seconds from starting the process to the first ListRuns answered (None: not asked)."""


def _time_to_serving(
    command: list[str],
    port: int,
    log: Path,
    *,
    list_runs: bool,
    env: Mapping[str, str] | None = None,
) -> Start:
    """Waits for the port to accept a TCP connection, then watches health on one channel.

    Polling health over a channel that retries would notice SERVING late and unevenly:
    gRPC backs off after each refused connection (10-100 ms late here with the shortest
    backoff it takes), and a server that listens during its whole start (ours binds
    before building the application) is reached sooner than one that binds just before
    SERVING (the bare server). Each server is noticed within a few ms this way.
    """
    started = time.perf_counter()
    with log.open("a") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited {process.returncode}; see {log}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(_PORT_POLL_SECONDS)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=_START_TIMEOUT_SECONDS, wait_for_ready=True
            )
            try:
                for response in watch:
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        break
            except grpc.RpcError:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited {process.returncode}; see {log}"
                    ) from None
                raise
            serving = time.perf_counter() - started
            watch.cancel()
            if not list_runs:
                return Start(serving, None)
            pipeline_service_pb2_grpc.PipelineServiceStub(channel).ListRuns(
                pipeline_service_pb2.ListRunsRequest(page_size=1), timeout=30
            )
            return Start(serving, time.perf_counter() - started)
    finally:
        process.terminate()
        process.wait(30)


def _serve(home: Path, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "skit_pipelines_cli", "serve"),
        *("--port", str(port), "--home", str(home)),
    ]


def _bare(home: Path, port: int) -> list[str]:
    return [sys.executable, "-c", BARE_SERVER, str(port)]


def _alternate(
    home: Path, log: Path, env: Mapping[str, str] | None, *, repetitions: int = REPETITIONS
) -> tuple[list[Start], list[Start]]:
    """Starts of the bare server and of ours, alternately."""
    ours: list[Start] = []
    bare: list[Start] = []
    for _ in range(repetitions):
        port = _free_port()
        bare.append(_time_to_serving(_bare(home, port), port, log, list_runs=False, env=env))
        port = _free_port()
        ours.append(
            _time_to_serving(
                _serve(home, port),
                port,
                log,
                list_runs=True,
                env={**(os.environ if env is None else env), **SERVER_ENV},
            )
        )
    return ours, bare


def _bytecode_cached(pycache: Path) -> dict[str, str]:
    """The environment of a start that finds its modules compiled, as an installed package
    has them (pip compiles them at install; the deploy image installs the service so) and
    as a checkout has them once run, unless PYTHONDONTWRITEBYTECODE is set. Where it is
    set, the ~15k lines of the checkout that the service imports are compiled again at
    every start, while the bare server's modules, all installed, never are: the headline
    compares both servers compiled, in a cache of their own."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _starts(ours: list[Start], bare: list[Start]) -> tuple[float, float, str]:
    ours_s = statistics.median(start.serving for start in ours)
    bare_s = statistics.median(start.serving for start in bare)
    first_list_s = statistics.median(s.first_list for s in ours if s.first_list is not None)
    detail = (
        f"{ours_s / bare_s:.2f} x bare; skit-pipelines serve {ours_s:.2f} s (spread"
        f" {spread([s.serving for s in ours])} s; compiled IR cached under the home"
        f" directory) vs a bare grpc.aio server with health {bare_s:.2f} s (spread"
        f" {spread([s.serving for s in bare])} s); first ListRuns answered"
        f" {first_list_s:.2f} s after the start (spread"
        f" {spread([s.first_list for s in ours if s.first_list is not None])} s)"
    )
    return ours_s, bare_s, detail


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home, log = tmp / "home", tmp / "server.log"
        compiled = _bytecode_cached(tmp / "pycache")
        # The very first start also generates the demo databases and compiles the modules
        # of both servers: not what is measured.
        for command in (_serve, _bare):
            port = _free_port()
            _time_to_serving(command(home, port), port, log, list_runs=False, env=compiled)
        uncached = []
        for _ in range(2):
            shutil.rmtree(home / "cache", ignore_errors=True)
            port = _free_port()
            uncached.append(
                _time_to_serving(_serve(home, port), port, log, list_runs=False, env=compiled)
            )
        ours, bare = _alternate(home, log, compiled)
        ours_here, bare_here = _alternate(home, log, None)
    ours_s, bare_s, detail = _starts(ours, bare)
    ratio = ours_s / bare_s
    here_s, here_bare_s, here_detail = _starts(ours_here, bare_here)
    pipelines = sum(1 for p in (PROJECT_ROOT / "pipelines").glob("*.py") if p.name[0] != "_")
    recompiles = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    return [
        Figure(
            name="Server cold start to SERVING",
            value=ours_s,
            unit="s",
            baseline=bare_s,
            detail=f"{detail}; both servers with their modules' bytecode compiled, as an"
            " installed package has it (PYTHONPYCACHEPREFIX); a start that compiles the"
            f" {pipelines} pipelines first: {statistics.median(s.serving for s in uncached):.2f}"
            f" s (median of {len(uncached)}, demo data already generated)",
            target=f"<= {TARGET_RATIO:g} x bare on a warm home",
            met=ratio <= TARGET_RATIO,
            spread=spread([s.serving for s in ours]),
        ),
        Figure(
            name="Server cold start to SERVING, this environment's bytecode setting",
            value=here_s,
            unit="s",
            baseline=here_bare_s,
            detail=f"{here_detail}; "
            + (
                "PYTHONDONTWRITEBYTECODE is set: the checkout's modules (an editable"
                " install) are compiled again at every start, the bare server's (installed,"
                " compiled by pip) never are"
                if recompiles
                else "modules compiled once, in their __pycache__ folders"
            ),
            target="informational",
            met=True,
            spread=spread([s.serving for s in ours_here]),
        ),
    ]
