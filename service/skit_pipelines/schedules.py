"""Schedules: the controller behind the Schedule RPCs, and the scheduler that makes runs.

Exactly one run per tick: the scheduler creates each tick's run through
`RunController.create_run` as the schedule's creator, with a request_id derived from
(schedule, incarnation, tick). create_run's idempotency then turns a second attempt at a
tick (a retry, a restart before the schedule's cursor was stored, another replica) into
the same run. Besides, replicas sharing PostgreSQL take turns: a pass runs only under
the store's exclusive "scheduler" task (an advisory lock), and every pass moves the
schedule's cursor past the ticks it handled.

A tick is on time when a pass sees it within `misfire_grace` of its time; older ticks
were missed (no scheduler ran) and follow the schedule's CatchupPolicy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from skit_pipelines import names
from skit_pipelines.catalog import Catalog, resolve_parameters
from skit_pipelines.domain import ANONYMOUS_ADMIN, Principal, Run, RunState
from skit_pipelines.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    PipelinesError,
    Unavailable,
)
from skit_pipelines.limits import RequestLimits, check_labels, check_parameters
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.base import RunQuery, RunStore
from skit_pipelines.triggers import (
    DEFAULT_CATCHUP_WINDOW,
    MAX_CATCHUP_WINDOW,
    MAX_CONCURRENCY,
    CatchupPolicy,
    OverlapPolicy,
    Schedule,
    Trigger,
)

logger = logging.getLogger(__name__)

SCHEDULE_LABEL = "skit-schedule"
"""The label every run of a schedule carries: the schedule's id."""
TICK_LABEL = "skit-schedule-tick"
"""The label every run of a schedule carries: its tick's time, UTC, RFC 3339."""
RESERVED_LABELS = frozenset({SCHEDULE_LABEL, TICK_LABEL})
SCHEDULER_TASK = "scheduler"
"""The scheduler among the store's exclusive tasks: one replica runs a pass at a time."""
UPCOMING_TICKS = 5
MAX_BACKFILL_TICKS = 1000
MAX_CATCHUP_RUNS = 1000
"""The most missed ticks RUN_ALL runs in one pass; older ones are skipped."""
MAX_PAUSE_REASON = 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_MISFIRE_GRACE = timedelta(seconds=10)
DEFAULT_POLL_SECONDS = 1.0
"""The longest a scheduler sleeps: how soon it sees a schedule another replica made."""
_ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING})
_ONE_MICROSECOND = timedelta(microseconds=1)
UPDATABLE_FIELDS = (
    "parameters",
    "labels",
    "trigger",
    "start_time",
    "end_time",
    "max_concurrency",
    "overlap_policy",
    "catchup_policy",
    "catchup_window",
    "disable_cache",
)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def tick_label(tick: datetime) -> str:
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_request_id(schedule: Schedule, tick: datetime) -> str:
    """Deterministic per (schedule incarnation, tick): the key of exactly one run."""
    return f"schedule:{schedule.id}:{schedule.incarnation}:{tick_label(tick)}"


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule's settable fields, as a request gives them (unchecked)."""

    pipeline: str = ""
    """"pipelines/{pipeline}"."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    trigger: Trigger = field(default_factory=Trigger)
    start_time: datetime | None = None
    end_time: datetime | None = None
    max_concurrency: int = 0
    overlap_policy: int = 0
    catchup_policy: int = 0
    catchup_window: timedelta | None = None
    disable_cache: bool = False


def _enum(kind: type[OverlapPolicy] | type[CatchupPolicy], number: int, field: str) -> Any:
    if number not in kind.__members__.values():
        raise InvalidArgument(f"{field} has an unknown value {number}", field=field)
    member = kind(number)
    return kind.SKIP if member == kind.UNSPECIFIED else member


def _as_schedule_field(error: InvalidArgument) -> InvalidArgument:
    """CreateRun's parameter violations ("run.parameters.x") as the schedule's fields."""
    violations = [
        FieldViolation(v.field.replace("run.", "schedule.", 1), v.description)
        for v in error.violations
    ]
    return InvalidArgument(error.message, violations=violations, reason=error.reason)


class ScheduleController:
    """Validates, stores and changes schedules; backfills them. The scheduler below makes
    their runs."""

    def __init__(
        self,
        runs: RunController,
        catalog: Catalog,
        *,
        clock: Clock = _utcnow,
        limits: RequestLimits | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._runs = runs
        self._store: RunStore = runs.store
        self._catalog = catalog
        self._clock = clock
        self._limits = limits or RequestLimits()
        self._on_change = on_change or (lambda: None)

    def set_on_change(self, on_change: Callable[[], None]) -> None:
        """Called after every change that may move a schedule's next tick (the local
        scheduler wakes up)."""
        self._on_change = on_change

    def _checked(self, spec: ScheduleSpec) -> dict[str, Any]:
        """The schedule's fields from `spec`, checked; InvalidArgument naming the field."""
        pipeline_id = names.parse_name(spec.pipeline, "pipelines", field="schedule.pipeline")
        spec.trigger.check()
        if not (0 <= spec.max_concurrency <= MAX_CONCURRENCY):
            raise InvalidArgument(
                f"max_concurrency must be 1 to {MAX_CONCURRENCY} (0 means 1)",
                field="schedule.max_concurrency",
            )
        window = spec.catchup_window or DEFAULT_CATCHUP_WINDOW
        if window <= timedelta(0) or window > MAX_CATCHUP_WINDOW:
            raise InvalidArgument(
                f"catchup_window must be more than 0 and at most {MAX_CATCHUP_WINDOW.days} days",
                field="schedule.catchup_window",
            )
        if spec.start_time and spec.end_time and spec.end_time <= spec.start_time:
            raise InvalidArgument("end_time must be after start_time", field="schedule.end_time")
        check_labels(spec.labels, self._limits, field="schedule.labels")
        for key in RESERVED_LABELS & set(spec.labels):
            raise InvalidArgument(
                f"label {key} is set by the schedule on its runs", field=f"schedule.labels.{key}"
            )
        check_parameters(spec.parameters, self._limits)
        pipeline = self._catalog.get(pipeline_id)
        try:
            parameters = resolve_parameters(pipeline, spec.parameters)
        except InvalidArgument as error:
            raise _as_schedule_field(error) from None
        # Stored as given (defaults resolve at each tick, against the pipeline then);
        # checked now so a typo shows at once.
        del parameters
        return {
            "pipeline": pipeline_id,
            "parameters": dict(spec.parameters),
            "labels": dict(spec.labels),
            "trigger": spec.trigger,
            "start_time": spec.start_time,
            "end_time": spec.end_time,
            "max_concurrency": spec.max_concurrency or 1,
            "overlap_policy": _enum(OverlapPolicy, spec.overlap_policy, "schedule.overlap_policy"),
            "catchup_policy": _enum(CatchupPolicy, spec.catchup_policy, "schedule.catchup_policy"),
            "catchup_window": window,
            "disable_cache": spec.disable_cache,
        }

    async def create_schedule(
        self,
        spec: ScheduleSpec,
        *,
        schedule_id: str = "",
        request_id: str = "",
        principal: Principal = ANONYMOUS_ADMIN,
    ) -> Schedule:
        if schedule_id:
            names.check_id(schedule_id, field="schedule_id")
        if request_id:
            names.check_request_id(request_id)
        values = self._checked(spec)
        now = self._clock()
        schedule = Schedule(
            id=schedule_id or names.new_run_id(values["pipeline"]),
            creator=principal.name,
            create_time=now,
            update_time=now,
            incarnation=secrets.token_hex(6),
            request_id=request_id,
            # Ticks from now on: the first is the first after creation.
            cursor=now,
            **values,
        )
        request_hash = hashlib.sha256(
            json.dumps(
                [schedule_id, values, sorted(schedule.parameters)], sort_keys=True, default=str
            ).encode()
        ).hexdigest()
        outcome = await self._store.create_schedule(schedule, request_hash)
        if not outcome.created:
            if outcome.request_hash != request_hash:
                raise AlreadyExists(
                    f"request_id {request_id!r} was already used for a different request,"
                    f" which created {outcome.schedule.name}",
                    resource_name=outcome.schedule.name,
                    reason="REQUEST_ID_REUSED",
                )
            return outcome.schedule
        logger.info("created %s of %s", schedule.name, schedule.pipeline)
        self._on_change()
        return schedule

    async def get_schedule(self, name: str) -> Schedule:
        return await self._store.get_schedule(names.parse_name(name, "schedules"))

    async def list_schedules(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Schedule], str]:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", field="page_size")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token) if page_token else ""
        page = await self._store.list_schedules(size, after)
        token = _encode_token(page.schedules[-1].id) if page.more and page.schedules else ""
        return list(page.schedules), token

    async def _owned(self, name: str, principal: Principal, action: str) -> Schedule:
        schedule = await self.get_schedule(name)
        if not principal.may_act_on(schedule.creator):
            raise PermissionDenied(
                f"{principal.name} may not {action} {schedule.name}, which"
                f" {schedule.creator or 'another'} created; only its creator or an admin may",
                reason="NOT_SCHEDULE_OWNER",
            )
        return schedule

    async def update_schedule(
        self,
        name: str,
        spec: ScheduleSpec,
        update_mask: Sequence[str] = (),
        *,
        principal: Principal = ANONYMOUS_ADMIN,
    ) -> Schedule:
        current = await self._owned(name, principal, "update")
        for path in update_mask:
            if path not in UPDATABLE_FIELDS:
                raise InvalidArgument(
                    f"update_mask names {path[:100]!r}, which cannot be changed; changeable:"
                    f" {', '.join(UPDATABLE_FIELDS)}",
                    field="update_mask",
                )
        paths = set(update_mask or UPDATABLE_FIELDS)
        merged = ScheduleSpec(
            pipeline=f"pipelines/{current.pipeline}",
            parameters=spec.parameters if "parameters" in paths else current.parameters,
            labels=spec.labels if "labels" in paths else current.labels,
            trigger=spec.trigger if "trigger" in paths else current.trigger,
            start_time=spec.start_time if "start_time" in paths else current.start_time,
            end_time=spec.end_time if "end_time" in paths else current.end_time,
            max_concurrency=spec.max_concurrency
            if "max_concurrency" in paths
            else current.max_concurrency,
            overlap_policy=spec.overlap_policy
            if "overlap_policy" in paths
            else int(current.overlap_policy),
            catchup_policy=spec.catchup_policy
            if "catchup_policy" in paths
            else int(current.catchup_policy),
            catchup_window=spec.catchup_window
            if "catchup_window" in paths
            else current.catchup_window,
            disable_cache=spec.disable_cache if "disable_cache" in paths else current.disable_cache,
        )
        values = self._checked(merged)
        now = self._clock()

        def updated(schedule: Schedule) -> Schedule:
            changed = replace(schedule, update_time=now, **values)
            if changed.trigger != schedule.trigger or changed.start_time != schedule.start_time:
                # A new timetable starts now: the old one's missed ticks are not its own.
                changed = replace(changed, cursor=max(schedule.cursor, now))
            return changed

        result = await self._store.update_schedule(current.id, updated)
        self._on_change()
        return result

    async def pause_schedule(
        self, name: str, reason: str = "", *, principal: Principal = ANONYMOUS_ADMIN
    ) -> Schedule:
        current = await self._owned(name, principal, "pause")
        if len(reason) > MAX_PAUSE_REASON:
            raise InvalidArgument(
                f"reason must be at most {MAX_PAUSE_REASON} characters", field="reason"
            )
        now = self._clock()
        result = await self._store.update_schedule(
            current.id,
            lambda s: replace(s, paused=True, pause_reason=reason, update_time=now),
        )
        logger.info("paused %s: %s", result.name, reason or "no reason given")
        return result

    async def resume_schedule(
        self, name: str, *, principal: Principal = ANONYMOUS_ADMIN
    ) -> Schedule:
        current = await self._owned(name, principal, "resume")
        now = self._clock()

        def resumed(schedule: Schedule) -> Schedule:
            if not schedule.paused:
                return schedule
            # Ticks that fell while paused are not missed ones: none is caught up.
            return replace(
                schedule,
                paused=False,
                pause_reason="",
                update_time=now,
                cursor=max(schedule.cursor, now),
            )

        result = await self._store.update_schedule(current.id, resumed)
        self._on_change()
        return result

    async def delete_schedule(self, name: str, *, principal: Principal = ANONYMOUS_ADMIN) -> None:
        current = await self._owned(name, principal, "delete")
        await self._store.delete_schedule(current.id)
        logger.info("deleted %s", current.name)

    async def backfill_schedule(
        self,
        name: str,
        start_time: datetime | None,
        end_time: datetime | None,
        *,
        principal: Principal = ANONYMOUS_ADMIN,
    ) -> list[Run]:
        schedule = await self._owned(name, principal, "backfill")
        if start_time is None:
            raise InvalidArgument("start_time is required", field="start_time")
        if end_time is None:
            raise InvalidArgument("end_time is required", field="end_time")
        if end_time <= start_time:
            raise InvalidArgument("end_time must be after start_time", field="end_time")
        ticks: list[datetime] = []
        for tick in schedule.trigger.ticks(start_time - _ONE_MICROSECOND, schedule.anchor):
            if tick >= end_time:
                break
            if len(ticks) >= MAX_BACKFILL_TICKS:
                raise InvalidArgument(
                    f"[start_time, end_time) holds more than {MAX_BACKFILL_TICKS} ticks;"
                    " backfill a shorter range",
                    field="end_time",
                )
            ticks.append(tick)
        runs: list[Run] = []
        made = 0
        for tick in ticks:
            run, created = await create_tick_run(self._runs, schedule, tick)
            runs.append(run)
            made += created
        if made:
            await self._store.update_schedule(
                schedule.id,
                lambda s: (
                    replace(s, runs_created=s.runs_created + made)
                    if s.incarnation == schedule.incarnation
                    else s
                ),
            )
        logger.info("backfilled %s: %s ticks, %s new runs", schedule.name, len(ticks), made)
        return runs


async def create_tick_run(
    runs: RunController, schedule: Schedule, tick: datetime
) -> tuple[Run, bool]:
    """The run of `tick` (made now, or the one an earlier attempt made) and whether this
    call made it."""
    request_id = tick_request_id(schedule, tick)
    # Looked up first only to count runs made (create_run would return it as well).
    earlier = await runs.store.list_runs(
        RunQuery(labels={SCHEDULE_LABEL: schedule.id, TICK_LABEL: tick_label(tick)}, page_size=10)
    )
    for run in earlier.runs:
        if run.request_id == request_id:
            return run, False
    request = CreateRunInput(
        pipeline=f"pipelines/{schedule.pipeline}",
        parameters=schedule.parameters,
        labels={**schedule.labels, SCHEDULE_LABEL: schedule.id, TICK_LABEL: tick_label(tick)},
        request_id=request_id,
        creator=schedule.creator,
        disable_cache=schedule.disable_cache,
    )
    try:
        run = await runs.create_run(request)
    except AlreadyExists as error:
        if error.reason != "REQUEST_ID_REUSED":
            raise
        # The tick's run exists, made before the schedule's parameters changed.
        return await runs.get_run(error.resource_name), False
    return run, True


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(data["after"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not a token this server issued", field="page_token"
        ) from None


@dataclass(frozen=True)
class _Outcome:
    """What a pass did for one schedule, applied to it in one update."""

    cursor: datetime
    last_tick: datetime
    last_run: str = ""
    created: int = 0
    skipped: int = 0
    cancelled: int = 0
    skip_reason: str = ""


class Scheduler:
    """Makes the runs of every schedule's ticks. `run_once` is one pass at the clock's
    time (tests drive it with their own clock); `start` runs passes until `stop`."""

    def __init__(
        self,
        runs: RunController,
        *,
        clock: Clock = _utcnow,
        misfire_grace: timedelta = DEFAULT_MISFIRE_GRACE,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self._runs = runs
        self._store: RunStore = runs.store
        self._clock = clock
        self._grace = misfire_grace
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        """Passes this scheduler ran (it held the scheduler task), for tests."""

    def wake(self) -> None:
        """Runs the next pass now (a schedule changed)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run_forever(), name="scheduler"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def pass_once(self) -> float | None:
        """A pass if no other replica is running one: run_once's wait, or None."""
        async with self._store.exclusive(SCHEDULER_TASK) as held:
            if not held:
                return None
            return await self.run_once()

    async def _run_forever(self) -> None:
        while True:
            wait = self._poll_seconds
            try:
                waited = await self.pass_once()
                if waited is not None:
                    wait = waited
            except Exception:
                # The store may be away; the next pass catches up (ticks are missed, not
                # lost: the catch-up policy decides).
                logger.exception("scheduler pass failed; retrying in %ss", wait)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.001)):
                    await self._wake.wait()

    async def run_once(self) -> float:
        """One pass over every schedule; returns the seconds until the next tick is due
        (at most poll_seconds)."""
        self.passes += 1
        now = self._clock()
        soonest = now + timedelta(seconds=self._poll_seconds)
        after = ""
        while True:
            page = await self._store.list_schedules(MAX_PAGE_SIZE, after)
            for schedule in page.schedules:
                try:
                    schedule = await self._tick(schedule, now)
                except Unavailable:
                    raise
                except Exception:
                    logger.exception("scheduling %s failed", schedule.name)
                    continue
                upcoming = schedule.next_tick()
                if upcoming is not None:
                    soonest = min(soonest, upcoming)
            if not page.more or not page.schedules:
                break
            after = page.schedules[-1].id
        return max((soonest - self._clock()).total_seconds(), 0.0)

    async def _tick(self, schedule: Schedule, now: datetime) -> Schedule:
        """Handles the schedule's ticks due at `now`; returns the schedule as stored."""
        if schedule.paused:
            return schedule
        after = schedule.cursor
        if schedule.start_time is not None and schedule.start_time - _ONE_MICROSECOND > after:
            after = schedule.start_time - _ONE_MICROSECOND
        until = now
        if schedule.end_time is not None and schedule.end_time - _ONE_MICROSECOND < until:
            until = schedule.end_time - _ONE_MICROSECOND
        latest, due = schedule.trigger.latest_at_or_before(until, after, schedule.anchor)
        if latest is None:
            return schedule
        on_time = latest >= now - self._grace
        policy = schedule.catchup_policy
        to_run: list[datetime] = []
        if policy is CatchupPolicy.RUN_ALL:
            since = max(after, now - schedule.catchup_window)
            for tick in schedule.trigger.ticks(since, schedule.anchor):
                if tick > latest:
                    break
                to_run.append(tick)
            to_run = to_run[-MAX_CATCHUP_RUNS:]
        elif on_time or policy is CatchupPolicy.RUN_LATEST:
            to_run = [latest]
        missed = due - len(to_run)
        outcome = _Outcome(cursor=latest, last_tick=latest)
        if missed:
            outcome = replace(
                outcome,
                skipped=missed,
                skip_reason=f"MISSED: {missed} ticks passed while no scheduler ran"
                f" (catchup_policy {policy.name})",
            )
            logger.warning("%s: %s", schedule.name, outcome.skip_reason)
        for tick in to_run:
            outcome = await self._fire(schedule, tick, outcome)
        return await self._store.update_schedule(schedule.id, _applying(schedule, outcome))

    async def _fire(self, schedule: Schedule, tick: datetime, outcome: _Outcome) -> _Outcome:
        label = tick_label(tick)
        active = await self._active_runs(schedule)
        if any(run.labels.get(TICK_LABEL) == label for run in active):
            return outcome  # made by an earlier pass whose cursor was not stored
        excess = len(active) - schedule.max_concurrency + 1
        cancelled = 0
        if excess > 0:
            if schedule.overlap_policy is OverlapPolicy.SKIP:
                reason = (
                    f"MAX_CONCURRENCY: {len(active)} runs active (max_concurrency"
                    f" {schedule.max_concurrency}); tick {label} skipped"
                )
                logger.info("%s: %s", schedule.name, reason)
                return replace(outcome, skipped=outcome.skipped + 1, skip_reason=reason)
            for run in sorted(active, key=lambda r: (r.create_time, r.id))[:excess]:
                with contextlib.suppress(PipelinesError):
                    await self._runs.cancel_run(run.name)
                    cancelled += 1
                    logger.info(
                        "%s: cancelled %s to make room for tick %s (CANCEL_OLDEST)",
                        schedule.name,
                        run.name,
                        label,
                    )
        try:
            run, created = await create_tick_run(self._runs, schedule, tick)
        except Unavailable:
            raise
        except PipelinesError as error:
            reason = f"CREATE_FAILED: tick {label}: {error.message}"
            logger.warning("%s: %s", schedule.name, reason)
            return replace(
                outcome,
                skipped=outcome.skipped + 1,
                cancelled=outcome.cancelled + cancelled,
                skip_reason=reason[:1000],
            )
        return replace(
            outcome,
            last_run=run.name,
            created=outcome.created + created,
            cancelled=outcome.cancelled + cancelled,
        )

    async def _active_runs(self, schedule: Schedule) -> list[Run]:
        page = await self._store.list_runs(
            RunQuery(
                labels={SCHEDULE_LABEL: schedule.id},
                states=_ACTIVE,
                page_size=MAX_PAGE_SIZE,
            )
        )
        return list(page.runs)


def _applying(read: Schedule, outcome: _Outcome) -> Callable[[Schedule], Schedule]:
    def apply(schedule: Schedule) -> Schedule:
        # Deleted and created again since the pass read it: the outcome is not its own.
        if schedule.incarnation != read.incarnation:
            return schedule
        return replace(
            schedule,
            # A pause, resume or new trigger meanwhile may have moved it further already.
            cursor=max(schedule.cursor, outcome.cursor),
            last_tick_time=max(schedule.last_tick_time or outcome.last_tick, outcome.last_tick),
            last_run=outcome.last_run or schedule.last_run,
            runs_created=schedule.runs_created + outcome.created,
            ticks_skipped=schedule.ticks_skipped + outcome.skipped,
            runs_cancelled=schedule.runs_cancelled + outcome.cancelled,
            last_skip_reason=outcome.skip_reason or schedule.last_skip_reason,
        )

    return apply
