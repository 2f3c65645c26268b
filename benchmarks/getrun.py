"""GetRun through the full server (servicer, controller, SQLite store) against a bare
grpc.aio service answering with the same message, with the same 32 concurrent calls
spread over 1, 2 and 3 client processes; servers alternate over several repetitions and
the medians are compared. Server CPU per call comes from /proc. Also the full server with
tracing and metrics on, from one process (informational)."""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import ChildServer, Load, closed_loop, cpu_seconds, sample_run
from benchmarks.report import Figure, spread
from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc

CONCURRENCY = 32
"""Calls in flight in all client processes together."""
SECONDS = 2.0
WARMUP_SECONDS = 0.5
REPETITIONS = 5
DEFAULT_PROCESSES = (1, 2, 3)
TARGET_THROUGHPUT = 0.9
TARGET_P99 = 1.5
START_TIMEOUT_SECONDS = 60.0


async def _get(stub: pipeline_service_pb2_grpc.PipelineServiceStub, n: int) -> None:
    await stub.GetRun(pipeline_service_pb2.GetRunRequest(name=sample_run().name), timeout=10)


def _client(address: str, concurrency: int, ready: Any, start: Any, results: Any) -> None:
    ready.release()
    start.wait(START_TIMEOUT_SECONDS)
    results.put(
        asyncio.run(
            closed_loop(
                address, _get, concurrency=concurrency, seconds=SECONDS, warmup=WARMUP_SECONDS
            )
        )
    )


def _measure(kind: str, home: Path, processes: int) -> Load:
    """One load run of `processes` client processes against a new server of `kind`."""
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Semaphore(0), context.Event(), context.Queue()
    shares = [CONCURRENCY // processes + (i < CONCURRENCY % processes) for i in range(processes)]
    with ChildServer(kind, home) as server:
        clients = [
            context.Process(
                target=_client, args=(server.address, share, ready, start, results), daemon=True
            )
            for share in shares
        ]
        for client in clients:
            client.start()
        for _ in clients:
            ready.acquire(timeout=START_TIMEOUT_SECONDS)
        cpu_before = cpu_seconds(server.pid)
        start.set()
        loads: list[Load] = [results.get(timeout=START_TIMEOUT_SECONDS) for _ in clients]
        cpu = cpu_seconds(server.pid) - cpu_before
        for client in clients:
            client.join(30)
    latencies = [x for load in loads for x in load.latencies]
    calls = sum(load.calls for load in loads)
    # Every call, warm-up included, cost the server CPU; the latencies are the measured ones.
    all_calls = calls * (SECONDS + WARMUP_SECONDS) / SECONDS
    return Load(
        calls=calls,
        seconds=SECONDS,
        latencies=latencies,
        errors=sum(load.errors for load in loads),
        server_cpu_per_call=cpu / max(all_calls, 1),
    )


def _describe(load: Load) -> str:
    return (
        f"{load.throughput:,.0f}/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms,"
        f" server CPU {load.server_cpu_per_call * 1e6:.0f} us/call"
    )


def _median(loads: Sequence[Load]) -> Load:
    return sorted(loads, key=lambda load: load.throughput)[len(loads) // 2]


def _median_p99(loads: Sequence[Load]) -> float:
    return sorted(load.p99_ms for load in loads)[len(loads) // 2]


def run(processes: Sequence[int] = DEFAULT_PROCESSES) -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in processes:
            loads: dict[str, list[Load]] = {"bare": [], "full": []}
            for rep in range(REPETITIONS):
                for kind in loads:
                    loads[kind].append(_measure(kind, Path(tmp) / f"{kind}-{count}-{rep}", count))
            bare, full = _median(loads["bare"]), _median(loads["full"])
            ratio = full.throughput / bare.throughput
            p99_ratio = _median_p99(loads["full"]) / _median_p99(loads["bare"])
            errors = sum(load.errors for kind in loads for load in loads[kind])
            figures.append(
                Figure(
                    name=f"GetRun, {CONCURRENCY} concurrent calls from {count} client"
                    f" process{'es' if count > 1 else ''}",
                    value=full.throughput,
                    unit="calls/s",
                    baseline=bare.throughput,
                    detail=f"{ratio:.2f} x bare throughput, p99 {p99_ratio:.2f} x bare"
                    f" (median p99 {_median_p99(loads['full']):.1f} vs"
                    f" {_median_p99(loads['bare']):.1f} ms, spread"
                    f" {spread([load.p99_ms for load in loads['full']])} vs"
                    f" {spread([load.p99_ms for load in loads['bare']])} ms); full server"
                    f" {_describe(full)}; bare grpc.aio {_describe(bare)} (median of"
                    f" {REPETITIONS} x {SECONDS:g} s, {errors} errors)",
                    target=f">= {TARGET_THROUGHPUT} x bare throughput, p99 <= {TARGET_P99} x bare",
                    met=ratio >= TARGET_THROUGHPUT and p99_ratio <= TARGET_P99 and errors == 0,
                    spread=spread([load.throughput for load in loads["full"]]),
                )
            )
        traced = [_measure_traced(Path(tmp) / f"traced-{rep}") for rep in range(REPETITIONS)]
    median_traced = _median(traced)
    figures.append(
        Figure(
            name="GetRun with tracing and metrics on, 1 client process",
            value=median_traced.throughput,
            unit="calls/s",
            baseline=None,
            detail=f"{_describe(median_traced)} (a span and a latency measurement per call,"
            " no exporter)",
            target="informational",
            met=True,
            spread=spread([load.throughput for load in traced]),
        )
    )
    return figures


def _measure_traced(home: Path) -> Load:
    with ChildServer("full+telemetry", home) as server:
        return asyncio.run(
            closed_loop(
                server.address,
                _get,
                concurrency=CONCURRENCY,
                seconds=SECONDS,
                server_pid=server.pid,
            )
        )
