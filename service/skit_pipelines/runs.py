"""The runs controller: validation, idempotency, create, cancel, watch and recovery.

It owns run behaviour; the servicer only translates, the store only persists, the
backend only executes (and reports back through the RunSink methods below). Each state
change it stores is told to a RunObserver (telemetry), which server.py wires in.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from skit_pipelines import names
from skit_pipelines.backends.base import Backend
from skit_pipelines.catalog import Catalog, resolve_parameters
from skit_pipelines.domain import (
    ANONYMOUS_ADMIN,
    Artifact,
    Code,
    ErrorInfo,
    LogLine,
    Pipeline,
    Principal,
    Run,
    RunState,
    Step,
    StepState,
)
from skit_pipelines.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from skit_pipelines.limits import RequestLimits, check_labels, check_parameters
from skit_pipelines.run_feed import FeedEvent, RunFeed, decode_cursor
from skit_pipelines.run_writes import Change, RunWrites
from skit_pipelines.store.base import RunFollower, RunPage, RunQuery, RunStore, sortable_time

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RunObserver(Protocol):
    """Hears each run change the controller has stored (telemetry.Telemetry: spans and
    metrics). Called on the event loop; must not block."""

    def run_created(self, run: Run) -> None:
        """`run` was stored, QUEUED."""

    def run_started(self, run: Run) -> None:
        """A backend started `run` (RUNNING, or already further along)."""

    def step_changed(self, run: Run, step: Step, previous: Step | None) -> None:
        """`step` was stored in `run`, replacing `previous` (None for a new step)."""

    def run_finished(self, run: Run) -> None:
        """`run` reached a terminal state: SUCCEEDED, FAILED or CANCELLED."""


class _Unobserved:
    """The RunObserver when nobody listens."""

    def run_created(self, run: Run) -> None:
        return None

    def run_started(self, run: Run) -> None:
        return None

    def step_changed(self, run: Run, step: Step, previous: Step | None) -> None:
        return None

    def run_finished(self, run: Run) -> None:
        return None


@dataclass(frozen=True)
class CreateRunInput:
    pipeline: str
    """"pipelines/{pipeline}"."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    run_id: str = ""
    request_id: str = ""
    creator: str = ""
    disable_cache: bool = False
    """No step of the run is looked up in the step cache (Run.disable_cache)."""

    def request_hash(self) -> str:
        body: dict[str, Any] = {
            "pipeline": self.pipeline,
            "parameters": self.parameters,
            "labels": self.labels,
            "run_id": self.run_id,
        }
        # Only when set: a request_id stored before the field existed, replayed with the
        # same body, still matches its hash.
        if self.disable_cache:
            body["disable_cache"] = True
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ListRunsInput:
    pipeline: str = ""
    """"pipelines/{pipeline}" or empty."""
    states: Sequence[int] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None
    page_size: int = 0
    page_token: str = ""

    def filter_hash(self) -> str:
        body = [
            self.pipeline,
            sorted(self.states),
            sorted(self.labels.items()),
            self.created_after and self.created_after.isoformat(),
            self.created_before and self.created_before.isoformat(),
        ]
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WatchRunsInput:
    filter: ListRunsInput = field(default_factory=ListRunsInput)
    """ListRuns' filter fields (its page fields are not used)."""
    after_cursor: str = ""
    """An opaque cursor from an earlier WatchRuns message; empty: from now."""
    initial_snapshot: bool = False


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def _page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_token(position: Any, filter_hash: str) -> str:
    raw = json.dumps({"p": position, "f": filter_hash}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, filter_hash: str) -> Any:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, token_filter = data["p"], data["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            "page_token is not a token this server issued", field="page_token"
        ) from exc
    if token_filter != filter_hash:
        raise InvalidArgument(
            "page_token belongs to a request with other filters", field="page_token"
        )
    return position


class StreamSlot:
    """One open stream counted against its principal's limit, for as long as the `with`
    block lasts.

    A class rather than a generator-based context manager: every open WatchRun holds
    one (and a RunWatch), and the two generator-based managers they replace, each a
    generator with its frame and an object with an instance dict, held 1 KiB per
    stream (10,000 held streams: 24.7 -> 23.7 KiB per stream).
    """

    __slots__ = ("_limit", "_principal", "_streams")

    def __init__(self, streams: dict[str, int], principal: str, limit: int) -> None:
        self._streams = streams
        self._principal = principal
        self._limit = limit

    def __enter__(self) -> None:
        held = self._streams.get(self._principal, 0)
        if held >= self._limit:
            raise ResourceExhausted(
                f"{self._principal or 'this client'} already has {held} open streams (the"
                f" limit); close some or retry later",
                retry_after=5.0,
                reason="TOO_MANY_STREAMS",
            )
        self._streams[self._principal] = held + 1

    def __exit__(self, *exc_info: object) -> None:
        remaining = self._streams[self._principal] - 1
        if remaining:
            self._streams[self._principal] = remaining
        else:
            del self._streams[self._principal]


class RunWatch:
    """An open WatchRun: entered, it takes the caller's stream slot and gives the store's
    follower of the run (first() still to be called); left, it closes the follower and
    frees the slot. A class for the reason StreamSlot is one."""

    __slots__ = ("_follower", "_slot")

    def __init__(self, slot: StreamSlot, follower: RunFollower) -> None:
        self._slot = slot
        self._follower = follower

    async def __aenter__(self) -> RunFollower:
        self._slot.__enter__()
        return self._follower

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            self._follower.close()
        finally:
            self._slot.__exit__()


class RunController:
    def __init__(
        self,
        store: RunStore,
        catalog: Catalog,
        backend: Backend,
        *,
        clock: Clock = _utcnow,
        max_streams_per_principal: int = 10_000,
        observer: RunObserver | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        self._store = store
        self._limits = limits or RequestLimits()
        self._catalog = catalog
        self._backend = backend
        self._clock = clock
        self._max_streams = max_streams_per_principal
        self._streams: dict[str, int] = {}
        self._draining = False
        self._observer: RunObserver = observer or _Unobserved()
        self._writes = RunWrites(store)
        self._feed = RunFeed(store)

    @property
    def store(self) -> RunStore:
        return self._store

    # Pipelines

    def list_pipelines(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Pipeline], str]:
        size = _page_size(page_size)
        start = int(_decode_token(page_token, "pipelines")) if page_token else 0
        pipelines = self._catalog.list()
        page = pipelines[start : start + size]
        more = start + size < len(pipelines)
        return page, _encode_token(start + size, "pipelines") if more else ""

    def get_pipeline(self, name: str) -> Pipeline:
        return self._catalog.get(names.parse_name(name, "pipelines"))

    # Runs

    def drain(self) -> None:
        """Refuses new runs from now on (UNAVAILABLE, so clients retry on another replica)."""
        self._draining = True

    def _check_accepting(self) -> None:
        if self._draining:
            raise Unavailable(
                "the server is shutting down and accepts no new runs; retry on another replica",
                reason="SHUTTING_DOWN",
            )

    def _stream_slot(self, principal: Principal) -> StreamSlot:
        return StreamSlot(self._streams, principal.name, self._max_streams)

    async def create_run(self, request: CreateRunInput) -> Run:
        self._check_accepting()
        pipeline_id = names.parse_name(request.pipeline, "pipelines", field="run.pipeline")
        if request.run_id:
            names.check_id(request.run_id, field="run_id")
        if request.request_id:
            names.check_request_id(request.request_id)
        check_labels(request.labels, self._limits)
        check_parameters(request.parameters, self._limits)
        pipeline = self._catalog.get(pipeline_id)
        parameters = resolve_parameters(pipeline, request.parameters)
        self._backend.check_runnable(pipeline, parameters)
        now = self._clock()
        run = Run(
            id=request.run_id or names.new_run_id(pipeline_id),
            pipeline=pipeline_id,
            pipeline_version=pipeline.version,
            parameters=parameters,
            labels=dict(request.labels),
            state=RunState.QUEUED,
            create_time=now,
            update_time=now,
            revision=1,
            request_id=request.request_id,
            creator=request.creator,
            backend=self._backend.name,
            disable_cache=request.disable_cache,
        )
        return await self._insert_and_submit(run, pipeline, request.request_hash())

    async def _insert_and_submit(self, run: Run, pipeline: Pipeline, request_hash: str) -> Run:
        """Stores the run with its request hash before anything is submitted, so a replayed
        request_id finds it; then hands it to the backend."""
        outcome = await self._store.create_run(run, request_hash)
        if not outcome.created:
            if outcome.request_hash != request_hash:
                raise AlreadyExists(
                    f"request_id {run.request_id!r} was already used for a different request,"
                    f" which created {outcome.run.name}",
                    resource_name=outcome.run.name,
                    reason="REQUEST_ID_REUSED",
                )
            return outcome.run
        logger.info("created %s of %s", run.name, pipeline.name, extra={"run": run.id})
        self._observer.run_created(outcome.run)
        await self._submit(run, pipeline)
        return run

    async def retry_run(
        self,
        name: str,
        *,
        run_id: str = "",
        request_id: str = "",
        principal: Principal = ANONYMOUS_ADMIN,
    ) -> Run:
        """A new run of a failed or cancelled run, reusing the steps that succeeded; it
        keeps the run's parameters, labels and cache setting."""
        self._check_accepting()
        source = await self._store.get_run(names.parse_name(name, "runs"))
        _check_owner(principal, source, "retry")
        if run_id:
            names.check_id(run_id, field="run_id")
        if request_id:
            names.check_request_id(request_id)
        if source.state not in (RunState.FAILED, RunState.CANCELLED):
            raise FailedPrecondition(
                f"{source.name} is {source.state.name}; only FAILED or CANCELLED runs can be"
                " retried",
                reason="RUN_NOT_RETRYABLE",
            )
        pipeline = self._catalog.get(source.pipeline)
        if pipeline.version != source.pipeline_version:
            raise FailedPrecondition(
                f"{source.name} ran pipeline version {source.pipeline_version}, which this"
                f" server no longer has (it has {pipeline.version})",
                reason="PIPELINE_VERSION_GONE",
            )
        self._backend.check_runnable(pipeline, source.parameters)
        reused = [
            replace(step, state=StepState.CACHED, cached=True)
            for step in source.steps
            if step.state in (StepState.SUCCEEDED, StepState.CACHED)
        ]
        order = self._catalog.step_order(source.pipeline, source.pipeline_version)
        if order is not None:
            reused.sort(key=order.key)
        now = self._clock()
        run = Run(
            id=run_id or names.new_run_id(source.pipeline),
            pipeline=source.pipeline,
            pipeline_version=source.pipeline_version,
            parameters=source.parameters,
            labels=source.labels,
            state=RunState.QUEUED,
            create_time=now,
            update_time=now,
            revision=1,
            steps=tuple(reused),
            request_id=request_id,
            retry_of=source.name,
            creator=principal.name,
            backend=self._backend.name,
            # The steps it reruns run as the source's did; the ones it reuses are the
            # source's own (above), whatever the cache setting.
            disable_cache=source.disable_cache,
        )
        request_hash = hashlib.sha256(f"retry\0{source.name}\0{run_id}".encode()).hexdigest()
        return await self._insert_and_submit(run, pipeline, request_hash)

    async def _submit(self, run: Run, pipeline: Pipeline) -> None:
        try:
            await self._backend.submit(run, pipeline)
        except FailedPrecondition as exc:
            # Runs that skip CreateRun's check (resumed, or stored by a replica deployed
            # differently) fail with the backend's reason: no retry can fix it.
            logger.warning("cannot submit %s: %s", run.name, exc.message, extra={"run": run.id})
            await self.run_failed(
                run.id,
                ErrorInfo(code=Code.FAILED_PRECONDITION, message=exc.message, reason=exc.reason),
            )
        except Exception as exc:
            logger.exception("submitting %s failed", run.name)
            await self.run_failed(
                run.id,
                ErrorInfo(
                    code=Code.UNAVAILABLE, message=f"cannot submit: {exc}", reason="SUBMIT_FAILED"
                ),
            )

    async def get_run(self, name: str) -> Run:
        return await self._store.get_run(names.parse_name(name, "runs"))

    async def list_runs(self, request: ListRunsInput) -> tuple[list[Run], str]:
        query = self.run_query(request)
        filter_hash = request.filter_hash()
        after = None
        if request.page_token:
            position = _decode_token(request.page_token, filter_hash)
            if not (isinstance(position, list) and len(position) == 2):
                raise InvalidArgument("page_token is malformed", field="page_token")
            after = (str(position[0]), str(position[1]))
        page: RunPage = await self._store.list_runs(
            replace(query, page_size=_page_size(request.page_size), after=after)
        )
        runs = list(page.runs)
        next_token = self.page_token_after(request, runs[-1]) if page.more and runs else ""
        return runs, next_token

    def run_query(self, request: ListRunsInput) -> RunQuery:
        """ListRuns' filter, checked (InvalidArgument with the field), without its page
        (WatchRuns and subscriptions filter the same way)."""
        pipeline_id = (
            names.parse_name(request.pipeline, "pipelines", field="pipeline")
            if request.pipeline
            else ""
        )
        states = set()
        for number in request.states:
            if number not in RunState.__members__.values() or number == RunState.UNSPECIFIED:
                raise InvalidArgument(f"states has an unknown value {number}", field="states")
            states.add(RunState(number))
        check_labels(request.labels, self._limits, field="labels")
        return RunQuery(
            pipeline=pipeline_id,
            states=frozenset(states),
            labels=dict(request.labels),
            created_after=request.created_after,
            created_before=request.created_before,
        )

    def page_token_after(self, request: ListRunsInput, run: Run) -> str:
        """The page_token that continues `request`'s listing after `run` (the servicer
        ends a page early when its runs would not fit in one message)."""
        return _encode_token([sortable_time(run.create_time), run.id], request.filter_hash())

    async def cancel_run(self, name: str, *, principal: Principal = ANONYMOUS_ADMIN) -> Run:
        """Moves a run that has not ended to CANCELLING (a CANCELLING one stays so);
        FailedPrecondition RUN_ALREADY_FINISHED for one that has ended."""
        run_id = names.parse_name(name, "runs")
        _check_owner(principal, await self._store.get_run(run_id), "cancel")
        run = await self._to_cancelling(run_id)
        if run.state.terminal:
            raise FailedPrecondition(
                f"{run.name} already finished: it is {run.state.name}, so there is nothing to"
                " cancel",
                reason="RUN_ALREADY_FINISHED",
                metadata={"state": run.state.name},
            )
        await self._backend.cancel(run_id)
        return run

    async def delete_run(self, name: str, *, principal: Principal = ANONYMOUS_ADMIN) -> None:
        """Deletes a finished run: its step logs and artifacts, then its record (events
        and request_id included). Runs that reused its steps keep their own copies."""
        run = await self._store.get_run(names.parse_name(name, "runs"))
        _check_owner(principal, run, "delete")
        if not run.state.terminal:
            raise FailedPrecondition(
                f"{run.name} is {run.state.name}; only a finished run (SUCCEEDED, FAILED or"
                " CANCELLED) can be deleted: cancel it first",
                reason="RUN_NOT_FINISHED",
            )
        await self._delete(run)

    async def delete_expired_runs(self, older_than: timedelta) -> int:
        """Retention: deletes the finished runs that ended more than `older_than` ago;
        returns how many. A run that cannot be deleted now is left for the next sweep."""
        cutoff = self._clock() - older_than
        deleted = 0
        after: tuple[str, str] | None = None
        while True:
            # A run ends after it is created: the ones created before the cutoff are the
            # candidates, in pages, as ListRuns reads them.
            page = await self._store.list_runs(
                RunQuery(
                    states=frozenset(s for s in RunState if s.terminal),
                    created_before=cutoff,
                    page_size=MAX_PAGE_SIZE,
                    after=after,
                )
            )
            for run in page.runs:
                if (run.end_time or run.update_time) >= cutoff:
                    continue
                try:
                    await self._delete(run)
                except Unavailable as exc:
                    logger.warning("retention: cannot delete %s now: %s", run.name, exc.message)
                    continue
                deleted += 1
            if not page.more or not page.runs:
                return deleted
            last = page.runs[-1]
            after = (sortable_time(last.create_time), last.id)

    async def _delete(self, run: Run) -> None:
        # Its files first: should that fail, the run is still there to be deleted again,
        # rather than files nothing points at any more.
        await self._backend.delete_run(run)
        with contextlib.suppress(NotFound):  # a concurrent delete got there first
            await self._store.delete_run(run.id)
        logger.info("deleted %s", run.name, extra={"run": run.id})

    async def _to_cancelling(self, run_id: str) -> Run:
        """The one CANCELLING transition: from any state that has not ended."""
        changed = False

        def cancelling(run: Run) -> Run:
            nonlocal changed
            changed = not (run.state.terminal or run.state is RunState.CANCELLING)
            return replace(run, state=RunState.CANCELLING) if changed else run

        run = await self._store.update_run(run_id, cancelling)
        if changed:
            logger.info("%s is CANCELLING", run.name, extra={"run": run_id})
        return run

    async def watch_run(
        self, name: str, after_revision: int = 0, *, principal: Principal = ANONYMOUS_ADMIN
    ) -> AsyncGenerator[Run, None]:
        async with (
            self.watching(name, after_revision, principal=principal) as follower,
            contextlib.aclosing(follower.revisions()) as runs,
        ):
            async for run in runs:
                yield run

    def watching(
        self, name: str, after_revision: int = 0, *, principal: Principal = ANONYMOUS_ADMIN
    ) -> RunWatch:
        """watch_run's revisions as the store's follower, for a caller that drives it in
        its own generator: every watcher of a revision passes one generator, not two."""
        run_id = names.parse_name(name, "runs")
        if after_revision < 0:
            raise InvalidArgument("after_revision must not be negative", field="after_revision")
        return RunWatch(
            self._stream_slot(principal), RunFollower(self._store, run_id, after_revision)
        )

    async def watch_runs(
        self, request: WatchRunsInput, *, principal: Principal = ANONYMOUS_ADMIN
    ) -> AsyncIterator[FeedEvent]:
        """The WatchRuns stream (see run_feed.py), counted against the caller's streams."""
        query = self.run_query(request.filter)
        after = decode_cursor(request.after_cursor) if request.after_cursor else None
        with self._stream_slot(principal):
            events = self._feed.watch(
                query, after_cursor=after, initial_snapshot=request.initial_snapshot
            )
            async for event in events:
                yield event

    @property
    def feed(self) -> RunFeed:
        """The process's WatchRuns fan-out (server.py closes it at shutdown)."""
        return self._feed

    async def read_step_logs(
        self,
        run_name: str,
        step_name: str,
        *,
        follow: bool = False,
        attempt: int = 0,
        principal: Principal = ANONYMOUS_ADMIN,
    ) -> AsyncIterator[LogLine]:
        with self._stream_slot(principal):
            async for line in self._read_step_logs(run_name, step_name, follow, attempt):
                yield line

    async def _read_step_logs(
        self, run_name: str, step_name: str, follow: bool, attempt: int
    ) -> AsyncIterator[LogLine]:
        run = await self._store.get_run(names.parse_name(run_name, "runs", field="run"))
        if attempt < 0:
            raise InvalidArgument("attempt must not be negative", field="attempt")
        step = next((s for s in run.steps if s.name == step_name), None)
        if step is None:
            raise NotFound(
                f"{run.name} has no step {step_name[:200]!r}"
                f" (steps: {', '.join(s.name for s in run.steps) or 'none yet'})",
                reason="STEP_NOT_FOUND",
            )
        # A step RetryRun reused ran in the run it retried (or further back): read it there.
        while step.cached and run.retry_of:
            try:
                source = await self._store.get_run(names.parse_name(run.retry_of, "runs"))
            except NotFound:  # deleted since: its logs went with it
                break
            earlier = next((s for s in source.steps if s.name == step_name), None)
            if earlier is None:
                break
            run, step = source, earlier
        finished = asyncio.Event()
        watcher = None
        if follow and not (step.state.terminal or run.state.terminal):
            watcher = asyncio.create_task(self._set_when_step_ends(run.id, step_name, finished))
        else:
            finished.set()
        try:
            async for line in self._backend.read_logs(
                run, step_name, attempt, lambda: not finished.is_set()
            ):
                yield line
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _set_when_step_ends(self, run_id: str, step_name: str, done: asyncio.Event) -> None:
        try:
            async for run in self._store.watch(run_id):
                step = next((s for s in run.steps if s.name == step_name), None)
                if run.state.terminal or (step is not None and step.state.terminal):
                    break
        finally:
            done.set()

    # Lifecycle

    async def resume(self) -> None:
        """Picks up runs a previous process left unfinished."""
        for run in await self._store.list_unfinished_runs():
            try:
                pipeline: Pipeline | None = self._catalog.get(run.pipeline)
            except NotFound:
                pipeline = None
            if pipeline is not None and pipeline.version != run.pipeline_version:
                pipeline = None
            if run.state is RunState.CANCELLING:
                # Only the backend knows whether something of the run still goes on (a
                # Kubeflow run never terminated, another replica's steps stopping).
                await self._backend.resume_cancelling(run, pipeline)
                continue
            if pipeline is None:
                await self.run_failed(
                    run.id,
                    ErrorInfo(
                        code=Code.FAILED_PRECONDITION,
                        message=f"pipeline version {run.pipeline_version} is no longer available",
                        reason="PIPELINE_VERSION_GONE",
                    ),
                )
                continue
            logger.info("resuming %s", run.name)
            await self._submit(run, pipeline)

    # RunSink: progress reported by the backend. It goes through self._writes: while
    # the store is unavailable it waits, in order, and the run goes on.

    def unwritten_seconds(self, run_id: str) -> float:
        return self._writes.unwritten_seconds(run_id)

    def drop_unwritten(self, run_id: str) -> None:
        self._writes.drop(run_id)

    async def run_started(self, run_id: str) -> None:
        now = self._clock()

        def started(run: Run) -> Run:
            if run.state is not RunState.QUEUED:
                return run
            return replace(run, state=RunState.RUNNING, start_time=run.start_time or now)

        def stored(run: Run) -> None:
            if run.state is RunState.RUNNING:
                logger.info("%s is RUNNING", run.name, extra={"run": run_id})
            self._observer.run_started(run)

        await self._writes.write(run_id, Change(started, stored))

    async def step_changed(self, run_id: str, *steps: Step) -> None:
        if not steps:
            return
        applied: list[tuple[Step, Step | None]] = []
        """Each step stored, with the value it replaced (None for a new step)."""

        def with_steps(run: Run) -> Run:
            # A store may call this again (a retried transaction): start afresh each time.
            applied.clear()
            if run.state.terminal:
                return run
            stored_steps = list(run.steps)
            for step in steps:
                previous = None
                for index, existing in enumerate(stored_steps):
                    if existing.name == step.name:
                        previous = existing
                        stored_steps[index] = step
                        break
                else:
                    index = len(stored_steps)
                    stored_steps.append(step)
                if previous is None or previous.start_time != step.start_time:
                    self._place_step(run, stored_steps, index)
                applied.append((step, previous))
            return replace(run, steps=tuple(stored_steps))

        def stored(run: Run) -> None:
            for step, previous in applied:
                if previous is None or previous.state is not step.state:
                    logger.log(
                        logging.DEBUG if step.state is StepState.PENDING else logging.INFO,
                        "%s step %s is %s",
                        run.name,
                        step.name,
                        step.state.name,
                        extra={"run": run_id, "step": step.name, "attempt": step.attempt},
                    )
                self._observer.step_changed(run, step, previous)

        # A waiting change of one step gives way to its newer state; several steps
        # reported together stay one change, which nothing replaces.
        key = f"step:{steps[0].name}" if len(steps) == 1 else ""
        await self._writes.write(run_id, Change(with_steps, stored, key=key))

    def _place_step(self, run: Run, steps: list[Step], index: int) -> None:
        """Moves steps[index], new or just started, to its place in execution order (the
        others are in order already): by the DAG, then by start time (see StepOrder)."""
        order = self._catalog.step_order(run.pipeline, run.pipeline_version)
        if order is None:  # a pipeline version this server does not have: as reported
            return
        step = steps.pop(index)
        steps.insert(bisect.bisect_right(steps, order.key(step), key=order.key), step)

    async def run_succeeded(
        self, run_id: str, outputs: Sequence[Artifact], output_parameters: Mapping[str, Any]
    ) -> None:
        await self._finish(
            run_id,
            RunState.SUCCEEDED,
            outputs=tuple(outputs),
            output_parameters=dict(output_parameters),
        )

    async def run_failed(self, run_id: str, error: ErrorInfo) -> None:
        await self._finish(run_id, RunState.FAILED, error=error)

    async def run_cancelled(self, run_id: str) -> None:
        await self._finish(run_id, RunState.CANCELLED)

    async def backend_run_assigned(self, run_id: str, backend_run_id: str, url: str) -> None:
        def named(run: Run) -> Run:
            return replace(run, backend_run_id=backend_run_id, backend_run_url=url)

        def stored(run: Run) -> None:
            logger.info(
                "%s is %s run %s",
                run.name,
                run.backend,
                backend_run_id,
                extra={"run": run_id, "url": url},
            )

        await self._writes.write(run_id, Change(named, stored))

    async def cancel_requested_remotely(self, run_id: str) -> None:
        changed = False

        def cancelling(run: Run) -> Run:
            nonlocal changed
            changed = not (run.state.terminal or run.state is RunState.CANCELLING)
            return replace(run, state=RunState.CANCELLING) if changed else run

        def stored(run: Run) -> None:
            if changed:
                logger.info("%s is CANCELLING", run.name, extra={"run": run_id})

        await self._writes.write(run_id, Change(cancelling, stored))

    async def _finish(self, run_id: str, state: RunState, **changes: Any) -> None:
        """The one terminal transition, whatever ended the run: the steps that had not
        ended end with it (CANCELLED when the run is, else SKIPPED), so no backend
        leaves a terminal run with a step that still looks active."""
        now = self._clock()
        finishing = False
        unfinished = StepState.CANCELLED if state is RunState.CANCELLED else StepState.SKIPPED

        def finished(run: Run) -> Run:
            nonlocal finishing
            finishing = not run.state.terminal
            if run.state.terminal:
                return run
            steps = tuple(
                step
                if step.state.terminal
                else replace(step, state=unfinished, end_time=step.end_time or now)
                for step in run.steps
            )
            return replace(run, state=state, end_time=now, steps=steps, **changes)

        def stored(run: Run) -> None:
            logger.info("%s is %s", run.name, run.state.name, extra={"run": run_id})
            if finishing:
                self._observer.run_finished(run)

        # Durable: the backend lets go of the run (its lease, its slot) only once its end
        # is stored, so no other replica resumes a run that has ended.
        await self._writes.write(run_id, Change(finished, stored), durable=True)


def _check_owner(principal: Principal, run: Run, action: str) -> None:
    if not principal.may_act_on(run.creator):
        raise PermissionDenied(
            f"{principal.name} may not {action} {run.name}, which {run.creator or 'another'}"
            " created; only its creator or an admin may",
            reason="NOT_RUN_OWNER",
        )
