"""Step processes: each in its own process group, so cancel reaches everything it spawned."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skit_pipelines.executor._logs import AttemptLog

logger = logging.getLogger(__name__)

_DRAIN_SECONDS = 2.0
"""How long output may keep arriving after the process group is killed: only a
descendant that left the group (setsid) can hold a pipe open longer."""

STEP_NICENESS = 10
"""How much lower a step's CPU priority is than the server's. Steps share the machine
with the server on the embedded default; when they compete for CPU, the server's event
loop must still answer calls and deliver revisions promptly (watchers are waiting on the
very step that is busy). An idle machine still gives steps all its CPU.

It holds only because a step stays in the server's session (a process group of its own,
not a session): with autogroup scheduling (Linux's default on many distributions, this
project's CI machine among them), each session is a scheduling group of its own, whose CPU
share niceness inside it does not lower. Measured on one shared core against a busy
process of the server's session: a niced step in a new session took 51% of it, in a
process group of the server's session 9%."""


def _lower_own_priority() -> None:
    # Niceness is a Linux thread's own, and a child inherits its forking thread's: set
    # once here, it holds from the step's first instruction on (a setpriority after
    # Popen would race the step's own children), keeps subprocess's vfork/posix_spawn
    # path (a preexec_fn would not), and needs no privilege (it only lowers).
    tid = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + STEP_NICENESS)


_SPAWNER = concurrent.futures.ThreadPoolExecutor(
    max_workers=2, thread_name_prefix="step-spawn", initializer=_lower_own_priority
)
"""Where step processes are forked: threads that run at the steps' priority."""


class _PipeToLog(asyncio.Protocol):
    """Feeds one of a step's output pipes into its attempt log."""

    def __init__(self, log: AttemptLog, stream: str) -> None:
        self._log = log
        self._stream = stream
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._log.feed(self._stream, data)

    def eof_received(self) -> bool | None:
        self._log.end(self._stream)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._log.end(self._stream)
        if not self.closed.done():
            self.closed.set_result(None)


class _Child:
    """A started step process. Spawned in a worker thread, because fork and exec block the
    caller for milliseconds (more on a loaded machine), and the event loop must keep
    delivering revisions meanwhile; reaped by a thread of its own, as asyncio's default
    ThreadedChildWatcher would do for a process asyncio spawned."""

    def __init__(self, popen: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
        self._popen = popen
        self._exited = exited

    @classmethod
    def spawn(cls, loop: asyncio.AbstractEventLoop, argv: list[str], **options: Any) -> _Child:
        """Blocking: call it in a _SPAWNER thread (starting the reaper blocks too)."""
        popen = subprocess.Popen(argv, **options)
        exited: asyncio.Future[int] = loop.create_future()

        def reap() -> None:
            returncode = popen.wait()
            # The loop closes only after the executor stopped its processes; should it be
            # gone anyway, nobody is waiting for this exit code.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_exited, exited, returncode)

        threading.Thread(target=reap, name=f"step-process-{popen.pid}", daemon=True).start()
        return cls(popen, exited)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        # Shielded: a waiter cancelled (wait_for's timeout) leaves the exit code for others.
        return await asyncio.shield(self._exited)


def _set_exited(exited: asyncio.Future[int], returncode: int) -> None:
    if not exited.done():
        exited.set_result(returncode)


class StepProcess:
    """A running step command. `wait` turns cancellation into SIGTERM, then SIGKILL.

    stdout and stderr go through pipes into an AttemptLog, read by the event loop.
    """

    def __init__(
        self,
        process: _Child,
        grace_seconds: float,
        log: AttemptLog,
        pipes: list[tuple[asyncio.BaseTransport, _PipeToLog]],
    ) -> None:
        self._process = process
        self._grace = grace_seconds
        self._log = log
        self._pipes = pipes

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def last_error_line(self) -> str:
        """The last non-empty line the step wrote to stderr, or ""."""
        return self._log.last_stderr_line

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: AttemptLog,
        grace_seconds: float,
    ) -> StepProcess:
        """Starts the command; a cancel while it starts still gets SIGTERM and the grace."""
        starting = asyncio.ensure_future(cls._start(argv, cwd, env, log, grace_seconds))
        try:
            # Shielded: cancelled half-way, asyncio would SIGKILL the child outright.
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            started = None
            try:
                started = await asyncio.shield(starting)
            except asyncio.CancelledError:
                starting.add_done_callback(_kill_when_started)
                raise
            except Exception:
                pass  # It never started: nothing to stop, and the cancel stands.
            if started is not None:
                await started.stop()
            raise

    @classmethod
    async def _start(
        cls,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        log: AttemptLog,
        grace_seconds: float,
    ) -> StepProcess:
        loop = asyncio.get_running_loop()
        # Own pipes rather than PIPE: read_pipe transports can be closed if a stray
        # descendant keeps a write end open, and protocols feed the log without a task.
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        readers = [os.fdopen(out_read, "rb", buffering=0), os.fdopen(err_read, "rb", buffering=0)]
        try:
            process = await loop.run_in_executor(
                _SPAWNER,
                functools.partial(
                    _Child.spawn,
                    loop,
                    list(argv),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=out_write,
                    stderr=err_write,
                    process_group=0,
                ),
            )
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        finally:
            # The child has its copies; ours would keep the pipes from ever ending.
            os.close(out_write)
            os.close(err_write)
        pipes: list[tuple[asyncio.BaseTransport, _PipeToLog]] = []
        try:
            for reader, stream in zip(readers, ("stdout", "stderr"), strict=True):
                pipes.append(
                    await loop.connect_read_pipe(functools.partial(_PipeToLog, log, stream), reader)
                )
        except BaseException:
            for transport, _ in pipes:
                transport.close()
            for reader in readers[len(pipes) :]:
                reader.close()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        return cls(process, grace_seconds, log, pipes)

    async def wait(self) -> int:
        """Waits for the exit code; on cancellation stops the group, then re-raises.

        Returns once the output is in the log.
        """
        try:
            return await self._process.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise
        finally:
            # Like a container's end: nothing the step left behind outlives it.
            self._signal_group(signal.SIGKILL)
            await self._drain()

    async def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after the grace period; returns once reaped."""
        if self._process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), self._grace)
            except TimeoutError:
                logger.info(
                    "step process %s outlived SIGTERM by %ss; killing it", self.pid, self._grace
                )
            finally:
                self._signal_group(signal.SIGKILL)
            await self._process.wait()
        await self._drain()

    async def _drain(self) -> None:
        try:
            pending = [protocol.closed for _, protocol in self._pipes if not protocol.closed.done()]
            if pending:
                _, late = await asyncio.wait(pending, timeout=_DRAIN_SECONDS)
                if late:
                    logger.info("step process %s left its output open; closing it", self.pid)
        finally:
            for transport, _ in self._pipes:
                transport.close()

    def kill(self) -> None:
        """SIGKILL to the group, without waiting."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)


def _kill_when_started(starting: asyncio.Future[StepProcess]) -> None:
    """For a start abandoned by a second cancel: nothing may outlive it."""
    if not starting.cancelled() and starting.exception() is None:
        starting.result().kill()


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"
