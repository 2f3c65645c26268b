"""How the controller stores what backends report: now, or in order once the store is back.

A backend reports a run's progress (RunSink) while the run goes on, whether or not the
store can take the change at that moment. When a write fails with Unavailable (the
store has spent its own retry budget), the change waits in the run's backlog, and every
later change of that run queues behind it, so changes are stored in the order they were
reported. One task per run with a backlog stores it as soon as the store answers again.

A backlog is bounded. A change of a step replaces the change of the same step still
waiting (unless a run-level change, such as the run's end, sits between them): only the
step's newest state matters. Beyond `max_pending` waiting changes the reporter waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from skit_pipelines.domain import Run
from skit_pipelines.errors import NotFound, Unavailable
from skit_pipelines.store.base import RunMutation, RunStore

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 1024
"""Changes of one run that may wait for the store before its reporter has to wait too."""
RETRY_PAUSE_SECONDS = 0.2
"""Between two attempts to store a backlog (each attempt has the store's retry budget)."""
DELIVERY_STALL_SECONDS = 0.1
"""How long a reporter waits for a stored change to reach the run's watchers while none
of them is sent it (a slow reader); a fan-out in progress sends it every few microseconds."""
DELIVERY_LIMIT_SECONDS = 1.0
"""How long a reporter waits at most for a stored change to reach the run's watchers: a
thousand take some 30-60 ms on 2 cores, 5,000 some 200-400 ms; steps run for seconds."""


@dataclass(frozen=True)
class Change:
    """One change of a run, as a mutation of the stored run."""

    mutation: RunMutation
    stored: Callable[[Run], None]
    """Called with the stored run once the change is stored (logs, the RunObserver)."""
    key: str = ""
    """Changes with the same key replace each other while they wait (a step's name);
    empty for run-level changes, which nothing replaces or overtakes."""


@dataclass
class _Waiting:
    change: Change
    since: float
    """time.monotonic() when the change first had to wait."""
    storing: bool = False
    """Being written: no longer replaceable."""
    done: list[asyncio.Future[None]] = field(default_factory=list)
    """Reporters waiting until the change is stored."""


@dataclass
class _Backlog:
    changes: deque[_Waiting] = field(default_factory=deque)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class RunWrites:
    """The controller's writes of reported progress, held back while the store is away."""

    def __init__(
        self,
        store: RunStore,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        self._clock = clock
        self._backlogs: dict[str, _Backlog] = {}

    def unwritten_seconds(self, run_id: str) -> float:
        """How long the oldest change of the run not stored yet has waited (0: none)."""
        backlog = self._backlogs.get(run_id)
        if backlog is None or not backlog.changes:
            return 0.0
        return self._clock() - backlog.changes[0].since

    def drop(self, run_id: str) -> None:
        """Forgets the run's changes not stored yet (this process no longer executes it)."""
        backlog = self._backlogs.pop(run_id, None)
        if backlog is None:
            return
        if backlog.task is not None:
            backlog.task.cancel()
        logger.warning(
            "runs/%s: dropping %s changes not stored",
            run_id,
            len(backlog.changes),
            extra={"run": run_id},
        )
        for waiting in backlog.changes:
            _resolve(waiting)
        backlog.room.set()

    async def write(self, run_id: str, change: Change, *, durable: bool = False) -> None:
        """Stores `change` now or, while the store is unavailable or earlier changes of
        the run wait, queues it behind them. With `durable`, returns only once it is
        stored (or dropped)."""
        while True:
            backlog = self._backlogs.get(run_id)
            if backlog is None:
                break
            if self._replace(backlog, change):
                return
            if len(backlog.changes) < self._max_pending:
                await self._enqueue(run_id, backlog, change, durable)
                return
            backlog.room.clear()
            await backlog.room.wait()
        try:
            run = await self._store.update_run(run_id, change.mutation)
        except Unavailable as exc:
            logger.warning(
                "runs/%s: the run store is unavailable; its changes wait until it is back: %s",
                run_id,
                exc.message,
                extra={"run": run_id},
            )
            backlog = self._backlogs.setdefault(run_id, _Backlog())
            await self._enqueue(run_id, backlog, change, durable)
            return
        # Deliveries first: storing published the revision to every watcher of the run in
        # this process. The reporter (the executor, about to prepare and spawn the next
        # step, or to store the next change) waits until each of them has been sent it,
        # so that work (on the event loop, in threads holding the interpreter, or a new
        # step's process on the same cores) does not slow the delivery down, and the
        # next revision does not queue behind this one's fan-out. A slow reader holds it
        # up for DELIVERY_STALL_SECONDS; without watchers there is nobody to wait for.
        # The change's log line and observer (a file write, spans) come after the
        # deliveries too: measured ~0.2 ms a revision that every watcher's delay included.
        try:
            await self._store.hub.wait_delivered(
                run_id, DELIVERY_STALL_SECONDS, DELIVERY_LIMIT_SECONDS
            )
        finally:
            change.stored(run)

    def _replace(self, backlog: _Backlog, change: Change) -> bool:
        if not change.key:
            return False
        for waiting in reversed(backlog.changes):
            if waiting.storing or not waiting.change.key:
                return False
            if waiting.change.key == change.key:
                waiting.change = change
                return True
        return False

    async def _enqueue(self, run_id: str, backlog: _Backlog, change: Change, durable: bool) -> None:
        waiting = _Waiting(change, since=self._clock())
        backlog.changes.append(waiting)
        if backlog.task is None:
            backlog.task = asyncio.get_running_loop().create_task(
                self._store_backlog(run_id, backlog), name=f"run-writes-{run_id}"
            )
        if durable:
            done = asyncio.get_running_loop().create_future()
            waiting.done.append(done)
            await done

    async def _store_backlog(self, run_id: str, backlog: _Backlog) -> None:
        started = self._clock()
        stored = 0
        while backlog.changes:
            head = backlog.changes[0]
            head.storing = True
            try:
                run = await self._store.update_run(run_id, head.change.mutation)
            except Unavailable:
                head.storing = False
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            except NotFound:
                logger.warning(
                    "runs/%s is gone; dropping a change that waited for the store",
                    run_id,
                    extra={"run": run_id},
                )
            except Exception:
                # Never let one bad change hold back the ones behind it.
                logger.exception("runs/%s: storing a change that waited failed", run_id)
            else:
                stored += 1
                try:
                    head.change.stored(run)
                except Exception:
                    logger.exception("runs/%s: after storing a change", run_id)
            backlog.changes.popleft()
            _resolve(head)
            backlog.room.set()
        if self._backlogs.get(run_id) is backlog:
            del self._backlogs[run_id]
        backlog.room.set()
        logger.info(
            "runs/%s: stored %s changes that waited up to %.1fs for the run store",
            run_id,
            stored,
            self._clock() - started,
            extra={"run": run_id},
        )


def _resolve(waiting: _Waiting) -> None:
    for done in waiting.done:
        if not done.done():
            done.set_result(None)
