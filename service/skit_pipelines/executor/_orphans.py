"""Step processes outliving the server that started them.

A step runs in its own process group, so a server killed with SIGKILL (or by the OOM
killer) leaves it running: at restart its run is resumed and the step started again, and
the two would write the same outputs side by side. So each running step's process group
is written down in a ledger under the work root, next to the server that owns it, and a
starting executor kills the groups whose owner is gone.

Processes are identified by pid *and* start time (/proc/<pid>/stat), so a pid reused by
an unrelated process is never signalled. Without /proc (not Linux) the ledger does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None when there is no such
    process (or no /proc)."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":  # Z: exited, only waiting to be reaped
        return None
    return int(fields[19])


def _group_of(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[2])


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat from the third (state) on."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the
    # last ")". So state is [0], pgrp [2] and starttime (field 22) [19].
    return stat[stat.rindex(")") + 2 :].split()


@dataclass(frozen=True)
class LedgerEntry:
    pid: int
    """The step process, leader of its own process group."""
    started: int
    owner: int
    """The server process that started it."""
    owner_started: int
    run: str
    step: str


class ProcessLedger:
    """The running step process groups of this server, one small file each."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._owner = os.getpid()
        self._owner_started = start_time(self._owner)

    @property
    def enabled(self) -> bool:
        return self._owner_started is not None

    def _path(self, pid: int) -> Path:
        return self._root / f"{self._owner}-{pid}.json"

    def record(self, pid: int, *, run: str, step: str) -> None:
        """Notes a started step process; best effort (a step runs even if this fails)."""
        started = start_time(pid)
        if self._owner_started is None or started is None:
            return
        entry = LedgerEntry(pid, started, self._owner, self._owner_started, run, step)
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self._path(pid).write_text(json.dumps(asdict(entry)))
        except OSError as exc:
            logger.warning("cannot record step process %s of %s/%s: %s", pid, run, step, exc)

    def forget(self, pid: int) -> None:
        """The step process has been reaped and its group killed."""
        with contextlib.suppress(OSError):
            self._path(pid).unlink(missing_ok=True)

    def reap_orphans(self) -> int:
        """Kills the process groups of steps whose server is gone; returns how many groups
        still had processes. Entries of live servers (replicas sharing this work root) are
        left alone."""
        if not self.enabled or not self._root.is_dir():
            return 0
        reaped = 0
        for path in sorted(self._root.glob("*.json")):
            try:
                entry = LedgerEntry(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                logger.warning("ignoring unreadable step process entry %s", path)
                path.unlink(missing_ok=True)
                continue
            if start_time(entry.owner) == entry.owner_started:
                continue
            killed = _kill_group(entry.pid, entry.started)
            if killed:
                reaped += 1
                logger.warning(
                    "killed %d orphaned process(es) of step %s of run %s (its server, pid %s,"
                    " is gone)",
                    killed,
                    entry.step,
                    entry.run,
                    entry.owner,
                    extra={"run": entry.run, "step": entry.step},
                )
            path.unlink(missing_ok=True)
        return reaped


def _kill_group(pgid: int, leader_started: int) -> int:
    """SIGKILLs the processes of group `pgid` that started no earlier than its leader (the
    leader itself may have exited and left children behind); returns how many."""
    killed = 0
    for proc in _PROC.iterdir():
        if not proc.name.isdigit():
            continue
        pid = int(proc.name)
        if _group_of(pid) != pgid:
            continue
        started = start_time(pid)
        if started is None or started < leader_started:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed
