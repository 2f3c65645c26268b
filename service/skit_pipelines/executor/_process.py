"""Step processes: each in its own process group, so cancel reaches everything it spawned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_TAIL_BYTES = 8192


class StepProcess:
    """A running step command. `wait` turns cancellation into SIGTERM, then SIGKILL."""

    def __init__(self, process: asyncio.subprocess.Process, grace_seconds: float) -> None:
        self._process = process
        self._grace = grace_seconds

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdout: Path,
        stderr: Path,
        grace_seconds: float,
    ) -> StepProcess:
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return cls(process, grace_seconds)

    async def wait(self) -> int:
        """Waits for the exit code; on cancellation stops the group, then re-raises."""
        try:
            return await self._process.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise
        finally:
            # Like a container's end: nothing the step left behind outlives it.
            self._signal_group(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after the grace period; returns once reaped."""
        if self._process.returncode is not None:
            return
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

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)


def last_error_line(stderr: Path) -> str:
    """The last non-empty line of a step's stderr, or "" when there is none."""
    try:
        with stderr.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(tail.splitlines()):
        if line.strip():
            return line.strip()[:1000]
    return ""


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"
