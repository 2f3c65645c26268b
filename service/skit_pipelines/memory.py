"""Gives memory back after a burst of watch streams has closed.

Thousands of streams closing leave their memory in the allocators, not in objects: an idle
server allocates nothing, so the collector's full pass (which also empties the
interpreter's free lists) never runs, and the few survivors of the burst (cyclic garbage,
free-list entries) each keep one of pymalloc's 1 MiB arenas alive. glibc, for its part,
keeps freed pages inside its heaps until asked to trim them. Measured on 10,000 held
WatchRun streams (docs/benchmarks.md, "Held streams"): a full collection freed 17-21 of
the arenas the burst left, a trim after it a further ~6 MB.

So once many streams have closed and closing has stopped for a moment, the server runs one
full collection, resizes asyncio's registries of tasks and async generators (sets that keep
the size of the burst) and calls malloc_trim: event-driven, at most once per burst, nothing
on the path of a stream.

A burst of streams opening calls for a full collection too, for another reason: their
objects, all long-lived, make one due (CPython runs it once the objects that survived
younger collections reach a quarter of the oldest generation). Left to the collector, it
lands on whatever allocates next, typically the first revision those streams are sent:
measured with 1,000 watchers, a 50 ms pause in the middle of that fan-out, the slowest
delivery of the run. Run in the quiet after the burst instead, it delays nobody.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFAULT_BURST = 1000
"""Closed streams that make a burst worth reclaiming after (a full collection costs a few
milliseconds; a handful of closes leave too little behind to matter)."""
DEFAULT_QUIET_SECONDS = 0.25
"""How long closing must have stopped before reclaiming: the burst is over, and the
objects of its last streams have been released."""


def _glibc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None with another C library (musl has none).

    Looked up at the first reclaim, among the symbols the process has loaded (its C
    library's among them): importing ctypes (with tempfile, shutil and compression modules)
    and ctypes.util.find_library (which runs `ldconfig -p`) would add to every start.
    """
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def _no_trim() -> None:
    return None


def shrink_asyncio_registries(loop: asyncio.AbstractEventLoop) -> None:
    """Resizes asyncio's registries of tasks and of async generators to what is left.

    asyncio keeps every task, and every async generator once started, in a WeakSet, and a
    set keeps the hash table of its largest size when entries leave. Every WatchRun
    stream is a task and three async generators: after 10,000 streams closed, the two
    tables were the only large blocks the burst left behind (tracemalloc), and copying the
    sets gave 4 MiB back (docs/benchmarks.md, "Held streams"). A copy is sized for its
    entries. Registries that are not WeakSets (other Python versions) are left alone.
    """
    registries = (getattr(asyncio.tasks, "_all_tasks", None), getattr(loop, "_asyncgens", None))
    for registry in registries:
        # A WeakSet being iterated defers its removals to the end of the iteration, so it
        # is left alone then (the loop's thread iterates neither between callbacks).
        if isinstance(registry, weakref.WeakSet) and not registry._iterating:  # type: ignore[attr-defined]
            registry.data = set(registry.data)  # type: ignore[attr-defined]


class MemoryReclaimer:
    """Counts streams opened and closed; after a burst of either, once quiet, collects
    (and, when streams closed, trims)."""

    def __init__(
        self,
        *,
        burst: int = DEFAULT_BURST,
        quiet_seconds: float = DEFAULT_QUIET_SECONDS,
        trim: Callable[[], object] | None = None,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self._burst = burst
        self._quiet = quiet_seconds
        self._trim = trim
        self._collect = collect
        self._closed = 0
        """Streams closed since the last reclaim."""
        self._opened = 0
        """Streams opened since the last reclaim."""
        self._events_at_check = 0
        self._timer: asyncio.TimerHandle | None = None
        self.reclaims = 0
        """How many times memory was reclaimed (for tests and metrics)."""

    def prepare(self) -> None:
        """Looks up malloc_trim now, in a quiet moment (serve does it right after SERVING),
        rather than at the first reclaim. What the lookup allocates (ctypes' modules and
        types, ~700 objects) lives as long as the process: allocated at that reclaim, it
        landed in the burst's emptied arenas, a few objects in each, and kept several of
        them (each 1 MiB) from being given back. Safe from a thread: the reclaim, on the
        event loop, only reads the result (and looks it up itself if it is not there)."""
        self._trimmer()

    def _trimmer(self) -> Callable[[], object]:
        if self._trim is None:
            self._trim = _glibc_trim() or _no_trim
        return self._trim

    @property
    def prepared(self) -> bool:
        """Whether the trim function has been looked up (or was given)."""
        return self._trim is not None

    def stream_opened(self) -> None:
        """Called as each stream starts (on the event loop)."""
        self._opened += 1
        if self._opened >= self._burst and self._timer is None:
            self._schedule()

    def stream_closed(self) -> None:
        """Called as each stream ends (on the event loop)."""
        self._closed += 1
        if self._closed >= self._burst and self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        self._events_at_check = self._opened + self._closed
        self._timer = asyncio.get_running_loop().call_later(self._quiet, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._opened + self._closed != self._events_at_check:
            # Still opening or closing: wait for the burst to end (each check costs one
            # comparison).
            self._schedule()
            return
        closed = self._closed >= self._burst
        self._opened = self._closed = 0
        self.reclaims += 1
        collected = self._collect()
        if closed:
            shrink_asyncio_registries(asyncio.get_running_loop())
            self._trimmer()()
        logger.debug("collected after a burst of streams (%s collected)", collected)
