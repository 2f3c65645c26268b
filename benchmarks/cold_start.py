"""Server cold start: from starting `skit-pipelines serve` (a new process) to health
SERVING, against a bare grpc.aio server with health in a new process (the interpreter and
gRPC floor), alternately (medians of several repetitions). Also a start that has to
compile the pipelines (no IR cache yet; informational)."""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.report import Figure, spread

REPETITIONS = 5
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
# Notice a listening server within milliseconds, not after gRPC's default 1 s backoff.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 20),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _time_to_serving(command: list[str], port: int, log: Path) -> float:
    started = time.perf_counter()
    with log.open("a") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=_FAST_RECONNECT) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited {process.returncode}; see {log}")
                try:
                    status = stub.Check(
                        health_pb2.HealthCheckRequest(), timeout=0.5, wait_for_ready=True
                    ).status
                except grpc.RpcError:
                    continue
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - started
                time.sleep(0.005)
    finally:
        process.terminate()
        process.wait(30)


def _serve(home: Path, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "skit_pipelines_cli", "serve"),
        *("--port", str(port), "--home", str(home)),
    ]


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home, log = tmp / "home", tmp / "server.log"
        # The very first start also generates the demo databases: not what is measured.
        first_port = _free_port()
        _time_to_serving(_serve(home, first_port), first_port, log)
        uncached = []
        for _ in range(2):
            shutil.rmtree(home / "cache", ignore_errors=True)
            port = _free_port()
            uncached.append(_time_to_serving(_serve(home, port), port, log))
        ours, bare = [], []
        for _ in range(REPETITIONS):
            port = _free_port()
            bare.append(_time_to_serving([sys.executable, "-c", BARE_SERVER, str(port)], port, log))
            port = _free_port()
            ours.append(_time_to_serving(_serve(home, port), port, log))
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    ratio = ours_s / bare_s
    pipelines = sum(1 for p in (PROJECT_ROOT / "pipelines").glob("*.py") if p.name[0] != "_")
    return [
        Figure(
            name="Server cold start to SERVING",
            value=ours_s,
            unit="s",
            baseline=bare_s,
            detail=f"{ratio:.2f} x bare; skit-pipelines serve {ours_s:.2f} s (spread"
            f" {spread(ours)} s; compiled IR cached under the home"
            f" directory) vs a bare grpc.aio server with health {bare_s:.2f} s (spread"
            f" {spread(bare)} s); a start that"
            f" compiles the {pipelines} pipelines first: {statistics.median(uncached):.2f} s"
            f" (median of {REPETITIONS}, demo data already generated)",
            target=f"<= {TARGET_RATIO:g} x bare on a warm home",
            met=ratio <= TARGET_RATIO,
            spread=spread(ours),
        )
    ]
