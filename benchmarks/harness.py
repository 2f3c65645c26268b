"""Shared pieces of the service benchmarks: a realistic run, the full server on SQLite with
a backend that executes nothing, a bare grpc.aio server answering with messages of the
same size, servers in child processes, a closed-loop load generator, and RSS."""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from benchmarks.report import percentile
from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc
from skit_pipelines import convert, jsonlog
from skit_pipelines.backends.base import Backend
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Artifact, Pipeline, Run, RunState, Step, StepState
from skit_pipelines.runs import RunController
from skit_pipelines.server import create_grpc_server
from skit_pipelines.store.base import RunStore
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_pipelines.telemetry import Telemetry

SERVICE = "skit.pipelines.v1.PipelineService"
PIPELINE = pipeline_from_spec(
    {
        "pipelineInfo": {"name": "bench"},
        "root": {
            "inputDefinitions": {
                "parameters": {
                    "call_quantity": {"parameterType": "NUMBER_INTEGER", "defaultValue": 200.0},
                    "lang": {"parameterType": "STRING", "defaultValue": "en"},
                    "flow_ids": {"parameterType": "LIST", "defaultValue": []},
                }
            }
        },
    }
)
"""A pipeline with typed parameters; nothing executes it (IdleBackend)."""


class IdleBackend(Backend):
    """Accepts runs and executes nothing: the figures are the API's and the store's."""

    name = "idle"

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        return None

    async def cancel(self, run_id: str) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def sample_run(run_id: str = "bench", steps: int = 6) -> Run:
    """A finished run the size of a real one: parameters, labels, steps with outputs."""
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    return Run(
        id=run_id,
        pipeline=PIPELINE.id,
        pipeline_version=PIPELINE.version,
        parameters={"call_quantity": 200, "lang": "en", "flow_ids": [3, 7, 11]},
        labels={"team": "slu", "requested-by": "reports-service"},
        state=RunState.SUCCEEDED,
        create_time=start,
        update_time=start + timedelta(minutes=3),
        revision=4 * steps + 3,
        start_time=start,
        end_time=start + timedelta(minutes=3),
        steps=tuple(
            Step(
                name=f"step-{i}",
                component=f"comp-step-{i}",
                image=f"skit-pipelines/step-{i}:0.1.{i}",
                state=StepState.SUCCEEDED,
                start_time=start + timedelta(seconds=20 * i),
                end_time=start + timedelta(seconds=20 * i + 15),
                output_artifacts=(
                    Artifact(
                        name="out",
                        uri=f"file:///srv/skit/artifacts/runs/{run_id}/step-{i}/out",
                        sha256="ab" * 32,
                        size_bytes=123_456,
                    ),
                ),
                output_parameters={"rows": 200 + i},
            )
            for i in range(steps)
        ),
        outputs=(Artifact(name="calls", uri=f"file:///srv/skit/artifacts/runs/{run_id}/calls"),),
        output_parameters={"call_count": 200},
        request_id="7d1c6f0e-2b1a-4c55-9d7e-1f2a3b4c5d6e",
        creator="reports-service",
        backend="local",
    )


@dataclass
class FullServer:
    server: grpc.aio.Server
    port: int
    store: RunStore
    controller: RunController

    async def stop(self) -> None:
        await self.server.stop(None)
        await self.store.close()


async def start_full_server(
    home: Path,
    *,
    runs: Sequence[Run] = (),
    telemetry: Telemetry | None = None,
    store: RunStore | None = None,
) -> FullServer:
    """The real servicer, controller and store (SQLite under `home` unless `store` is
    given) behind the real gRPC server, with an IdleBackend."""
    store = store or SqliteRunStore(home / "runs.db")
    for run in runs:
        await store.create_run(run)
    controller = RunController(
        store,
        Catalog({PIPELINE.id: PIPELINE}),
        IdleBackend(),
        max_streams_per_principal=1_000_000,
        observer=telemetry,
    )
    server, port, _ = await create_grpc_server(
        controller, ServerConfig(port=0, home=home), telemetry
    )
    await server.start()
    return FullServer(server, port, store, controller)


async def start_bare_server(run: Run) -> tuple[grpc.aio.Server, int]:
    """A plain grpc.aio service with PipelineService's GetRun and CreateRun: it parses the
    request and answers with `run` (the message the full server would send), nothing else."""
    message = convert.run(run)

    async def get_run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return message

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            get_run,
            request_deserializer=request_class.FromString,
            response_serializer=type(message).SerializeToString,
        )
        for name, request_class in (
            ("GetRun", pipeline_service_pb2.GetRunRequest),
            ("CreateRun", pipeline_service_pb2.CreateRunRequest),
        )
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _telemetry_without_exporters() -> Telemetry:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    # Spans are made and dropped: the cost of instrumentation, not of a collector.
    return Telemetry(
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )


async def _open_store(home: Path, store_url: str) -> RunStore:
    if not store_url:
        return SqliteRunStore(home / "runs.db")
    from skit_pipelines.store.postgres import PostgresRunStore

    return await PostgresRunStore.open(store_url)


def _serve_child(kind: str, home: str, store_url: str, ports: Any, stop: Any) -> None:
    # Like a real server, it logs (JSON lines), though nobody reads them here.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
    jsonlog.configure()

    async def main() -> None:
        stopper: Callable[[], Awaitable[None]]
        if kind == "bare":
            server, port = await start_bare_server(sample_run())
            stopper = functools.partial(server.stop, None)
        else:
            full = await start_full_server(
                Path(home),
                runs=[sample_run()],
                store=await _open_store(Path(home), store_url),
                telemetry=_telemetry_without_exporters() if kind == "full+telemetry" else None,
            )
            port, stopper = full.port, full.stop
        # Both as `skit-pipelines serve` runs once started: its start-up heap frozen out of
        # the collector, so full collections walk only what calls allocate.
        gc.freeze()
        ports.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await stopper()

    asyncio.run(main())


class ChildServer:
    """A server in a child process, so the load generator does not share its event loop:
    "bare", "full" or "full+telemetry" (tracing and metrics on, no exporters); the full
    ones on SQLite under `home`, or on the PostgreSQL database at `store_url`."""

    def __init__(self, kind: str, home: Path, store_url: str = "") -> None:
        context = multiprocessing.get_context("spawn")
        self._ports, self._stop = context.Queue(), context.Event()
        self._process = context.Process(
            target=_serve_child,
            args=(kind, str(home), store_url, self._ports, self._stop),
            daemon=True,
        )
        self.address = ""

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def __enter__(self) -> ChildServer:
        self._process.start()
        self.address = f"127.0.0.1:{self._ports.get(timeout=60)}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()


@dataclass(frozen=True)
class Load:
    """What a closed-loop load run measured."""

    calls: int
    seconds: float
    latencies: Sequence[float]
    errors: int
    server_cpu_per_call: float = float("nan")
    """CPU seconds the server process spent per call (warm-up included): unlike
    throughput, barely moved by other processes competing for the machine."""

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


async def closed_loop(
    address: str,
    call: Callable[[pipeline_service_pb2_grpc.PipelineServiceStub, int], Awaitable[Any]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
    channels: int = 4,
    server_pid: int | None = None,
) -> Load:
    """`concurrency` workers each calling `call(stub, n)` back to back for `seconds`
    (after `warmup`), spread over `channels` connections; with `server_pid`, also the
    server's CPU time per call."""
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    stubs = [pipeline_service_pb2_grpc.PipelineServiceStub(c) for c in opened]
    latencies: list[float] = []
    errors = 0
    counter = 0
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + seconds

    async def worker(index: int) -> None:
        nonlocal errors, counter
        stub = stubs[index % channels]
        while (now := time.perf_counter()) < end:
            counter += 1
            try:
                await call(stub, counter)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        cpu = cpu_seconds(server_pid) - cpu_before if server_pid else float("nan")
    finally:
        for channel in opened:
            await channel.close()
    return Load(len(latencies), seconds, latencies, errors, cpu / counter)


def median_load(loads: Sequence[Load]) -> Load:
    """The repetition with the median throughput."""
    return sorted(loads, key=lambda load: load.throughput)[len(loads) // 2]


_CPUCLOCK_SCHED = 2
"""Linux's encoding of a process's CPU-time clock id: `((~pid) << 3) | CPUCLOCK_SCHED`, what
clock_getcpuclockid(3) returns (include/linux/posix-timers.h); Python does not wrap it."""


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far, all its threads' (exited ones included), to the
    nanosecond: its CPU-time clock. /proc's utime and stime count whole clock ticks (10 ms),
    as much as a 100-watcher fan-out's deliveries take in all."""
    try:
        return time.clock_gettime(((~pid) << 3) | _CPUCLOCK_SCHED)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
