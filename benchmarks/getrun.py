"""GetRun through the full server (servicer, controller, SQLite store) against a bare
grpc.aio service answering with the same message, from the same client at the same
concurrency; servers alternate over several repetitions and the medians are compared.
Also the full server with tracing and metrics on (informational)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from benchmarks.harness import ChildServer, Load, closed_loop, median_load, sample_run
from benchmarks.report import Figure
from skit.pipelines.v1 import pipeline_service_pb2

CONCURRENCY = 32
SECONDS = 2.0
REPETITIONS = 5
TARGET = 0.7


async def _get(stub, n: int) -> None:
    await stub.GetRun(pipeline_service_pb2.GetRunRequest(name=sample_run().name), timeout=10)


def _measure(kind: str, home: Path) -> Load:
    with ChildServer(kind, home) as server:
        return asyncio.run(
            closed_loop(
                server.address,
                _get,
                concurrency=CONCURRENCY,
                seconds=SECONDS,
                server_pid=server.pid,
            )
        )


def _describe(load: Load) -> str:
    return (
        f"{load.throughput:,.0f}/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms,"
        f" server CPU {load.server_cpu_per_call * 1e6:.0f} us/call"
    )


def run() -> list[Figure]:
    loads: dict[str, list[Load]] = {"bare": [], "full": [], "full+telemetry": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(REPETITIONS):
            for kind in loads:
                loads[kind].append(_measure(kind, Path(tmp) / f"{kind}-{rep}"))
    bare, full, traced = (median_load(loads[kind]) for kind in loads)
    errors = sum(load.errors for kind in loads for load in loads[kind])
    ratio = full.throughput / bare.throughput
    traced_ratio = traced.throughput / bare.throughput
    return [
        Figure(
            name=f"GetRun throughput, {CONCURRENCY} concurrent calls",
            value=full.throughput,
            unit="calls/s",
            baseline=bare.throughput,
            detail=f"{ratio:.2f} x bare; full server {_describe(full)}; bare grpc.aio"
            f" {_describe(bare)} (median of {REPETITIONS} x {SECONDS:g} s, {errors} errors)",
            target=f">= {TARGET} x bare",
            met=ratio >= TARGET and errors == 0,
        ),
        Figure(
            name="GetRun throughput with tracing and metrics on",
            value=traced.throughput,
            unit="calls/s",
            baseline=bare.throughput,
            detail=f"{traced_ratio:.2f} x bare; {_describe(traced)} (a span and a latency"
            " measurement per call, no exporter)",
            target="informational",
            met=True,
        ),
    ]
