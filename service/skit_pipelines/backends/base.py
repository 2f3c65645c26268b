"""The Backend seam: what executes runs (the local executor, Kubeflow Pipelines).

A backend executes and reports; it never writes the run store. Everything it learns about
a run goes to the RunSink it was started with (the runs controller), which stores it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

from skit_pipelines.domain import Artifact, ErrorInfo, LogLine, Pipeline, Run, Step
from skit_pipelines.errors import FailedPrecondition


class RunSink(Protocol):
    """Where a backend reports progress; the runs controller writes it to the store."""

    async def run_started(self, run_id: str) -> None: ...

    async def step_changed(self, run_id: str, *steps: Step) -> None:
        """Each step's new value (a new step, or a known one by name), stored as one change
        of the run: steps reported together become one revision."""

    async def run_succeeded(
        self, run_id: str, outputs: Sequence[Artifact], output_parameters: Mapping[str, Any]
    ) -> None: ...

    async def run_failed(self, run_id: str, error: ErrorInfo) -> None: ...

    async def run_cancelled(self, run_id: str) -> None: ...

    async def backend_run_assigned(self, run_id: str, backend_run_id: str, url: str) -> None:
        """The backend's own id of the run, and a link to it in the backend's UI."""

    async def cancel_requested_remotely(self, run_id: str) -> None:
        """Someone stopped the run in the backend itself (e.g. the Kubeflow UI), not
        through CancelRun: the run is CANCELLING until the backend reports run_cancelled."""

    def unwritten_seconds(self, run_id: str) -> float:
        """How long the oldest change reported for the run has been waiting for the store
        (it was unavailable); 0 when every change is stored."""

    def drop_unwritten(self, run_id: str) -> None:
        """Forgets the run's changes not stored yet: this process no longer executes the
        run (another replica took it over), so they are stale."""


class Backend(ABC):
    """Executes runs and reports their progress to the RunSink handed to `start`."""

    name: str
    _sink: RunSink | None = None

    def start(self, sink: RunSink) -> None:
        """Hands over where progress goes, once, before anything is submitted or resumed.

        A backend with work of its own in the background (polling, leases) starts it here.
        """
        self._sink = sink

    @property
    def sink(self) -> RunSink:
        """The sink `start` handed over."""
        if self._sink is None:
            raise RuntimeError(f"the {self.name} backend was used before start()")
        return self._sink

    def check_runnable(
        self, pipeline: Pipeline, parameters: Mapping[str, Any] | None = None
    ) -> None:
        """Raises FailedPrecondition when this backend cannot run `pipeline` as it is (the
        Kubeflow backend: an image was never released; the local one: a package a Python
        component needs is not installed), or InvalidArgument when it cannot run it with
        the run's resolved `parameters` (the local one: an importer URI it may not read).
        CreateRun and RetryRun call it before the run is stored, so the caller gets the
        error rather than a FAILED run; None checks the pipeline alone."""
        return

    async def resume_cancelling(self, run: Run, pipeline: Pipeline | None) -> None:
        """Ends a run found CANCELLING at start-up: the process cancelling it stopped.

        `pipeline` is None when the catalog no longer has the run's version. Here nothing
        of the run goes on any more: its steps ran in that process (and a starting local
        executor kills what they left running), so the run is CANCELLED at once.
        """
        await self.sink.run_cancelled(run.id)

    @abstractmethod
    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        """Starts (or queues) the run and returns without waiting for it."""

    @abstractmethod
    async def cancel(self, run_id: str) -> None:
        """Asks the run to stop; the sink hears run_cancelled once its steps have stopped."""

    async def abandon(self, run_id: str) -> None:
        """Stops executing the run here without reporting anything more about it: another
        replica executes it now. Nothing to do for a backend that executes elsewhere."""
        return None

    async def delete_run(self, run: Run) -> None:
        """Removes what this backend keeps of a finished run: its step logs and artifacts
        (DeleteRun, retention; the controller deletes the run's record afterwards). The
        Kubeflow backend keeps nothing of its own: KFP's run and pipeline root stay.

        Raises:
            Unavailable: the artifact store failed; deleting again removes the rest.
        """
        return None

    @abstractmethod
    async def shutdown(self) -> None:
        """Stops executing without recording the runs as cancelled, so a restart resumes them."""

    async def read_logs(
        self, run: Run, step: str, attempt: int, still_writing: Callable[[], bool]
    ) -> AsyncIterator[LogLine]:
        """A step's log lines (attempt 0: every attempt in order). While `still_writing()`
        is true, waits for more lines; then ends once what was written has been read."""
        raise FailedPrecondition(
            f"the {self.name} backend keeps no step logs", reason="LOGS_UNAVAILABLE"
        )
        yield  # an async generator, like the implementations

    def active_runs(self) -> int:
        """Runs submitted and not finished yet."""
        return 0
