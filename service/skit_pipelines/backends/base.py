"""The Backend seam: what executes runs (the local executor, later Kubeflow Pipelines)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from skit_pipelines.domain import Artifact, ErrorInfo, Pipeline, Run, Step


class RunSink(Protocol):
    """Where a backend reports progress; the runs controller writes it to the store."""

    async def run_started(self, run_id: str) -> None: ...

    async def step_changed(self, run_id: str, step: Step) -> None: ...

    async def run_succeeded(
        self, run_id: str, outputs: Sequence[Artifact], output_parameters: Mapping[str, Any]
    ) -> None: ...

    async def run_failed(self, run_id: str, error: ErrorInfo) -> None: ...

    async def run_cancelled(self, run_id: str) -> None: ...


class Backend(ABC):
    """Executes runs and reports their progress to a RunSink."""

    name: str

    @abstractmethod
    async def submit(self, run: Run, pipeline: Pipeline, sink: RunSink) -> None:
        """Starts (or queues) the run and returns without waiting for it."""

    @abstractmethod
    async def cancel(self, run_id: str) -> None:
        """Asks the run to stop; the sink hears run_cancelled once its steps have stopped."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Stops executing without recording the runs as cancelled, so a restart resumes them."""

    def active_runs(self) -> int:
        """Runs submitted and not finished yet."""
        return 0
