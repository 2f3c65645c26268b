"""Step logs: each attempt's stdout and stderr, kept after the step's scratch dir is gone.

Format: one file per attempt, `<logs_root>/<run>/<step>/attempt-<n>.log`, holding JSON
lines in arrival order, stdout and stderr interleaved:

    {"t": "2025-01-31T12:00:00.123456+00:00", "stream": "stderr", "line": "Traceback ..."}

`t` is when the executor read the line (UTC, ISO 8601), `stream` is "stdout" or
"stderr", `line` is the text without its newline (invalid UTF-8 replaced; a line longer
than 64 KiB is split). The order between the two streams is the order the executor read
them in, which is the order they were written only as far as the child flushed them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from skit_pipelines.domain import LogLine

__all__ = [
    "AttemptLog",
    "LogLine",
    "delete_run_logs",
    "last_attempt",
    "read_log",
    "read_step_logs",
    "step_log_path",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_ATTEMPT_FILE = re.compile(r"attempt-(\d+)\.log")
_MAX_NAME = 200
_MAX_LINE = 64 * 1024
_READ_CHUNK = 256 * 1024
_ERROR_LINE_CHARS = 1000


def _safe_component(name: str) -> str:
    # Percent-encoding keeps the mapping injective ("a/b" and "a%2Fb" differ) and turns
    # "." and ".." into harmless names; over-long names keep a hash to stay unique.
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)
    if not safe:
        return "%"
    if len(safe) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        safe = f"{safe[: _MAX_NAME - 17]}-{digest}"
    return safe


def step_log_path(logs_root: Path, run_id: str, step_name: str, attempt: int) -> Path:
    """Where one attempt of a step keeps its log.

    The step name is percent-encoded into one path component: "/", "[", "]" and every
    other character outside `[A-Za-z0-9_-]` become `%XX` ("for-loop-2[0]/square" is
    "for-loop-2%5B0%5D%2Fsquare").
    """
    return (
        logs_root / _safe_component(run_id) / _safe_component(step_name) / f"attempt-{attempt}.log"
    )


def delete_run_logs(logs_root: Path, run_id: str) -> None:
    """Removes every log of the run (DeleteRun, retention); none is not an error. Blocking."""
    shutil.rmtree(logs_root / _safe_component(run_id), ignore_errors=True)


def last_attempt(logs_root: Path, run_id: str, step_name: str) -> int:
    """The highest attempt of the step that has a log (0: none), e.g. one that a crash
    of the service interrupted: a rerun is the attempt after it. Blocking."""
    folder = step_log_path(logs_root, run_id, step_name, 1).parent
    try:
        return max((_attempt_of(path) for path in folder.iterdir()), default=0)
    except FileNotFoundError:
        return 0


class AttemptLog:
    """Writes one attempt's output as it arrives; remembers the last stderr line.

    Called from the event loop: each `feed` is one unbuffered write, so a reader sees
    complete lines as soon as the step printed them.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Appends: attempt numbers are not reused (see last_attempt), and should one be,
        # the history is kept rather than cut.
        self._file: BinaryIO = path.open("ab", buffering=0)
        self._partial = {"stdout": b"", "stderr": b""}
        self.path = path
        self.last_stderr_line = ""

    def feed(self, stream: str, data: bytes) -> None:
        """Records what a stream produced; a trailing partial line waits for its end."""
        pending = self._partial[stream] + data
        *lines, rest = pending.split(b"\n")
        if len(rest) > _MAX_LINE:
            lines.append(rest)
            rest = b""
        self._partial[stream] = rest
        if lines:
            self._write(stream, lines)

    def end(self, stream: str) -> None:
        """The stream closed: a last line without a newline still counts."""
        rest = self._partial[stream]
        self._partial[stream] = b""
        if rest:
            self._write(stream, [rest])

    def close(self) -> None:
        for stream in self._partial:
            self.end(stream)
        self._file.close()

    def _write(self, stream: str, lines: list[bytes]) -> None:
        if self._file.closed:
            return
        now = datetime.now(UTC).isoformat()
        texts = [line.decode("utf-8", errors="replace").removesuffix("\r") for line in lines]
        self._file.write(
            "".join(
                json.dumps({"t": now, "stream": stream, "line": text}, ensure_ascii=False) + "\n"
                for text in texts
            ).encode()
        )
        if stream == "stderr":
            for text in reversed(texts):
                if text.strip():
                    self.last_stderr_line = text.strip()[:_ERROR_LINE_CHARS]
                    break


def _attempt_of(path: Path) -> int:
    match = _ATTEMPT_FILE.fullmatch(path.name)
    return int(match.group(1)) if match else 0


def _parse(raw: bytes, attempt: int) -> LogLine | None:
    try:
        record = json.loads(raw)
        return LogLine(
            time=datetime.fromisoformat(record["t"]),
            stream=record["stream"],
            text=record["line"],
            attempt=attempt,
        )
    except (ValueError, KeyError, TypeError):
        # Only a line cut short by a crash of the service can be malformed.
        return None


async def read_log(
    path: Path, *, follow: Callable[[], bool] | None = None, poll_interval: float = 0.2
) -> AsyncIterator[LogLine]:
    """Yields the lines of one attempt's log file (see `step_log_path`).

    Without `follow`, yields what the file holds and ends. With `follow`, which returns
    True while the step may still write (its attempt is not over), waits for the file to
    appear and for new lines, polling every `poll_interval` seconds; once `follow()`
    returns False it reads what is left and ends.

    Raises:
        FileNotFoundError: there is no such file and `follow()` is not True (the attempt
            never started a process, or the run's logs were removed).
    """
    attempt = _attempt_of(path)
    while True:
        try:
            file = await asyncio.to_thread(path.open, "rb")
            break
        except FileNotFoundError:
            if follow is None or not follow():
                # The file may have appeared between the open and follow() turning False.
                if not path.exists():
                    raise
            else:
                await asyncio.sleep(poll_interval)
    try:
        buffer = b""
        draining = follow is None
        while True:
            chunk = await asyncio.to_thread(file.read, _READ_CHUNK)
            if chunk:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = _parse(raw, attempt)
                    if line is not None:
                        yield line
                continue
            if draining:
                break
            assert follow is not None
            if follow():
                await asyncio.sleep(poll_interval)
            else:
                # One more pass: the writer may have appended after the last read.
                draining = True
        if buffer:
            line = _parse(buffer, attempt)
            if line is not None:
                yield line
    finally:
        file.close()


async def read_step_logs(
    logs_root: Path,
    run_id: str,
    step_name: str,
    *,
    attempt: int = 0,
    follow: Callable[[], bool] | None = None,
    poll_interval: float = 0.2,
) -> AsyncIterator[LogLine]:
    """Yields a step's log lines: one attempt's (`attempt` >= 1) or, with 0, every
    attempt's in order, following into later attempts while `follow()` is True.

    With `attempt` 0 a step that never started a process (skipped, cached, reused, or
    still pending when `follow()` turns False) yields nothing; a missing single attempt
    raises FileNotFoundError as `read_log` does.
    """
    if attempt > 0:
        path = step_log_path(logs_root, run_id, step_name, attempt)
        async for line in read_log(path, follow=follow, poll_interval=poll_interval):
            yield line
        return
    current = 1
    while True:
        path = step_log_path(logs_root, run_id, step_name, current)
        following = step_log_path(logs_root, run_id, step_name, current + 1)

        def this_attempt_may_write(following: Path = following) -> bool:
            # A later attempt's file means this one is over.
            return follow is not None and follow() and not following.exists()

        if not path.exists() and not this_attempt_may_write():
            # Attempts are numbered without gaps, but a crash can leave a gap behind.
            if not following.exists():
                return
        else:
            try:
                async for line in read_log(
                    path, follow=this_attempt_may_write, poll_interval=poll_interval
                ):
                    yield line
            except FileNotFoundError:
                if not following.exists():
                    return
        current += 1
