"""WatchRun fan-out: N concurrent watchers of one run; delay from a state change to delivery.

The server (real gRPC server, SQLite store, a backend that does nothing) runs in this
process; the watchers run in a child process with their own event loop, so the client
side does not steal the server's loop. Each change stamps its wall-clock time into the
run, and each watcher records receive time minus that stamp.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import grpc

from benchmarks.report import Figure, percentile
from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc
from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Pipeline, Run, RunState
from skit_pipelines.runs import RunController
from skit_pipelines.server import create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore

CHANNELS = 8


class _IdleBackend(Backend):
    name = "idle"

    async def submit(self, run: Run, pipeline: Pipeline, sink: RunSink) -> None:
        return None

    async def cancel(self, run_id: str) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def _watch_in_child(address: str, run_name: str, watchers: int, ready, results) -> None:
    async def main() -> None:
        channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
        delays: list[float] = []
        started = 0
        first = asyncio.Event()

        async def watch(index: int) -> None:
            nonlocal started
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channels[index % CHANNELS])
            request = pipeline_service_pb2.WatchRunRequest(name=run_name)
            async for message in stub.WatchRun(request):
                stamp = message.run.output_parameters.fields.get("stamp")
                if stamp is None:
                    started += 1
                    if started == watchers:
                        first.set()
                    continue
                delays.append(time.time() - stamp.number_value)

        tasks = [asyncio.create_task(watch(i)) for i in range(watchers)]
        await first.wait()
        ready.set()
        results_error = None
        try:
            await asyncio.gather(*tasks)
        except Exception as exc:  # reported to the parent
            results_error = repr(exc)
        results.put((delays, results_error))
        for channel in channels:
            await channel.close()

    asyncio.run(main())


async def _run(watchers: int, changes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteRunStore(Path(tmp) / "runs.db")
        controller = RunController(store, Catalog({}), _IdleBackend())
        server, port, _ = await create_grpc_server(controller, ServerConfig(port=0, home=Path(tmp)))
        await server.start()
        now = time.time()
        from datetime import UTC, datetime

        created = datetime.fromtimestamp(now, UTC)
        run = Run(
            id="fanout",
            pipeline="bench",
            pipeline_version="v",
            parameters={},
            labels={},
            state=RunState.RUNNING,
            create_time=created,
            update_time=created,
            revision=1,
        )
        await store.create_run(run)
        context = multiprocessing.get_context("spawn")
        ready, results = context.Event(), context.Queue()
        child = context.Process(
            target=_watch_in_child, args=(f"127.0.0.1:{port}", run.name, watchers, ready, results)
        )
        child.start()
        while not ready.is_set():
            await asyncio.sleep(0.05)
        for i in range(changes):
            state = RunState.SUCCEEDED if i == changes - 1 else RunState.RUNNING
            await store.update_run(
                "fanout",
                lambda r, i=i, state=state: replace(
                    r, state=state, output_parameters={"stamp": time.time(), "i": i}
                ),
            )
            await asyncio.sleep(0.2)
        delays, error = await asyncio.to_thread(results.get, True, 120)
        await asyncio.to_thread(child.join, 30)
        await server.stop(None)
        await store.close()
    expected = watchers * changes
    return {
        "delivered": len(delays),
        "expected": expected,
        "p50_ms": percentile(delays, 50) * 1000,
        "p99_ms": percentile(delays, 99) * 1000,
        "mean_ms": statistics.fmean(delays) * 1000 if delays else float("nan"),
        "error": error,
    }


def run(watchers: int = 1000, changes: int = 10) -> list[Figure]:
    result = asyncio.run(_run(watchers, changes))
    ok = result["delivered"] == result["expected"] and not result["error"]
    return [
        Figure(
            name=f"WatchRun fan-out, {watchers} watchers, {changes} changes",
            value=result["p99_ms"],
            unit="ms p99 delay",
            baseline=None,
            detail=(
                f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"delivered {result['delivered']}/{result['expected']}"
                + (f", error {result['error']}" if result["error"] else "")
            ),
            target="p99 <= 100 ms, every revision delivered",
            met=ok and result["p99_ms"] <= 100,
        )
    ]
