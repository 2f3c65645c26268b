"""WatchRun fan-out during a real executing run, against a bare grpc.aio server pushing the
same bytes to as many streams from the same client processes.

The full server is `skit-pipelines serve` in its own process (SQLite, the local executor,
max_active_runs=1). A gate run occupies the only slot, so the watched run (a chain of
steps that really execute) waits in QUEUED while N watchers, spread over several client
processes, connect and receive its first snapshot. Then the gate is released: the watched
run starts, its steps execute, and every revision fans out to every watcher. Each watcher
records receipt time minus the run's update_time in the message.

The baseline is a bare grpc.aio server in its own process with the same server options:
its streams first get the same first snapshot (the bytes the full server sent), and once
released it publishes the full server's later messages at the same offsets from the
release (several at one instant where the full server wrote them so), each stamped with
the time it is published and serialized once for all its streams.

Server CPU per delivery is the server process's CPU from the release until every watcher
is done, divided by the messages delivered; for the full server, net of the CPU of the
same run executing with one watcher (measured right after).

Held streams: N watchers of a QUEUED run, the server's RSS growth per stream once all of
them hold their first snapshot, and how much of it is given back when they close.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import multiprocessing
import queue
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import grpc

from benchmarks.harness import cpu_seconds, rss_bytes
from benchmarks.real_server import (
    CHAIN_PIPELINE,
    GATE_PIPELINE,
    Driver,
    ServeProcess,
    start_serve,
)
from benchmarks.report import Figure, percentile, spread
from skit.pipelines.v1 import pipeline_service_pb2, run_pb2
from skit_pipelines.config import ServerConfig
from skit_pipelines.server import _grpc_options

WATCH_METHOD = "/skit.pipelines.v1.PipelineService/WatchRun"
DEFAULT_SIZES = (100, 1_000, 5_000)
DEFAULT_HELD = 10_000
CLIENT_PROCESSES = 2
STREAMS_PER_CHANNEL = 100
TARGET_P99_RATIO = 1.2
TARGET_KIB_PER_STREAM = 25.0
TARGET_GIVEN_BACK = 0.9
"""Share of the held streams' RSS growth the server must give back when they close."""
READY_TIMEOUT_SECONDS = 300.0
SETTLE_SECONDS = 1.0
"""RSS is read once it has not moved for this long (after streams close)."""
SETTLE_TIMEOUT_SECONDS = 20.0
KIB = 1024
MIB = 1024 * KIB
CLOSE_POLL_SECONDS = 0.1
REPETITIONS = 3
"""At least, at every size: at 5,000 watchers one repetition's ratio moved from 0.86 to
2.03 x between two runs on the same code (the revisions queue behind each other's fan-out,
so the tail is the whole backlog, and the client processes share the 2 cores with the
server)."""
MEASURED_WATCHERS = 3600
"""Repetitions at a size until this many watchers were measured on each side (36 at 100
watchers, ~4 minutes; 4 at 1,000). A repetition's p99 of 100 watchers is the 9th slowest
of ~900 deliveries, the tail of a single revision's fan-out (the last one's, mostly):
single repetitions of the same code gave 0.62-1.87 x bare, the median of 3 1.25-1.36 x and
of 9 1.01-1.36 x. Resampling 34 repetitions of one code (docs/benchmarks.md, "100
watchers: the spread of the median"), the median of 9 ranged 1.05-1.32 x (5th-95th
percentile), of 20 1.11-1.25 x; the bare server against itself, medians of 18, 0.94-1.07
x ("The instrument's resolution"). Twice as many halve the variance."""


# Client processes


@dataclass(frozen=True)
class ClientReport:
    """What one client process saw."""

    connected: int
    errors: list[str]
    delays: list[float] = field(default_factory=list)
    """Receipt time minus update_time, seconds, of every message after the first."""
    messages: list[bytes] = field(default_factory=list)
    """The bytes its first watcher received, in order (recorded by one process)."""


def _watch_client(
    address: str,
    run_name: str,
    count: int,
    record: bool,
    reports: Any,
    close: Any,
) -> None:
    """Runs in a client process: `count` watchers; reports once all of them have their
    first snapshot (or failed), then again when all streams have ended. With `close` set
    by the parent, cancels the streams instead of waiting for them to end."""

    async def main() -> None:
        channels = [
            grpc.aio.insecure_channel(address)
            for _ in range(math.ceil(count / STREAMS_PER_CHANNEL))
        ]
        request = pipeline_service_pb2.WatchRunRequest(name=run_name).SerializeToString()
        delays: list[float] = []
        errors: list[str] = []
        recorded: list[bytes] = []
        first_seen = 0
        all_first = asyncio.Event()
        calls: list[Any] = []

        def seen_first() -> None:
            nonlocal first_seen
            first_seen += 1
            if first_seen == count:
                all_first.set()

        async def watch(index: int) -> None:
            # Raw bytes, parsed here: the recorded messages are exactly what arrived.
            call = channels[index % len(channels)].unary_stream(
                WATCH_METHOD, request_serializer=None, response_deserializer=None
            )(request)
            calls.append(call)
            first = True
            try:
                async for raw in call:
                    received = time.time()
                    message = pipeline_service_pb2.WatchRunResponse.FromString(raw)
                    if record and index == 0:
                        recorded.append(raw)
                    if first:
                        first = False
                        seen_first()
                        continue
                    stamp = message.run.update_time
                    delays.append(received - (stamp.seconds + stamp.nanos / 1e9))
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")
                if first:
                    seen_first()
            except asyncio.CancelledError:
                # grpc.aio raises this from a call cancelled below, not from the task.
                if not close.is_set():
                    raise

        tasks = [asyncio.create_task(watch(i)) for i in range(count)]
        await all_first.wait()
        reports.put(ClientReport(connected=count - len(errors), errors=list(errors)))
        ended = asyncio.ensure_future(asyncio.gather(*tasks))
        # Polled rather than waited for in a thread, which asyncio.run would join at exit.
        while not ended.done():
            if close.is_set():
                for call in calls:
                    call.cancel()
                break
            await asyncio.wait((ended,), timeout=CLOSE_POLL_SECONDS)
        await ended
        reports.put(ClientReport(count - len(errors), errors, delays, recorded))
        for channel in channels:
            await channel.close()

    asyncio.run(main())


class Clients:
    """Watchers of one run spread over client processes."""

    def __init__(self, address: str, run_name: str, watchers: int, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._reports = context.Queue()
        self.close_event = context.Event()
        sizes = [watchers // processes + (i < watchers % processes) for i in range(processes)]
        self._processes: list[SpawnProcess] = [
            context.Process(
                target=_watch_client,
                args=(address, run_name, size, i == 0, self._reports, self.close_event),
                daemon=True,
            )
            for i, size in enumerate(sizes)
            if size
        ]

    def start(self) -> list[ClientReport]:
        """Starts the processes; returns once every watcher has its first snapshot."""
        for process in self._processes:
            process.start()
        return self._collect()

    def finish(self) -> list[ClientReport]:
        """Waits until every stream has ended (or was closed)."""
        reports = self._collect()
        for process in self._processes:
            process.join(30)
        return reports

    def close(self) -> list[ClientReport]:
        self.close_event.set()
        return self.finish()

    def kill(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()

    def _collect(self) -> list[ClientReport]:
        reports: list[ClientReport] = []
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while len(reports) < len(self._processes):
            try:
                reports.append(self._reports.get(timeout=0.5))
            except queue.Empty:
                if time.monotonic() > deadline or not all(
                    p.is_alive() or p.exitcode == 0 for p in self._processes
                ):
                    raise RuntimeError("a watcher process died or hung") from None
        return reports


# The bare server


def _bare_server(
    messages: list[bytes], gaps: list[float], ports: Any, release: Any, stop: Any
) -> None:
    """Runs in the bare server's process: WatchRun answering `messages[0]`, then, after
    `release`, each later message `gaps` after the one before (measured from the release,
    so the schedule does not drift), stamped and serialized once for all."""

    async def main() -> None:
        published = [messages[0]]
        changed = asyncio.Event()

        async def watch(request: bytes, context: Any) -> Any:
            sent = 0
            while True:
                while sent < len(published):
                    yield published[sent]
                    sent += 1
                if sent == len(messages):
                    return
                await changed.wait()

        handler = grpc.unary_stream_rpc_method_handler(watch)
        server = grpc.aio.server(options=_grpc_options(ServerConfig()))
        service, method = WATCH_METHOD.strip("/").split("/")
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        if await asyncio.to_thread(_wait_release, release, stop):
            # Each message at its offset from the release, as the full server stamped it:
            # revisions the full server wrote at one instant are published at one instant
            # here too (relative sleeps would let them drift apart behind the fan-out of
            # the previous one, and understate the baseline's delays).
            loop = asyncio.get_running_loop()
            released = loop.time()
            for raw, offset in zip(messages[1:], itertools.accumulate(gaps), strict=True):
                wait = released + offset - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                message = pipeline_service_pb2.WatchRunResponse.FromString(raw)
                message.run.update_time.FromNanoseconds(time.time_ns())
                published.append(message.SerializeToString())
                previous, changed = changed, asyncio.Event()
                previous.set()
        await asyncio.to_thread(stop.wait)
        await server.stop(None)

    asyncio.run(main())


def _wait_release(release: Any, stop: Any) -> bool:
    while not release.wait(0.1):
        if stop.is_set():
            return False
    return True


class BareServer:
    def __init__(self, messages: list[bytes], gaps: list[float]) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self.release, self._stop = context.Event(), context.Event()
        self._process = context.Process(
            target=_bare_server,
            args=(messages, gaps, ports, self.release, self._stop),
            daemon=True,
        )
        self._process.start()
        self.address = f"127.0.0.1:{ports.get(timeout=60)}"

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def stop(self) -> None:
        self._stop.set()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()


# Measurements


@dataclass(frozen=True)
class Fanout:
    delays: list[float]
    expected: int
    errors: list[str]
    cpu_per_delivery: float
    rss_per_watcher: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.delays, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.delays, 99) * 1000

    @property
    def complete(self) -> bool:
        return len(self.delays) == self.expected and not self.errors

    def describe(self) -> str:
        return (
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms,"
            f" {self.rss_per_watcher / KIB:.1f} KiB/watcher,"
            f" delivered {len(self.delays):,}/{self.expected:,}"
            + (f", errors: {self.errors[0]} (x{len(self.errors)})" if self.errors else "")
        )


@dataclass(frozen=True)
class Recording:
    """What the full server sent one watcher, for the bare server to replay."""

    messages: list[bytes]
    gaps: list[float]


def _stamp(raw: bytes) -> float:
    time_ = pipeline_service_pb2.WatchRunResponse.FromString(raw).run.update_time
    return float(time_.seconds + time_.nanos / 1e9)


def _errors(reports: Sequence[ClientReport]) -> list[str]:
    return [error for report in reports for error in report.errors]


def _hold_queued(driver: Driver, gate_file: Path) -> str:
    """A gate run holding the only slot, and a chain run QUEUED behind it: its name."""
    gate = driver.create(GATE_PIPELINE, {"path": str(gate_file)})
    driver.wait_step_running(gate.name)
    run = driver.create(CHAIN_PIPELINE, {"start": 0})
    if driver.get(run.name).state != run_pb2.RUN_STATE_QUEUED:
        raise RuntimeError(f"{run.name} is not QUEUED behind the gate run")
    return run.name


def _settled_rss(pid: int) -> int:
    """The process's RSS once it has stopped moving (freed memory is returned lazily)."""
    last, still_since = rss_bytes(pid), time.monotonic()
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = rss_bytes(pid)
        if abs(now - last) > 64 * KIB:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= SETTLE_SECONDS:
            break
    return last


def _run_alone_cpu(server: ServeProcess, driver: Driver, tmp: Path) -> float:
    """Server CPU seconds of the same gate release and run with a single watcher."""
    gate_file = tmp / f"gate-{uuid.uuid4().hex}"
    name = _hold_queued(driver, gate_file)
    clients = Clients(server.address, name, 1, 1)
    try:
        clients.start()
        before = cpu_seconds(server.pid)
        gate_file.touch()
        clients.finish()
        return cpu_seconds(server.pid) - before
    finally:
        clients.kill()


def _measure_full(
    watchers: int, processes: int, tmp: Path, home: Path, layout: Path
) -> tuple[Fanout, Recording]:
    with start_serve(home, layout) as server:
        driver = Driver(server.address)
        try:
            gate_file = tmp / f"gate-{uuid.uuid4().hex}"
            name = _hold_queued(driver, gate_file)
            clients = Clients(server.address, name, watchers, processes)
            try:
                rss_before = _settled_rss(server.pid)
                ready = clients.start()
                rss_held = _settled_rss(server.pid)
                cpu_before = cpu_seconds(server.pid)
                released = time.time()
                gate_file.touch()
                done = clients.finish()
                cpu = cpu_seconds(server.pid) - cpu_before
            finally:
                clients.kill()
            alone = _run_alone_cpu(server, driver, tmp)
        finally:
            driver.close()
    messages = next(report.messages for report in done if report.messages)
    stamps = [_stamp(raw) for raw in messages]
    gaps = [stamps[1] - released, *(b - a for a, b in itertools.pairwise(stamps[1:]))]
    delays = [d for report in done for d in report.delays]
    expected = watchers * (len(messages) - 1)
    fanout = Fanout(
        delays=delays,
        expected=expected,
        errors=_errors(ready) + _errors(done),
        cpu_per_delivery=max(cpu - alone, 0.0) / max(len(delays), 1),
        rss_per_watcher=(rss_held - rss_before) / watchers,
    )
    return fanout, Recording(messages, [max(gap, 0.0) for gap in gaps])


def _measure_bare(watchers: int, processes: int, recording: Recording) -> Fanout:
    server = BareServer(recording.messages, recording.gaps)
    clients = Clients(server.address, "runs/bare", watchers, processes)
    try:
        rss_before = _settled_rss(server.pid)
        ready = clients.start()
        rss_held = _settled_rss(server.pid)
        cpu_before = cpu_seconds(server.pid)
        server.release.set()
        done = clients.finish()
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        clients.kill()
        server.stop()
    delays = [d for report in done for d in report.delays]
    return Fanout(
        delays=delays,
        expected=watchers * (len(recording.messages) - 1),
        errors=_errors(ready) + _errors(done),
        cpu_per_delivery=cpu / max(len(delays), 1),
        rss_per_watcher=(rss_held - rss_before) / watchers,
    )


@dataclass(frozen=True)
class Held:
    per_stream: float
    """RSS growth per held stream, bytes."""
    given_back: float
    """Share of that growth gone once the streams closed."""
    kept: int
    """RSS after the streams closed less RSS before they opened, bytes."""
    errors: list[str]

    def describe(self) -> str:
        return (
            f"{self.per_stream / KIB:.1f} KiB/stream, {self.given_back:.0%} given back on close"
            + (f", errors: {self.errors[0]} (x{len(self.errors)})" if self.errors else "")
        )


def _hold(pid: int, address: str, run_name: str, streams: int, processes: int) -> Held:
    clients = Clients(address, run_name, streams, processes)
    try:
        before = _settled_rss(pid)
        ready = clients.start()
        held = _settled_rss(pid)
        done = clients.close()
        after = _settled_rss(pid)
    finally:
        clients.kill()
    growth = held - before
    return Held(
        per_stream=growth / streams,
        given_back=(held - after) / growth if growth > 0 else 1.0,
        kept=after - before,
        errors=_errors(ready) + _errors(done),
    )


def _measure_held(
    streams: int, processes: int, tmp: Path, home: Path, layout: Path
) -> tuple[Held, Held]:
    """The first burst of held streams on a new server, and a second one after it, to show
    whether what the first kept is reused by the second or added to."""
    with start_serve(home, layout) as server:
        driver = Driver(server.address)
        try:
            gate_file = tmp / f"gate-{uuid.uuid4().hex}"
            name = _hold_queued(driver, gate_file)
            first = _hold(server.pid, server.address, name, streams, processes)
            second = _hold(server.pid, server.address, name, streams, processes)
            gate_file.touch()
        finally:
            driver.close()
    return first, second


def _measure_bare_held(streams: int, processes: int) -> Held:
    # A second message that is never released keeps each stream open, as the full server's
    # QUEUED run keeps its watchers': with the first message alone the bare handler returned
    # after sending it, and its "held" streams were closed ones.
    snapshot = _first_snapshot()
    bare_server = BareServer([snapshot, snapshot], [0.0])
    try:
        return _hold(bare_server.pid, bare_server.address, "runs/bare", streams, processes)
    finally:
        bare_server.stop()


def _first_snapshot() -> bytes:
    """A QUEUED chain run's first WatchRun message, the size of the full server's."""
    run = run_pb2.Run(name="runs/bare", pipeline=CHAIN_PIPELINE, state=run_pb2.RUN_STATE_QUEUED)
    run.parameters.update({"start": 0})
    run.create_time.GetCurrentTime()
    run.update_time.GetCurrentTime()
    return pipeline_service_pb2.WatchRunResponse(run=run).SerializeToString()


def _warm_home(tmp: Path, layout: Path) -> Path:
    """A home whose compiled pipelines are cached, copied into every server's new home."""
    home = tmp / "warm"
    with start_serve(home, layout):
        pass
    return home


def _fresh_home(warm: Path, tmp: Path, label: str) -> Path:
    home = tmp / label
    shutil.copytree(warm / "cache", home / "cache")
    return home


def run(
    sizes: Sequence[int] = DEFAULT_SIZES,
    held_streams: int = DEFAULT_HELD,
    processes: int = CLIENT_PROCESSES,
) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        layout = tmp / "layout"
        warm = _warm_home(tmp, layout)
        for watchers in sizes:
            full_results: list[Fanout] = []
            bare_results: list[Fanout] = []
            for rep in range(_repetitions(watchers)):
                gc.collect()
                home = _fresh_home(warm, tmp, f"fanout-{watchers}-{rep}")
                full, recording = _measure_full(watchers, processes, tmp, home, layout)
                full_results.append(full)
                bare_results.append(_measure_bare(watchers, processes, recording))
            figures.append(_fanout_figure(watchers, processes, full_results, bare_results))
        if held_streams:
            # Each repetition on a new server: a server that held streams before reuses
            # the memory they left, and would give back more of a second burst.
            bursts = [
                _measure_held(
                    held_streams, processes, tmp, _fresh_home(warm, tmp, f"held-{rep}"), layout
                )
                for rep in range(REPETITIONS)
            ]
            bare_held = _measure_bare_held(held_streams, processes)
            figures.append(_held_figure(held_streams, processes, bursts, bare_held))
    return figures


def _repetitions(watchers: int) -> int:
    return max(REPETITIONS, math.ceil(MEASURED_WATCHERS / watchers))


def _median_by_p99(results: Sequence[Fanout]) -> Fanout:
    return sorted(results, key=lambda r: r.p99_ms)[len(results) // 2]


def _fanout_figure(
    watchers: int, processes: int, full_results: list[Fanout], bare_results: list[Fanout]
) -> Figure:
    full, bare = _median_by_p99(full_results), _median_by_p99(bare_results)
    ratio = full.p99_ms / bare.p99_ms
    complete = all(r.complete for r in full_results)
    # The median over the repetitions, each side's own: the CPU of the repetition with the
    # median p99 would be a single sample.
    full_cpu = statistics.median(r.cpu_per_delivery for r in full_results)
    bare_cpu = statistics.median(r.cpu_per_delivery for r in bare_results)
    cpu_ratio = full_cpu / bare_cpu if bare_cpu else math.nan
    revisions = full.expected // watchers
    return Figure(
        name=f"WatchRun fan-out during a real run, {watchers:,} watchers",
        value=full.p99_ms,
        unit="ms p99 delay",
        baseline=bare.p99_ms,
        detail=f"{ratio:.2f} x bare p99 (spread {spread([r.p99_ms for r in full_results])}"
        f" vs {spread([r.p99_ms for r in bare_results])} ms), server CPU/delivery"
        f" {cpu_ratio:.2f} x bare ({full_cpu * 1e6:.0f} vs {bare_cpu * 1e6:.0f} us, median of"
        f" the repetitions); full server {full.describe()}; bare grpc.aio"
        f" {bare.describe()} ({revisions} revisions of a {CHAIN_PIPELINE} run after its"
        f" QUEUED snapshot, {processes} client processes, median of {len(full_results)})",
        target=f"p99 <= {TARGET_P99_RATIO:g} x bare, every revision delivered",
        met=complete and ratio <= TARGET_P99_RATIO,
        spread=spread([r.p99_ms for r in full_results]),
    )


def _held_figure(
    streams: int, processes: int, bursts: list[tuple[Held, Held]], bare: Held
) -> Figure:
    full_results = [first for first, _ in bursts]
    full = sorted(full_results, key=lambda r: r.given_back)[len(full_results) // 2]
    given_back = [100 * r.given_back for r in full_results]
    kept = [first.kept / MIB for first, _ in bursts]
    kept_after_two = [(first.kept + second.kept) / MIB for first, second in bursts]
    return Figure(
        name=f"WatchRun, {streams:,} held streams",
        value=full.per_stream / KIB,
        unit="KiB/stream",
        baseline=bare.per_stream / KIB,
        detail=f"full server {full.describe()} (given back {spread(given_back)}%, median of"
        f" {len(full_results)} new servers; RSS {spread(kept)} MiB above the start after the"
        f" burst, {spread(kept_after_two)} MiB after a second one); bare grpc.aio"
        f" {bare.describe()} (server RSS growth once every stream holds its first snapshot,"
        f" then after the {processes} client processes close them)",
        target=f"<= {TARGET_KIB_PER_STREAM:g} KiB/stream, >= {TARGET_GIVEN_BACK:.0%} given back",
        met=not any(burst.errors for pair in bursts for burst in pair)
        and full.per_stream / KIB <= TARGET_KIB_PER_STREAM
        and full.given_back >= TARGET_GIVEN_BACK,
        spread=spread([r.per_stream / KIB for r in full_results]),
    )
