"""WatchRuns: the store's change feed fanned out to many filtered streams.

One reader per process follows the feed (RunStore.wait_for_change, then changes_after)
and offers each change to every live stream, which keeps the ones its filter matches in
a bounded buffer. A stream that does not keep up is not waited for: when its buffer is
full it is detached, drains what it holds, and reads the feed from the store itself from
its own cursor until it has caught up with the reader, then attaches again. A stream
that starts (or resumes) behind the reader catches up the same way. So the reader never
blocks on a slow client, nothing is lost (the feed is durable), and a thousand idle
streams cost one query per change, not a thousand.

Attaching is synchronous (no await between comparing a stream's cursor with the
reader's position and joining the live set) and the reader dispatches a page without
awaiting, so a stream that attaches at position p is offered exactly the changes after p.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from skit_pipelines.domain import Run
from skit_pipelines.errors import InvalidArgument, Unavailable
from skit_pipelines.store.base import RunChange, RunQuery, RunStore, sortable_time

logger = logging.getLogger(__name__)

CURSOR_PREFIX = "c"
"""Cursors are CURSOR_PREFIX + 16 hex digits: opaque to clients, in the same order as
strings as the changes they follow, and simple to check."""
_CURSOR_DIGITS = 16

DEFAULT_HEARTBEAT_SECONDS = 30.0
"""An idle stream gets a heartbeat with the latest cursor this often."""
DEFAULT_BUFFER = 1000
"""Matching changes a live stream may hold unsent before it is detached to catch up."""
_READ_PAGE = 500
"""Changes read per query, by the reader and by a stream catching up."""
_SNAPSHOT_PAGE = 200
"""Runs per ListRuns-style page of an initial snapshot."""
_POLL_SECONDS = 5.0
"""The reader also looks at the feed this often without being woken (belt and braces
for a lost notification)."""
_RETRY_SECONDS = 1.0
"""The reader's pause after the store failed."""


def encode_cursor(cursor: int) -> str:
    return f"{CURSOR_PREFIX}{cursor:0{_CURSOR_DIGITS}x}"


def decode_cursor(text: str, *, field: str = "after_cursor") -> int:
    """InvalidArgument (with `field`) for anything encode_cursor did not make."""
    digits = text[len(CURSOR_PREFIX) :]
    if (
        not text.startswith(CURSOR_PREFIX)
        or len(digits) != _CURSOR_DIGITS
        or any(c not in "0123456789abcdef" for c in digits)
    ):
        raise InvalidArgument(
            f"{field} is not a cursor this service issued (take it from a WatchRuns message)",
            field=field,
        )
    return int(digits, 16)


class FeedKind(enum.Enum):
    """What a FeedEvent is (WatchRunsResponse.Kind)."""

    CHANGE = enum.auto()
    DELETED = enum.auto()
    SNAPSHOT = enum.auto()
    SNAPSHOT_COMPLETE = enum.auto()
    RELIST = enum.auto()
    HEARTBEAT = enum.auto()


@dataclass(frozen=True)
class FeedEvent:
    kind: FeedKind
    cursor: int = 0
    """Resume after this; 0 on SNAPSHOT (not a resume point)."""
    run: Run | None = None


class _Stream:
    """One WatchRuns stream as the reader sees it."""

    def __init__(self, query: RunQuery, buffer: int, cursor: int) -> None:
        self.query = query
        self.buffer = buffer
        self.cursor = cursor
        """Everything matching up to here was sent: where the stream resumes from."""
        self.pending: collections.deque[RunChange] = collections.deque()
        self.live = False
        self.woken = asyncio.Event()

    def offer(self, change: RunChange) -> bool:
        """False when the buffer is full: the stream must catch up by itself."""
        if change.cursor <= self.cursor or not self.query.matches(change.run):
            # Already sent: it attached ahead of the reader (see RunFeed._catch_up).
            return True
        if len(self.pending) >= self.buffer:
            return False
        self.pending.append(change)
        self.woken.set()
        return True


class RunFeed:
    """The per-process fan-out of the store's change feed (see the module docstring)."""

    def __init__(
        self,
        store: RunStore,
        *,
        buffer: int = DEFAULT_BUFFER,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        read_page: int = _READ_PAGE,
    ) -> None:
        self._store = store
        self._buffer = buffer
        self._heartbeat = heartbeat_seconds
        self._read_page = read_page
        self._live: set[_Stream] = set()
        self._streams = 0
        self._position = -1
        """The cursor the reader has offered every change up to; -1 before it started."""
        self._started = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.detached = 0
        """How many times a stream fell behind and was detached (for tests and metrics)."""

    @property
    def position(self) -> int:
        return self._position

    def stream_count(self) -> int:
        return self._streams

    async def close(self) -> None:
        """Ends every stream with Unavailable (so clients resume elsewhere) and the reader."""
        self._closed = True
        for stream in self._live:
            stream.woken.set()
        self._live.clear()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _ensure_reader(self) -> None:
        if self._reader is None and not self._closed:
            self._reader = asyncio.get_running_loop().create_task(
                self._read_forever(), name="run-feed-reader"
            )
        await self._started.wait()

    async def _read_forever(self) -> None:
        while True:
            try:
                if self._position < 0:
                    self._position = await self._store.latest_change_cursor()
                    self._started.set()
                await self._store.wait_for_change(self._position, _POLL_SECONDS)
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Streams keep waiting (and heartbeating) while the store is away.
                logger.exception("the run feed reader failed; retrying")
                await asyncio.sleep(_RETRY_SECONDS)

    async def _read_once(self) -> None:
        while True:
            if not self._live:
                # Nobody to offer changes to: move to the latest committed change this
                # process knows of without reading anything (a stream attaching later
                # catches up from the store itself).
                self._position = max(self._position, self._store.change_signal.latest)
                return
            page = await self._store.changes_after(self._position, self._read_page)
            if page.too_old:
                # More changes than the store keeps went by since the last read: every
                # stream catches up by itself (and is told to re-list).
                self._detach_all()
                self._position = page.latest_cursor
                return
            for change in page.changes:
                for stream in list(self._live):
                    if not stream.offer(change):
                        self._detach(stream)
                self._position = change.cursor
            if len(page.changes) < self._read_page:
                return

    def _detach(self, stream: _Stream) -> None:
        self._live.discard(stream)
        stream.live = False
        stream.woken.set()
        self.detached += 1

    def _detach_all(self) -> None:
        for stream in list(self._live):
            self._detach(stream)

    def _check_open(self, cursor: int) -> None:
        if self._closed:
            raise Unavailable(
                "the server is shutting down; reconnect with after_cursor ="
                f" {encode_cursor(cursor)} to continue",
                reason="SHUTTING_DOWN",
            )

    async def watch(
        self, query: RunQuery, *, after_cursor: int | None = None, initial_snapshot: bool = False
    ) -> AsyncIterator[FeedEvent]:
        """The WatchRuns stream: after `after_cursor` (None: from now), optionally starting
        with the runs matching `query` now."""
        self._check_open(after_cursor or 0)
        self._streams += 1
        stream = _Stream(query, self._buffer, after_cursor or 0)
        try:
            await self._ensure_reader()
            if after_cursor is None and initial_snapshot:
                # The position before the listing: changes from there on come after it,
                # some perhaps already in the snapshot (the client keeps the newest).
                stream.cursor = await self._store.latest_change_cursor()
                async for run in self._snapshot(query):
                    yield FeedEvent(FeedKind.SNAPSHOT, run=run)
                yield FeedEvent(FeedKind.SNAPSHOT_COMPLETE, cursor=stream.cursor)
            elif after_cursor is None:
                # A resume point at once, before anything matching happens.
                stream.cursor = self._position
                yield FeedEvent(FeedKind.HEARTBEAT, cursor=stream.cursor)
            elif after_cursor > self._position:
                # Ahead of this reader: from a replica that read further, or from no
                # change this store ever made (then the client must re-list).
                page = await self._store.changes_after(after_cursor, 0)
                if page.too_old:
                    stream.cursor = page.latest_cursor
                    yield FeedEvent(FeedKind.RELIST, cursor=stream.cursor)
            while True:
                async for event in self._catch_up(stream):
                    yield event
                async for event in self._follow(stream):
                    yield event
                # Detached (it fell behind): read on from the store, from stream.cursor.
        finally:
            self._streams -= 1
            self._live.discard(stream)
            if self._streams == 0 and self._reader is not None:
                # No one to read for: the next stream starts a reader again, from the
                # position this one reached.
                self._reader.cancel()
                self._reader = None

    async def _catch_up(self, stream: _Stream) -> AsyncIterator[FeedEvent]:
        """Reads the feed from the store until the reader's position, then attaches."""
        while True:
            self._check_open(stream.cursor)
            if stream.cursor >= self._position:
                stream.live = True
                self._live.add(stream)
                return
            page = await self._store.changes_after(stream.cursor, self._read_page)
            if page.too_old:
                stream.cursor = page.latest_cursor
                yield FeedEvent(FeedKind.RELIST, cursor=stream.cursor)
                continue
            for change in page.changes:
                stream.cursor = change.cursor
                if stream.query.matches(change.run):
                    yield _event(change)
            if not page.changes:
                # Only when the store went back in time (a restored backup): don't spin.
                stream.cursor = self._position

    async def _follow(self, stream: _Stream) -> AsyncIterator[FeedEvent]:
        """Sends what the reader offers; returns when the stream was detached and has
        sent everything it held."""
        while True:
            if stream.pending:
                change = stream.pending.popleft()
                stream.cursor = change.cursor
                yield _event(change)
                continue
            self._check_open(stream.cursor)
            if not stream.live:
                return
            stream.woken.clear()
            woken = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat):
                    woken = await stream.woken.wait()
            if not woken and stream.live and not stream.pending:
                # Idle: everything up to the reader's position was offered, and none of
                # it is held, so the stream may resume from there.
                stream.cursor = max(stream.cursor, self._position)
                yield FeedEvent(FeedKind.HEARTBEAT, cursor=stream.cursor)

    async def _snapshot(self, query: RunQuery) -> AsyncIterator[Run]:
        after: tuple[str, str] | None = None
        while True:
            page = await self._store.list_runs(
                replace(query, page_size=_SNAPSHOT_PAGE, after=after)
            )
            for run in page.runs:
                yield run
            if not page.more or not page.runs:
                return
            last = page.runs[-1]
            after = (sortable_time(last.create_time), last.id)


def _event(change: RunChange) -> FeedEvent:
    kind = FeedKind.DELETED if change.deleted else FeedKind.CHANGE
    return FeedEvent(kind, cursor=change.cursor, run=change.run)
