"""The RunStore seam: runs, their steps, and an event log of revisions that watchers replay."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from skit_pipelines.domain import Run, RunFilter, RunState, Step
from skit_pipelines.errors import AlreadyExists, NotFound, Unavailable
from skit_pipelines.store.leases import RunLeases

if TYPE_CHECKING:
    # Types only: the server imports schedules' and notifications' models after SERVING.
    from skit_pipelines.notifications.model import (
        Delivery,
        DeliveryPage,
        Subscription,
        SubscriptionOutcome,
        SubscriptionPage,
    )
    from skit_pipelines.triggers import Schedule


def schedule_exists(schedule_id: str) -> AlreadyExists:
    """What both stores raise for a schedule id already taken."""
    return AlreadyExists(
        f"schedule schedules/{schedule_id} already exists",
        resource_name=f"schedules/{schedule_id}",
        reason="SCHEDULE_ALREADY_EXISTS",
    )


def schedule_not_found(schedule_id: str) -> NotFound:
    """What both stores raise for an unknown schedule id."""
    return NotFound(f"schedule schedules/{schedule_id} not found", reason="SCHEDULE_NOT_FOUND")


def subscription_exists(subscription_id: str) -> AlreadyExists:
    """What both stores raise for a subscription id already taken."""
    return AlreadyExists(
        f"subscription subscriptions/{subscription_id} already exists",
        resource_name=f"subscriptions/{subscription_id}",
        reason="SUBSCRIPTION_ALREADY_EXISTS",
    )


def subscription_not_found(subscription_id: str) -> NotFound:
    """What both stores raise for an unknown subscription id."""
    return NotFound(
        f"subscription subscriptions/{subscription_id} not found",
        reason="SUBSCRIPTION_NOT_FOUND",
    )


def sortable_time(value: datetime) -> str:
    """A fixed-width UTC timestamp, so text order is time order (also in page tokens)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class RunQuery:
    """ListRuns filters (combined with AND) and the page position."""

    pipeline: str = ""
    states: frozenset[RunState] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    """Inclusive."""
    created_before: datetime | None = None
    """Exclusive."""
    page_size: int = 50
    after: tuple[str, str] | None = None
    """(create_time ISO, run id) of the last run of the previous page."""

    def matches(self, run: Run) -> bool:
        """The filters applied to one snapshot (the page fields are ignored): what the
        SQL of list_runs selects, for WatchRuns streams."""
        return RunFilter(
            self.pipeline, self.states, self.labels, self.created_after, self.created_before
        ).matches(run)


@dataclass(frozen=True)
class RunPage:
    runs: Sequence[Run]
    more: bool


@dataclass(frozen=True)
class CreateOutcome:
    """What create_run did: made `run`, or found an earlier one with the same request_id."""

    run: Run
    created: bool
    request_hash: str = ""
    """With created=False: the hash stored with the earlier request."""


RunMutation = Callable[[Run], Run]

ScheduleMutation = Callable[["Schedule"], "Schedule"]


@dataclass(frozen=True)
class ScheduleOutcome:
    """What create_schedule did: made `schedule`, or found an earlier one with the same
    request_id from the same principal."""

    schedule: Schedule
    created: bool
    request_hash: str = ""
    """With created=False: the hash stored with the earlier request."""


@dataclass(frozen=True)
class SchedulePage:
    schedules: Sequence[Schedule]
    more: bool


DEFAULT_CHANGE_LIMIT = 100_000
"""Run changes kept in the change feed (RunStore.changes_after); older ones are dropped,
and a cursor older than every kept change is too old to replay."""


_CHANGE_PRUNE_INTERVAL = 1000
"""At most this many changes between two prunes of the change feed."""


def changed_steps(run: Run, previous: Run | None) -> list[tuple[int, Step]]:
    """The run's steps, with their positions, that `previous` did not have as they are.

    The same object is the same step: a change keeps the steps it did not touch, and
    comparing a hundred of them field by field took ~100 us of a write.
    """
    before = {s.name: s for s in previous.steps} if previous else {}
    return [
        (position, step)
        for position, step in enumerate(run.steps)
        if (prior := before.get(step.name)) is not step and prior != step
    ]


def change_prune_interval(change_limit: int) -> int:
    """How often (every that many cursors) a store drops the changes past its limit:
    rarely enough to cost nothing per write, often enough to hold at most ~10% more."""
    return max(1, min(_CHANGE_PRUNE_INTERVAL, change_limit // 10))


@dataclass(frozen=True)
class RunChange:
    """One committed run write (create, update or delete), in the global change feed."""

    cursor: int
    """Global, > 0, strictly increasing in commit order, without gaps."""
    run: Run
    """The run as of this change (at its revision)."""
    deleted: bool = False
    """The run was deleted; `run` holds its last snapshot."""


@dataclass(frozen=True)
class ChangePage:
    """What changes_after read: the changes after `after_cursor`, and the span held."""

    changes: list[RunChange]
    oldest_cursor: int
    """The smallest cursor still held (latest_cursor + 1 when none is)."""
    latest_cursor: int
    """The largest committed cursor (0 when there never was a change)."""
    after_cursor: int = 0
    """The cursor the page was read after."""

    @property
    def too_old(self) -> bool:
        """Whether changes after `after_cursor` were dropped (or the cursor is newer than
        any committed change: it comes from another store), so the reader must re-list."""
        return self.after_cursor < self.oldest_cursor - 1 or self.after_cursor > self.latest_cursor


class ChangeSignal:
    """The latest change cursor this process knows of, and an event replaced at each
    advance, so that any number of waiters wake without lock hand-offs (as RevisionHub)."""

    def __init__(self) -> None:
        self.latest = 0
        self._advanced = asyncio.Event()

    def advance(self, cursor: int) -> None:
        """Records that changes up to `cursor` are committed (here or by another replica)."""
        if cursor <= self.latest:
            return
        self.latest = cursor
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def wait_after(self, cursor: int, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.latest <= cursor:
                    await self._advanced.wait()


RevisionListener = Callable[[str, int, RunState], Awaitable[None]]
"""Called with (run id, revision, state) for a revision another replica stored."""


class WatchedRun:
    """What the hub keeps for one watched run, as attributes of one object its watchers
    hold: at every revision each watcher reads them directly, not through lookups by run
    id (with thousands of watchers, those lookups were a measurable part of a delivery)."""

    __slots__ = ("behind", "changed", "closed", "delivered", "latest", "recent", "watchers")

    def __init__(self, recent_per_run: int) -> None:
        self.watchers = 0
        self.recent: deque[Run] = deque(maxlen=recent_per_run)
        self.latest = 0
        """The revision of the newest snapshot in `recent` (0 when there is none)."""
        self.changed = asyncio.Event()
        """Set at the run's next publish (or close), and replaced by a new one."""
        self.closed = False
        """Set when the hub closes: its watchers end (the server is shutting down)."""
        self.behind = 0
        """Watchers not yet sent the latest revision (counted at each publish)."""
        self.delivered = asyncio.Event()
        """Set once every watcher counted at the latest publish has been sent it."""
        self.delivered.set()

    def after(self, revision: int) -> list[Run] | None:
        """The in-memory revisions after `revision`, or None when memory cannot tell."""
        recent = self.recent
        if not recent or recent[0].revision > revision + 1:
            return None
        # publish() keeps them contiguous: position, not a scan (every watcher asks).
        return list(itertools.islice(recent, revision + 1 - recent[0].revision, None))

    def caught_up(self) -> None:
        """A watcher counted at the latest publish has been sent it (or has gone)."""
        self.behind -= 1
        if self.behind <= 0:
            self.delivered.set()


class RevisionHub:
    """Wakes watchers of a run when a newer revision exists, and keeps the latest snapshots
    in memory so a burst of watchers does not turn into a burst of queries.

    Modelled on grpc's async health servicer (watchers counted and removed in `finally`),
    but woken through one asyncio.Event per watched run, replaced at each revision: unlike
    a Condition's notify_all, waking a thousand watchers costs no lock hand-offs.
    """

    def __init__(self, recent_per_run: int = 256) -> None:
        self._runs: dict[str, WatchedRun] = {}
        self._recent_per_run = recent_per_run
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Ends every watch (with Unavailable) so clients reconnect elsewhere; for shutdown."""
        self._closed = True
        for watched in self._runs.values():
            watched.closed = True
            watched.changed.set()

    def watched_runs(self) -> list[str]:
        """The runs that have watchers in this process."""
        return list(self._runs)

    def watcher_count(self, run_id: str | None = None) -> int:
        if run_id is None:
            return sum(watched.watchers for watched in self._runs.values())
        watched = self._runs.get(run_id)
        return watched.watchers if watched is not None else 0

    def publish(self, run: Run) -> None:
        """Records a new revision (written by this process, or learnt from another)."""
        watched = self._runs.get(run.id)
        if watched is None:
            return
        recent = watched.recent
        if recent and recent[-1].revision >= run.revision:
            return
        if recent and recent[-1].revision + 1 != run.revision:
            # Another replica wrote the revisions in between and they have not reached
            # this process yet: drop the older ones, so after() cannot skip them and
            # watchers read the gap from the store instead.
            recent.clear()
        recent.append(run)
        watched.latest = run.revision
        watched.behind = watched.watchers
        if watched.delivered.is_set():
            watched.delivered = asyncio.Event()
        changed, watched.changed = watched.changed, asyncio.Event()
        changed.set()

    async def wait_delivered(self, run_id: str, stall: float, limit: float) -> None:
        """Returns once every watcher of the run has been sent its latest revision; or
        once `stall` seconds pass in which no watcher was sent it (a slow reader holds up
        nobody for longer), or `limit` seconds in all. A fan-out still going, however
        large, is waited for: it sends the revision to some watcher every few microseconds.
        """
        watched = self._runs.get(run_id)
        if watched is None or watched.delivered.is_set():
            return
        delivered = watched.delivered
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        behind = watched.behind
        while (wait := min(stall, deadline - loop.time())) > 0:
            try:
                async with asyncio.timeout(wait):
                    await delivered.wait()
                return
            except TimeoutError:
                if watched.behind >= behind:
                    return
                behind = watched.behind

    def latest_revision(self, run_id: str) -> int:
        watched = self._runs.get(run_id)
        return watched.latest if watched is not None else 0

    async def subscribe(self, run_id: str) -> WatchedRun:
        """Counts a watcher of the run; what it returns is what that watcher reads."""
        watched = self._runs.get(run_id)
        if watched is None:
            watched = self._runs[run_id] = WatchedRun(self._recent_per_run)
            watched.closed = self._closed
        watched.watchers += 1
        return watched

    def unsubscribe(self, run_id: str) -> None:
        watched = self._runs.get(run_id)
        if watched is None:
            return
        watched.watchers -= 1
        if watched.watchers > 0:
            return
        del self._runs[run_id]
        watched.delivered.set()


class RunFollower:
    """One watcher's way through a run's revisions, the WatchRun contract: the current
    snapshot first (or every revision after `after_revision`, or the current snapshot when
    that is too old to replay), then each later revision exactly once, ending after a
    terminal state.

    As steps its caller drives rather than as an async generator: `first()` subscribes
    and gives the revisions to send first, `take()` those published since (None when
    there are none yet), `next()` waits for them, and `done` tells when the run is over;
    `close()` unsubscribes. A WatchRun stream's own generator drives them, so that each
    revision passes one generator on its way to each stream, not two, as in the bare
    grpc.aio server of the fan-out benchmark; a held stream keeps one generator and its
    frame less (10,000 held streams: 23.68 -> 23.56 KiB each). The event loop's CPU per
    delivery did not measurably change (docs/benchmarks.md, "One generator per stream").
    `revisions()` is the generator, for other callers.
    """

    __slots__ = ("_accounted", "_after", "_fetch", "_last", "_run_id", "_store", "_watched", "done")

    def __init__(self, store: RunStore, run_id: str, after_revision: int = 0) -> None:
        self._store = store
        self._run_id = run_id
        self._after = after_revision
        self._watched: WatchedRun | None = None
        self._accounted = 0
        """The newest revision published that this watcher has been sent, or that came
        before it: it owes the hub a caught_up for each newer publish it has sent too
        (publishing counted it among the watchers behind)."""
        self._last = 0
        """The revision of the last run given to the caller."""
        self._fetch = False
        """Set when memory could not tell what came after `_last`: next() reads the store."""
        self.done = False
        """Whether the run is terminal and its last revision has been given."""

    async def first(self) -> list[Run]:
        """Subscribes; the revisions to send first (none when `after_revision` is the
        run's latest). NotFound when there is no such run (close() all the same)."""
        store, run_id, after = self._store, self._run_id, self._after
        self._watched = watched = await store.hub.subscribe(run_id)
        self._accounted = watched.latest
        current = await store.get_run(run_id)
        replay = [current]
        if 0 < after <= current.revision:
            logged = await store.revisions_after(run_id, after)
            if logged is not None:
                replay = logged
        if replay:
            self._given(replay)
        else:
            self._last = after
            self.done = current.state.terminal and current.revision <= after
        return replay

    def take(self) -> list[Run] | None:
        """The revisions published since the last given, from memory, without waiting;
        None when there are none yet (or only the store can tell: then next() reads it).
        Unavailable once the hub has closed (the server is shutting down)."""
        watched = self._watched
        assert watched is not None, "first() comes first"
        if watched.closed:
            raise Unavailable(
                "the server is shutting down; reconnect with after_revision"
                f" = {self._last} to continue",
                reason="SHUTTING_DOWN",
            )
        latest = watched.latest
        if latest <= self._last:
            if latest > self._accounted:
                self._accounted = latest
                watched.caught_up()
            return None
        newer = watched.after(self._last)
        if newer is None:
            self._fetch = True
            return None
        self._given(newer)
        return newer

    async def next(self) -> list[Run]:
        """The revisions published since the last given, once there are some."""
        while True:
            if self._fetch:
                self._fetch = False
                store, run_id = self._store, self._run_id
                newer = await store.revisions_after(run_id, self._last) or [
                    await store.get_run(run_id)
                ]
                self._given(newer)
                return newer
            assert self._watched is not None, "first() comes first"
            await self._watched.changed.wait()
            runs = self.take()
            if runs is not None:
                return runs

    def _given(self, runs: list[Run]) -> None:
        last = runs[-1]
        self._last = last.revision
        self.done = last.state.terminal

    def close(self) -> None:
        """Unsubscribes (once; later calls do nothing)."""
        watched, self._watched = self._watched, None
        if watched is None:
            return
        if not watched.closed and watched.latest > self._accounted:
            watched.caught_up()
        self._store.hub.unsubscribe(self._run_id)

    async def revisions(self) -> AsyncGenerator[Run, None]:
        """The contract as an async generator; closing it closes the follower."""
        try:
            runs = await self.first()
            while True:
                for run in runs:
                    yield run
                if self.done:
                    return
                runs = self.take() or await self.next()
        finally:
            self.close()


class RunStore(ABC):
    """Durable runs. Every change bumps the run's revision and appends it to the event log."""

    def __init__(self, hub: RevisionHub | None = None) -> None:
        self.hub = hub or RevisionHub()
        self.change_signal = ChangeSignal()
        """Advanced by the store after each committed change (its own, or announced)."""

    @abstractmethod
    async def create_run(self, run: Run, request_hash: str = "") -> CreateOutcome:
        """Inserts `run` at revision 1. When run.request_id is already stored for the same
        principal (run.creator), returns that principal's earlier run instead; another
        principal's request_id is another key. AlreadyExists when the run id is taken."""

    @abstractmethod
    async def get_run(self, run_id: str) -> Run:
        """NotFound when there is no such run."""

    @abstractmethod
    async def update_run(self, run_id: str, mutate: RunMutation) -> Run:
        """Applies `mutate` to the current run atomically; stores the result at the next
        revision unless it is unchanged. Returns the stored run."""

    @abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Removes the run with its steps, labels, revisions (event log), lease and
        request_id records, so its id and request_id are free again. NotFound when there
        is no such run. The caller checks that the run has ended."""

    @abstractmethod
    async def list_runs(self, query: RunQuery) -> RunPage:
        """Runs matching the query, newest first."""

    @abstractmethod
    async def list_unfinished_runs(self) -> list[Run]:
        """Runs not in a terminal state, oldest first (to resume after a restart)."""

    @abstractmethod
    async def revisions_after(self, run_id: str, revision: int) -> list[Run] | None:
        """Every stored revision after `revision`, in order; None when the log no longer
        holds revision + 1 (too old to replay)."""

    # The change feed: every committed create, update and delete of a run appends one
    # RunChange in the same transaction (WatchRuns, subscriptions).

    @abstractmethod
    async def changes_after(self, after_cursor: int, limit: int) -> ChangePage:
        """At most `limit` changes with cursor > after_cursor, in cursor order, with the
        span held (check `too_old` before trusting that nothing is missing)."""

    @abstractmethod
    async def latest_change_cursor(self) -> int:
        """The largest committed change cursor (0 when none)."""

    async def wait_for_change(self, after_cursor: int, timeout: float) -> None:
        """Returns soon after a change with cursor > after_cursor is committed, by this
        process or another replica, or after `timeout` seconds (never raises for it)."""
        await self.change_signal.wait_after(after_cursor, timeout)

    # Schedules (schedules.py): one row per schedule, its whole value as JSON.

    @abstractmethod
    async def create_schedule(self, schedule: Schedule, request_hash: str = "") -> ScheduleOutcome:
        """Inserts `schedule`. When schedule.request_id is already stored for the same
        principal (schedule.creator), returns that earlier schedule instead. AlreadyExists
        when the id is taken."""

    @abstractmethod
    async def get_schedule(self, schedule_id: str) -> Schedule:
        """NotFound when there is no such schedule."""

    @abstractmethod
    async def update_schedule(self, schedule_id: str, mutate: ScheduleMutation) -> Schedule:
        """Applies `mutate` to the current schedule atomically (concurrent updates, from
        any replica, apply one after the other); returns the stored schedule."""

    @abstractmethod
    async def delete_schedule(self, schedule_id: str) -> None:
        """NotFound when there is no such schedule."""

    @abstractmethod
    async def list_schedules(self, page_size: int, after: str = "") -> SchedulePage:
        """Schedules by id, those after `after`."""

    # Subscriptions (notifications/): one row per subscription (its value as JSON, its
    # cursor in a column) and one row per delivery. Secrets are never stored: a sink holds
    # only a secret's name.

    @abstractmethod
    async def create_subscription(
        self, subscription: Subscription, request_hash: str = ""
    ) -> SubscriptionOutcome:
        """Inserts `subscription`. When its request_id is already stored for the same
        principal (its creator), returns that earlier subscription instead. AlreadyExists
        when the id is taken."""

    @abstractmethod
    async def get_subscription(self, subscription_id: str) -> Subscription:
        """With its current cursor and delivery health; NotFound when there is none."""

    @abstractmethod
    async def list_subscriptions(self, page_size: int, after: str = "") -> SubscriptionPage:
        """Subscriptions by id, those after `after`, with cursor and health."""

    @abstractmethod
    async def delete_subscription(self, subscription_id: str) -> None:
        """Removes it with its deliveries; NotFound when there is none."""

    @abstractmethod
    async def advance_subscription(
        self, subscription_id: str, from_cursor: int, to_cursor: int, deliveries: Sequence[Delivery]
    ) -> bool:
        """In one transaction: stores `deliveries` (skipping any whose run and state this
        subscription already has a delivery for) and moves the subscription's cursor from
        `from_cursor` to `to_cursor`. False, with nothing stored, when the cursor is no
        longer `from_cursor` (another pass moved it) or the subscription is gone."""

    @abstractmethod
    async def claim_deliveries(
        self,
        now: datetime,
        claim_until: datetime,
        limit: int,
        skip: Sequence[str] = (),
        *,
        per_subscription: int = 4,
    ) -> list[Delivery]:
        """Up to `limit` PENDING deliveries due at `now` (oldest due first), at most
        `per_subscription` of any one subscription and none of those in `skip`, each
        claimed until `claim_until` (not due again, for any replica, before then) in the
        same statement."""

    @abstractmethod
    async def record_attempt(self, delivery: Delivery) -> bool:
        """Stores `delivery` after an attempt (its new attempts, state and next attempt
        time) if it is still PENDING; False when it is not (or is gone)."""

    @abstractmethod
    async def list_deliveries(
        self, subscription_id: str, page_size: int, before_cursor: int | None = None
    ) -> DeliveryPage:
        """A subscription's deliveries, newest (highest cursor) first, those before
        `before_cursor`. NotFound when there is no such subscription."""

    # The step cache is read and written from inside the executor's step loop, which the
    # executor's StepCache protocol keeps synchronous: these are single keyed statements.

    @abstractmethod
    def cache_get(self, key: str) -> Any | None:
        """The JSON value stored under a step cache key, or None."""

    @abstractmethod
    def cache_put(self, key: str, value: Any) -> None: ...

    @abstractmethod
    def cache_delete(self, key: str) -> None:
        """Forgets a step cache entry (its artifacts are gone); none is not an error."""

    @contextlib.asynccontextmanager
    async def exclusive(self, task: str) -> AsyncIterator[bool]:
        """Whether this process may do `task` now, held until the block ends: among all
        processes sharing the store, at most one holds a task at a time (the retention
        sweep). A store that only one process uses always grants it."""
        yield True

    @abstractmethod
    def leases(self, owner: str, ttl_seconds: float) -> RunLeases:
        """Leases on runs, shared by every process using this store, taken as `owner`
        and expiring `ttl_seconds` after their last renewal."""

    def on_remote_revision(self, listener: RevisionListener) -> None:
        """Calls `listener` for every revision another replica stores, in commit order
        (for example so the replica executing a run hears that it is CANCELLING). A store
        that only one process uses has no such revisions."""
        return None

    async def close(self) -> None:
        """Releases connections."""
        return None

    def watch(self, run_id: str, after_revision: int = 0) -> AsyncGenerator[Run, None]:
        """The WatchRun contract (see RunFollower) as an async generator of revisions."""
        return RunFollower(self, run_id, after_revision).revisions()
