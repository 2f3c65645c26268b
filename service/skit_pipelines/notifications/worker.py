"""The delivery worker: turns the run change feed into deliveries and sends them.

At least once, from a stored cursor. A pass reads the feed after the subscriptions'
cursors and, per subscription, stores the deliveries of the changes it wants AND moves
its cursor past them in one transaction (RunStore.advance_subscription, a compare-and-set
on the cursor). A crash before that commit rereads the same changes; after it, the
deliveries are stored: nothing is lost, and the dedupe key (run, state) keeps a reread
change from making a second delivery.

Exactly one replica delivers each:
- Reading the feed is one replica at a time, under the store's exclusive "notifier" task
  (a PostgreSQL advisory lock, as the Scheduler's passes); the cursor compare-and-set
  makes a stale second reader's work a no-op even so.
- Sending is shared by every replica through row claims: claim_deliveries takes due
  PENDING deliveries and moves their next attempt `claim_seconds` ahead in the same
  statement, so no other replica sees them due meanwhile. The attempt's outcome replaces
  the claim. A replica that dies mid-send leaves a claim that expires, and another replica
  sends again: at least once, duplicated only across such a crash (receivers deduplicate
  on Skit-Delivery).

A failing sink blocks nobody: each delivery is scheduled on its own (exponential backoff
with jitter, for RETRY_WINDOW), sends run concurrently up to `concurrency`, and one
subscription holds at most `per_subscription` of those slots.

A pass runs at each run change, at each wake (a subscription created or deleted here, a
send ended) and every `poll_seconds`; while the worker knows of no subscription, run
changes do not wake it (they cannot make deliveries).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from skit_pipelines.errors import NotFound
from skit_pipelines.notifications.model import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    SlackSink,
    Subscription,
    WebhookSink,
)
from skit_pipelines.notifications.sinks.base import Sender, SendResult
from skit_pipelines.notifications.sinks.webhook import where
from skit_pipelines.store.base import RunStore

logger = logging.getLogger(__name__)

NOTIFIER_TASK = "notifier"
"""Reading the feed among the store's exclusive tasks: one replica at a time."""
RETRY_WINDOW = timedelta(hours=24)
"""How long a delivery is retried (from when it was recorded) before it FAILS."""
DEFAULT_RETRY_BASE_SECONDS = 30.0
"""The first retry's delay; it doubles with each attempt (jittered), up to the max."""
MAX_RETRY_DELAY_SECONDS = 3600.0
DEFAULT_CONCURRENCY = 16
DEFAULT_PER_SUBSCRIPTION = 4
CLAIM_SECONDS = 120.0
"""How long a claimed delivery is not due for anyone else: longer than any send."""
SEND_DEADLINE_SECONDS = 60.0
"""The most one send may take before it counts as failed (sinks time out sooner)."""
FEED_BATCH = 500
MAX_BATCHES_PER_PASS = 20
"""A pass lets go of the notifier task after this many batches (others get a turn)."""
DEFAULT_POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
"""How long stopping waits for sends in flight (a cancelled send is sent again later)."""

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeliverySettings:
    retry_base_seconds: float = DEFAULT_RETRY_BASE_SECONDS
    retry_max_seconds: float = MAX_RETRY_DELAY_SECONDS
    retry_window: timedelta = RETRY_WINDOW
    concurrency: int = DEFAULT_CONCURRENCY
    per_subscription: int = DEFAULT_PER_SUBSCRIPTION
    claim_seconds: float = CLAIM_SECONDS
    poll_seconds: float = DEFAULT_POLL_SECONDS


def retry_delay(attempts: int, settings: DeliverySettings, rand: Callable[[], float]) -> float:
    """The wait after the `attempts`-th failed attempt: exponential, capped, with "equal
    jitter" (half fixed, half random) so that receivers back up together do not get
    every retry at the same instant."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2.0 ** (attempts - 1))
    return float(ceiling / 2 + rand() * ceiling / 2)


def _target(subscription: Subscription) -> str:
    """Where a subscription sends, safe to log."""
    sink = subscription.sink
    if isinstance(sink, SlackSink):
        return f"slack {sink.channel}"
    return f"webhook {where(sink.url)}"


class DeliveryWorker:
    """`start` runs passes until `stop`; tests call scan_once and dispatch_once."""

    def __init__(
        self,
        store: RunStore,
        senders: Mapping[type[SlackSink] | type[WebhookSink], Sender],
        *,
        settings: DeliverySettings | None = None,
        clock: Clock = _utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._senders = senders
        self._settings = settings or DeliverySettings()
        self._clock = clock
        self._rand = rand
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._per_subscription: dict[str, int] = {}
        self._seen_cursor = 0
        self._no_subscriptions = False
        """Whether the last pass that read the feed found no subscription: until one
        exists, run changes cannot make deliveries (a new subscription reads from the
        cursor at its creation), so the worker stops waking at every change. A
        subscription created here wakes it; one created by another replica is found by
        the next pass, within `poll_seconds`."""
        self.attempts = 0
        """Attempts this worker made, for tests."""
        self.passes = 0
        """Passes of its loop (feed scan and dispatch), for tests."""

    def wake(self) -> None:
        """Runs the next pass now (a subscription changed, a send finished)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run_forever(), name="delivery-worker"
            )

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stops passes, lets sends in flight finish and record their outcome for up to
        `grace` seconds, then cancels the rest: their claims expire and another replica
        (or the next start) sends them again."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sends:
            await asyncio.wait(list(self._sends), timeout=grace)
        sends = list(self._sends)
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        self._task = None
        self._sends.clear()
        self._per_subscription.clear()

    async def idle(self) -> None:
        """Waits for the sends in flight (tests)."""
        while self._sends:
            await asyncio.gather(*list(self._sends), return_exceptions=True)

    async def _run_forever(self) -> None:
        while True:
            self.passes += 1
            # Cleared before the pass: a wake during it (a send ended) runs the next one.
            self._wake.clear()
            try:
                await self.scan_once()
                await self.dispatch_once()
            except Exception:
                # The store may be away: the cursors and claims are in it, so the next
                # pass resumes where this one stopped.
                logger.exception("notification pass failed; retrying")
            waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wake.wait())}
            if not self._no_subscriptions:
                # With no subscriptions, a pass at every run change would only list them
                # again (measured: 0.2-0.4 ms of the event loop per revision, next to its
                # fan-out), so then only a wake or the poll runs the next one.
                waits.add(
                    asyncio.ensure_future(
                        self._store.wait_for_change(self._seen_cursor, self._settings.poll_seconds)
                    )
                )
            try:
                await asyncio.wait(
                    waits, timeout=self._settings.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for future in waits:
                    future.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    # Reading the feed

    async def _subscriptions(self) -> list[Subscription]:
        found: list[Subscription] = []
        after = ""
        while True:
            page = await self._store.list_subscriptions(1000, after)
            found.extend(page.subscriptions)
            if not page.more or not page.subscriptions:
                return found
            after = page.subscriptions[-1].id

    async def scan_once(self) -> int:
        """Turns the feed's new changes into deliveries, if no other replica is doing
        so; returns how many subscriptions moved their cursor."""
        async with self._store.exclusive(NOTIFIER_TASK) as held:
            if not held:
                # Another replica reads the feed: wait for changes newer than what this
                # process knows of, instead of waking at once for ones it will not read.
                self._seen_cursor = max(self._seen_cursor, self._store.change_signal.latest)
                self._no_subscriptions = False
                return 0
            return await self._scan()

    async def _scan(self) -> int:
        subscriptions = {s.id: s for s in await self._subscriptions()}
        self._no_subscriptions = not subscriptions
        moved = 0
        for _ in range(MAX_BATCHES_PER_PASS):
            if not subscriptions:
                self._seen_cursor = await self._store.latest_change_cursor()
                return moved
            low = min(s.cursor for s in subscriptions.values())
            page = await self._store.changes_after(low, FEED_BATCH)
            self._seen_cursor = max(self._seen_cursor, page.latest_cursor)
            if page.too_old:
                moved += await self._skip_gap(subscriptions, page.oldest_cursor, page.latest_cursor)
                continue
            if not page.changes:
                return moved
            upto = page.changes[-1].cursor
            for subscription in list(subscriptions.values()):
                if subscription.cursor >= upto:
                    continue
                now = self._clock()
                deliveries = [
                    Delivery(
                        subscription_id=subscription.id,
                        cursor=change.cursor,
                        run=change.run,
                        state=DeliveryState.PENDING,
                        create_time=now,
                        next_attempt_time=now,
                    )
                    for change in page.changes
                    if change.cursor > subscription.cursor
                    and not change.deleted
                    and subscription.wants(change.run)
                ]
                try:
                    advanced = await self._store.advance_subscription(
                        subscription.id, subscription.cursor, upto, deliveries
                    )
                except Exception:
                    # One subscription's trouble is not the others'.
                    logger.exception("recording deliveries of %s failed", subscription.name)
                    subscriptions.pop(subscription.id)
                    continue
                if not advanced:
                    # Deleted, or moved by a stale pass elsewhere: reread next pass.
                    subscriptions.pop(subscription.id)
                    continue
                moved += 1
                subscriptions[subscription.id] = _at(subscription, upto)
                if deliveries:
                    logger.info(
                        "%s: %s new deliveries up to cursor %s",
                        subscription.name,
                        len(deliveries),
                        upto,
                    )
            if len(page.changes) < FEED_BATCH:
                return moved
        return moved

    async def _skip_gap(
        self, subscriptions: dict[str, Subscription], oldest: int, latest: int
    ) -> int:
        """The feed no longer holds some subscriptions' next changes (pruned, or the
        cursor is from another store): they continue from what is held, loudly."""
        moved = 0
        for subscription in list(subscriptions.values()):
            if subscription.cursor > latest:
                target = latest
            elif subscription.cursor < oldest - 1:
                target = oldest - 1
            else:
                continue
            logger.error(
                "%s: the change feed no longer holds the changes after cursor %s (it keeps"
                " %s to %s); continuing from %s: notifications of the changes in between"
                " are lost",
                subscription.name,
                subscription.cursor,
                oldest,
                latest,
                target,
            )
            if await self._store.advance_subscription(
                subscription.id, subscription.cursor, target, []
            ):
                subscriptions[subscription.id] = _at(subscription, target)
                moved += 1
            else:
                subscriptions.pop(subscription.id)
        return moved

    # Sending

    async def dispatch_once(self) -> int:
        """Claims due deliveries for the free send slots and starts sending them;
        returns how many started."""
        free = self._settings.concurrency - len(self._sends)
        if free <= 0:
            return 0
        busy = [
            sid for sid, n in self._per_subscription.items() if n >= self._settings.per_subscription
        ]
        now = self._clock()
        claimed = await self._store.claim_deliveries(
            now,
            now + timedelta(seconds=self._settings.claim_seconds),
            free,
            busy,
            per_subscription=self._settings.per_subscription,
        )
        for delivery in claimed:
            sid = delivery.subscription_id
            self._per_subscription[sid] = self._per_subscription.get(sid, 0) + 1
            task = asyncio.get_running_loop().create_task(
                self._send(delivery), name=f"deliver {delivery.name}"
            )
            self._sends.add(task)
            task.add_done_callback(functools.partial(self._sent, subscription_id=sid))
        return len(claimed)

    def _sent(self, task: asyncio.Task[None], *, subscription_id: str) -> None:
        self._sends.discard(task)
        left = self._per_subscription.get(subscription_id, 1) - 1
        if left > 0:
            self._per_subscription[subscription_id] = left
        else:
            self._per_subscription.pop(subscription_id, None)
        self.wake()

    async def _send(self, delivery: Delivery) -> None:
        try:
            subscription = await self._store.get_subscription(delivery.subscription_id)
        except NotFound:
            return  # deleted with its deliveries
        except Exception:
            logger.exception("reading %s failed; its claim expires", delivery.name)
            return
        try:
            sender = self._senders[type(subscription.sink)]
            async with asyncio.timeout(SEND_DEADLINE_SECONDS):
                result = await sender.send(subscription, delivery)
        except Exception as error:
            logger.exception("sending %s failed", delivery.name)
            result = SendResult(outcome=f"internal error: {type(error).__name__}")
        self.attempts += 1
        try:
            await self._record(subscription, delivery, result)
        except Exception:
            # The store is away: the claim expires and the delivery is sent again.
            logger.exception("recording the attempt at %s failed", delivery.name)

    async def _record(
        self, subscription: Subscription, delivery: Delivery, result: SendResult
    ) -> None:
        now = self._clock()
        attempt = DeliveryAttempt(now, result.outcome[:500], result.http_status)
        number = len(delivery.attempts) + 1
        next_time: datetime | None = None
        if result.delivered:
            state = DeliveryState.DELIVERED
        elif result.permanent:
            state = DeliveryState.FAILED
        else:
            delay = retry_delay(number, self._settings, self._rand)
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            next_time = now + timedelta(seconds=delay)
            if next_time > delivery.create_time + self._settings.retry_window:
                state, next_time = DeliveryState.FAILED, None
            else:
                state = DeliveryState.PENDING
        updated = delivery.attempted(attempt, state, next_time)
        await self._store.record_attempt(updated)
        target = _target(subscription)
        if state is DeliveryState.DELIVERED:
            logger.info(
                "delivered %s (%s %s) to %s: %s",
                delivery.name,
                delivery.run.name,
                delivery.run.state.name,
                target,
                result.outcome,
            )
        elif state is DeliveryState.FAILED:
            logger.error(
                "gave up on %s (%s %s) to %s after %s attempts: %s",
                delivery.name,
                delivery.run.name,
                delivery.run.state.name,
                target,
                number,
                result.outcome,
            )
        else:
            assert next_time is not None
            logger.warning(
                "attempt %s of %s to %s failed: %s; next in %.1fs",
                number,
                delivery.name,
                target,
                result.outcome,
                (next_time - now).total_seconds(),
            )


def _at(subscription: Subscription, cursor: int) -> Subscription:
    return replace(subscription, cursor=cursor)
