"""An in-process backend (the local executor) on several replicas: a run executes only on
the replica that holds its lease.

Every replica resumes the unfinished runs it finds when it starts, and CreateRun may
reach any replica; without leases a rolling restart would execute each running run a
second time. With them, a submit whose lease another live replica holds is a no-op, the
holder renews its leases while its runs execute, and when a replica dies its leases
expire and another replica takes the runs over (they resume from the step cache, which
lives in the shared store; their artifacts must be shared too, i.e. in S3). A CancelRun
stored by any replica reaches the one executing the run: through the store's news of
other replicas' revisions, and, should that news be lost, at the next lease renewal.

While the store is unavailable, runs go on executing and their progress waits in the
controller (RunSink); leases cannot be renewed then, and may expire. Once the store
answers again, a replica waits one lease period before it claims expired leases, so
that after an outage of the whole database every replica first renews its own. A run
whose progress stays unwritable for a lease period while the store answers is handed
over; a run whose lease was lost (another replica claimed it) stops here without a word.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.domain import (
    Artifact,
    Code,
    ErrorInfo,
    LogLine,
    Pipeline,
    Run,
    RunState,
    Step,
)
from skit_pipelines.errors import NotFound, Unavailable
from skit_pipelines.store.base import RunStore
from skit_pipelines.store.leases import RunLeases

logger = logging.getLogger(__name__)


class LeasedBackend(Backend):
    """Wraps a backend that executes runs in this process."""

    def __init__(
        self,
        inner: Backend,
        leases: RunLeases,
        store: RunStore,
        pipelines: Callable[[str], Pipeline],
        *,
        renew_seconds: float,
        lease_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            lease_seconds: The leases' time to live; three renewal periods by default.
        """
        self.name = inner.name
        self._inner = inner
        self._leases = leases
        self._store = store
        self._pipelines = pipelines
        self._renew_seconds = renew_seconds
        self._lease_seconds = renew_seconds * 3 if lease_seconds is None else lease_seconds
        self._clock = clock
        self._answering_since: float | None = -math.inf
        """Since when the store has answered every lease round (None: it just failed)."""
        self._held: set[str] = set()
        self._cancelled: set[str] = set()
        self._loop: asyncio.Task[None] | None = None

    def held_runs(self) -> list[str]:
        """The runs this replica executes."""
        return sorted(self._held)

    def active_runs(self) -> int:
        return self._inner.active_runs()

    def start(self, sink: RunSink, *, background: bool = True) -> None:
        """Starts renewing leases, taking over the runs of replicas that stopped, and
        hearing the cancels other replicas store. background=False only hands over the
        sink: the caller runs the rounds (`renew_once`), as tests of a replica that stops
        do."""
        super().start(sink)
        self._inner.start(_ReleasingSink(sink, self._finished))
        if background and self._loop is None:
            self._store.on_remote_revision(self._heard)
            self._loop = asyncio.get_running_loop().create_task(
                self._keep_leases(), name="run-leases"
            )

    def check_runnable(
        self, pipeline: Pipeline, parameters: Mapping[str, Any] | None = None
    ) -> None:
        self._inner.check_runnable(pipeline, parameters)

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        if not await self._leases.acquire(run.id):
            logger.info("%s executes on another replica", run.name, extra={"run": run.id})
            return
        self._held.add(run.id)
        await self._inner.submit(run, pipeline)

    async def resume_cancelling(self, run: Run, pipeline: Pipeline | None) -> None:
        if not await self._leases.acquire(run.id):
            # A live replica executes it and is stopping its steps; it ends the run.
            logger.info("%s is being stopped by another replica", run.name, extra={"run": run.id})
            return
        try:
            await self._inner.resume_cancelling(run, pipeline)
        finally:
            await self._leases.release(run.id)

    async def _heard(self, run_id: str, revision: int, state: RunState) -> None:
        """Another replica stored a revision of the run."""
        if state is RunState.CANCELLING:
            await self.cancel(run_id)

    async def cancel(self, run_id: str) -> None:
        # The request may arrive twice (this replica's CancelRun and the store's news of
        # it): a second one would cut the first's graceful stop short.
        if run_id in self._cancelled:
            return
        if run_id in self._held:
            self._cancelled.add(run_id)
        await self._inner.cancel(run_id)

    def read_logs(
        self, run: Run, step: str, attempt: int, still_writing: Callable[[], bool]
    ) -> AsyncIterator[LogLine]:
        return self._inner.read_logs(run, step, attempt, still_writing)

    async def delete_run(self, run: Run) -> None:
        await self._inner.delete_run(run)

    async def shutdown(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        await self._inner.shutdown()
        held, self._held = sorted(self._held), set()
        try:
            # Interrupted, not finished: another replica may resume them right away.
            await self._leases.hand_over(held)
        except Exception:
            logger.exception("handing over %s failed; they move when the leases expire", held)

    async def _finished(self, run_id: str) -> None:
        self._held.discard(run_id)
        self._cancelled.discard(run_id)
        try:
            await self._leases.release(run_id)
        except Unavailable as exc:
            # Its end is stored: whoever claims the expired lease finds the run ended.
            logger.warning("cannot release the lease of runs/%s: %s", run_id, exc.message)

    async def _keep_leases(self) -> None:
        while True:
            try:
                await self.renew_once()
            except Unavailable as exc:
                logger.warning("renewing run leases failed; trying again: %s", exc.message)
            except Exception:
                logger.exception("renewing run leases failed; trying again")
            await asyncio.sleep(self._renew_seconds)

    async def renew_once(self) -> None:
        """Renews the leases held, hands over runs whose progress cannot be stored, stops
        runs cancelled meanwhile, takes over expired leases."""
        try:
            await self._renew_round()
        except Unavailable:
            self._answering_since = None
            raise

    async def _renew_round(self) -> None:
        held = set(self._held)
        stalled = {r for r in held if self._stalled(r)}
        kept = await self._leases.renew(sorted(held - stalled))
        if self._answering_since is None:
            self._answering_since = self._clock()
        for lost in sorted((held - kept - stalled) & self._held):
            logger.warning("lost the lease of runs/%s; another replica executes it", lost)
            await self._abandon(lost)
        if stalled:
            logger.warning(
                "the progress of %s could not be stored for %ss; handing them over",
                ", ".join(f"runs/{r}" for r in sorted(stalled)),
                self._lease_seconds,
            )
            for run_id in sorted(stalled):
                await self._abandon(run_id)
            # Stopped here first, so they never execute on two replicas at once.
            await self._leases.hand_over(sorted(stalled))
        # A CancelRun stored while this replica was not listening would go unheard.
        for run_id in sorted(self._held - self._cancelled):
            try:
                if (await self._store.get_run(run_id)).state is RunState.CANCELLING:
                    await self.cancel(run_id)
            except NotFound:
                continue
        if self._clock() - self._answering_since < self._lease_seconds:
            # Back from an outage: the other replicas' leases expired meanwhile, and they
            # get one lease period to renew them before their runs move.
            return
        for run_id in await self._leases.claim_expired(limit=16):
            await self._take_over(run_id)

    def _stalled(self, run_id: str) -> bool:
        """Whether the run's progress has waited for a lease period while the store has
        answered: then this replica cannot store it, and another one should execute it."""
        if self._answering_since is None:
            return False
        answering = self._clock() - self._answering_since
        return min(self.sink.unwritten_seconds(run_id), answering) > self._lease_seconds

    async def _abandon(self, run_id: str) -> None:
        self._held.discard(run_id)
        self._cancelled.discard(run_id)
        await self._inner.abandon(run_id)
        self.sink.drop_unwritten(run_id)

    async def _take_over(self, run_id: str) -> None:
        try:
            run = await self._store.get_run(run_id)
            pipeline = self._pipelines(run.pipeline)
        except NotFound:
            await self._leases.release(run_id)
            return
        if run.state.terminal:
            await self._leases.release(run_id)
            return
        # As RunController.resume does for the runs it finds at start-up.
        if run.state is RunState.CANCELLING:
            try:
                await self._inner.resume_cancelling(run, pipeline)
            finally:
                await self._leases.release(run_id)
            return
        if pipeline.version != run.pipeline_version:
            await self.sink.run_failed(
                run_id,
                ErrorInfo(
                    code=Code.FAILED_PRECONDITION,
                    message=f"pipeline version {run.pipeline_version} is no longer available",
                    reason="PIPELINE_VERSION_GONE",
                ),
            )
            await self._leases.release(run_id)
            return
        logger.info("taking over %s from a replica that stopped", run.name, extra={"run": run_id})
        self._held.add(run_id)
        await self._inner.submit(run, pipeline)


class _ReleasingSink:
    """Passes progress on; once the run has ended, its lease is released."""

    def __init__(self, sink: RunSink, finished: Callable[[str], Awaitable[None]]) -> None:
        self._sink = sink
        self._finished = finished

    async def run_started(self, run_id: str) -> None:
        await self._sink.run_started(run_id)

    async def step_changed(self, run_id: str, *steps: Step) -> None:
        await self._sink.step_changed(run_id, *steps)

    async def run_succeeded(
        self, run_id: str, outputs: Sequence[Artifact], output_parameters: Mapping[str, Any]
    ) -> None:
        await self._sink.run_succeeded(run_id, outputs, output_parameters)
        await self._finished(run_id)

    async def run_failed(self, run_id: str, error: ErrorInfo) -> None:
        await self._sink.run_failed(run_id, error)
        await self._finished(run_id)

    async def run_cancelled(self, run_id: str) -> None:
        await self._sink.run_cancelled(run_id)
        await self._finished(run_id)

    async def backend_run_assigned(self, run_id: str, backend_run_id: str, url: str) -> None:
        await self._sink.backend_run_assigned(run_id, backend_run_id, url)

    async def cancel_requested_remotely(self, run_id: str) -> None:
        await self._sink.cancel_requested_remotely(run_id)

    def unwritten_seconds(self, run_id: str) -> float:
        return self._sink.unwritten_seconds(run_id)

    def drop_unwritten(self, run_id: str) -> None:
        self._sink.drop_unwritten(run_id)
