"""WatchRun fan-out: N concurrent watchers of one run; delay from a state change to its
delivery, and server memory per watcher.

Each measurement runs its server in a new process: the full one (real gRPC server,
servicer, controller, SQLite store, a backend that executes nothing) or, as the baseline, a
bare grpc.aio WatchRun with the same server options that hands every stream the same
message when an asyncio.Event fires. The watchers run in child processes with their own
event loops (several for 10,000), so the client side does not steal the server's loop.
Each change stamps its wall-clock time into the run, and each watcher records receive time
minus that stamp.
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from benchmarks.harness import SERVICE, rss_bytes, sample_run, start_full_server
from benchmarks.report import Figure, percentile
from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc
from skit_pipelines import convert
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Run, RunState
from skit_pipelines.server import _grpc_options

STREAMS_PER_CHANNEL = 100
TARGET_P99_MS = 100.0


@dataclass(frozen=True)
class Scenario:
    watchers: int
    processes: int
    """Client processes the watchers are spread over."""
    changes: int
    spacing: float
    """Seconds between changes: enough for one to reach everybody before the next."""
    repetitions: int


SCENARIOS = (
    Scenario(watchers=1000, processes=1, changes=10, spacing=0.3, repetitions=3),
    Scenario(watchers=10_000, processes=4, changes=5, spacing=2.0, repetitions=1),
)


@dataclass(frozen=True)
class Result:
    delays: list[float]
    expected: int
    errors: list[str]
    rss_per_watcher: float
    cpu_per_message: float
    """Server CPU seconds per message delivered: unlike delays, barely moved by other
    processes competing for the machine."""

    @property
    def p50_ms(self) -> float:
        return percentile(self.delays, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.delays, 99) * 1000

    @property
    def complete(self) -> bool:
        return len(self.delays) == self.expected and not self.errors


def _watch_in_child(address: str, run_name: str, watchers: int, ready: Any, results: Any) -> None:
    async def main() -> None:
        channels = [
            grpc.aio.insecure_channel(address)
            for _ in range(math.ceil(watchers / STREAMS_PER_CHANNEL))
        ]
        delays: list[float] = []
        errors: list[str] = []
        started = 0
        first = asyncio.Event()

        async def watch(index: int) -> None:
            nonlocal started
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channels[index % len(channels)])
            request = pipeline_service_pb2.WatchRunRequest(name=run_name)
            try:
                async for message in stub.WatchRun(request):
                    stamp = message.run.output_parameters.fields.get("stamp")
                    if stamp is None:
                        started += 1
                        if started == watchers:
                            first.set()
                        continue
                    delays.append(time.time() - stamp.number_value)
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")
                started += 1
                if started == watchers:
                    first.set()

        tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
        await first.wait()
        ready.release()
        await asyncio.gather(*tasks)
        results.put((delays, errors))
        for channel in channels:
            await channel.close()

    asyncio.run(main())


def _stamped(run: Run, i: int, last: bool) -> Run:
    return replace(
        run,
        state=RunState.SUCCEEDED if last else RunState.RUNNING,
        revision=run.revision + 1,
        output_parameters={"stamp": time.time(), "i": i},
    )


class _BareFanout:
    """A plain grpc.aio WatchRun: the current message, then every newer one; each change
    wakes every stream through one asyncio.Event."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._message = pipeline_service_pb2.WatchRunResponse(run=convert.run(run))
        self._changed = asyncio.Event()

    async def watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        sent = 0
        while True:
            run, message, changed = self._run, self._message, self._changed
            if run.revision > sent:
                sent = run.revision
                yield message
                if run.state.terminal:
                    return
            else:
                await changed.wait()

    async def change(self, i: int, last: bool) -> None:
        self._run = _stamped(self._run, i, last)
        self._message = pipeline_service_pb2.WatchRunResponse(run=convert.run(self._run))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


async def _bare_server(
    home: Path, run: Run
) -> tuple[int, Callable[[int, bool], Awaitable[None]], Callable[[], Awaitable[None]]]:
    fanout = _BareFanout(run)
    handler = grpc.unary_stream_rpc_method_handler(
        fanout.watch,
        request_deserializer=pipeline_service_pb2.WatchRunRequest.FromString,
        response_serializer=pipeline_service_pb2.WatchRunResponse.SerializeToString,
    )
    # The full server's settings, so that only our code differs.
    server = grpc.aio.server(options=_grpc_options(ServerConfig()))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"WatchRun": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return port, fanout.change, lambda: server.stop(None)


async def _full_server(
    home: Path, run: Run
) -> tuple[int, Callable[[int, bool], Awaitable[None]], Callable[[], Awaitable[None]]]:
    full = await start_full_server(home, runs=[run])

    async def change(i: int, last: bool) -> None:
        state = RunState.SUCCEEDED if last else RunState.RUNNING
        await full.store.update_run(
            run.id,
            lambda r: replace(r, state=state, output_parameters={"stamp": time.time(), "i": i}),
        )

    return full.port, change, full.stop


async def _measure(kind: str, scenario: Scenario, home: Path) -> Result:
    run = replace(sample_run("fanout"), state=RunState.RUNNING, output_parameters={}, revision=1)
    start = _bare_server if kind == "bare" else _full_server
    port, change, stop = await start(home, run)
    context = multiprocessing.get_context("spawn")
    ready, results = context.Semaphore(0), context.Queue()
    per_process = scenario.watchers // scenario.processes
    children = [
        context.Process(
            target=_watch_in_child,
            args=(f"127.0.0.1:{port}", run.name, per_process, ready, results),
        )
        for _ in range(scenario.processes)
    ]
    try:
        gc.collect()
        rss_before = rss_bytes()
        for child in children:
            child.start()
        for _ in children:
            while not await asyncio.to_thread(ready.acquire, True, 0.5):
                if not all(child.is_alive() for child in children):
                    raise RuntimeError("a watcher process died")
        gc.collect()
        rss_per_watcher = (rss_bytes() - rss_before) / scenario.watchers
        cpu_before = time.process_time()
        for i in range(scenario.changes):
            await change(i, i == scenario.changes - 1)
            await asyncio.sleep(scenario.spacing)
        delays: list[float] = []
        errors: list[str] = []
        for _ in children:
            got_delays, got_errors = await asyncio.to_thread(results.get, True, 300)
            delays.extend(got_delays)
            errors.extend(got_errors)
        cpu = time.process_time() - cpu_before
        for child in children:
            await asyncio.to_thread(child.join, 30)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
        await stop()
    expected = per_process * scenario.processes * scenario.changes
    return Result(delays, expected, errors, rss_per_watcher, cpu / max(len(delays), 1))


def _measure_in_child(kind: str, scenario: Scenario, home: Path, results: Any) -> None:
    results.put(asyncio.run(_measure(kind, scenario, home)))


def _measure_fresh(kind: str, scenario: Scenario, home: Path) -> Result:
    """`_measure` in a new process: memory freed by an earlier measurement would otherwise
    be reused and hide what the watchers take."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_measure_in_child, args=(kind, scenario, home, results))
    process.start()
    try:
        return results.get(timeout=600)
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()


def _median(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.p99_ms)[len(results) // 2]


def _describe(result: Result) -> str:
    return (
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
        f" {result.rss_per_watcher / 1024:.1f} KiB/watcher,"
        f" server CPU {result.cpu_per_message * 1e6:.0f} us/message,"
        f" delivered {len(result.delays)}/{result.expected}"
        + (f", errors: {result.errors[0]} (x{len(result.errors)})" if result.errors else "")
    )


def run() -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in SCENARIOS:
            measured: dict[str, list[Result]] = {"bare": [], "full": []}
            for rep in range(scenario.repetitions):
                for kind in measured:
                    home = Path(tmp) / f"{kind}-{scenario.watchers}-{rep}"
                    measured[kind].append(_measure_fresh(kind, scenario, home))
            bare, full = _median(measured["bare"]), _median(measured["full"])
            complete = all(r.complete for r in measured["full"])
            if scenario.watchers <= 1000:
                target = f"p99 <= {TARGET_P99_MS:g} ms, every revision delivered"
                met = complete and full.p99_ms <= TARGET_P99_MS
            else:
                target = "held without errors, every revision delivered"
                met = complete
            figures.append(
                Figure(
                    name=f"WatchRun fan-out, {scenario.watchers:,} watchers",
                    value=full.p99_ms,
                    unit="ms p99 delay",
                    baseline=bare.p99_ms,
                    detail=f"full server {_describe(full)}; bare grpc.aio {_describe(bare)}"
                    f" ({scenario.changes} changes {scenario.spacing:g} s apart,"
                    f" {scenario.processes} client process(es), median of"
                    f" {scenario.repetitions})",
                    target=target,
                    met=met,
                )
            )
    return figures
