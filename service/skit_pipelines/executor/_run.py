"""The state of one `execute` call, shared by the DAG walk and the step runner."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineTaskSpec

from skit_pipelines.domain import Artifact, ErrorInfo, Step, StepState
from skit_pipelines.executor._api import RunObserver, StepTraceContext
from skit_pipelines.executor._ir import PipelineIR, component_name
from skit_pipelines.executor._outcome import Outcome

logger = logging.getLogger(__name__)

_REUSABLE = (StepState.SUCCEEDED, StepState.CACHED)


def now() -> datetime:
    return datetime.now(UTC)


class RunState:
    """One run in progress: its IR, the steps reported so far, its first failure."""

    def __init__(
        self,
        run_id: str,
        ir: PipelineIR,
        observer: RunObserver,
        work_dir: Path,
        reuse: Mapping[str, Step],
        trace_context: StepTraceContext | None = None,
        *,
        disable_cache: bool = False,
    ) -> None:
        self.id = run_id
        self.disable_cache = disable_cache
        """Look nothing up in the step cache (its successes are still stored)."""
        self.ir = ir
        self.trace_context = trace_context
        self.observer = observer
        self.work_dir = work_dir
        self.failure: ErrorInfo | None = None
        self.live: dict[str, Step] = {}
        """Steps reported but not yet terminal: what a cancel has to report CANCELLED."""
        self.produced: list[Artifact] = []
        self.consumed: set[str] = set()
        self.reuse = {n: s for n, s in reuse.items() if s.state in _REUSABLE}
        self.awaiting_reuse: dict[str, Step] = {}
        """Reuse candidates not reported yet: their PENDING would regress a completed step
        (after a resume the store already holds it), so they wait for the decision."""

    async def report(self, *steps: Step) -> None:
        for step in steps:
            self.awaiting_reuse.pop(step.name, None)
            if step.state.terminal:
                self.live.pop(step.name, None)
            else:
                self.live[step.name] = step
        await self.observer.step_changed(*steps)

    def fail(self, task: str, error: ErrorInfo, *, attempts: int = 1) -> ErrorInfo:
        """The run's error for a failed task (the first one sticks as `failure`)."""
        after = f" after {attempts} attempts" if attempts > 1 else ""
        run_error = replace(error, message=f"step {task} failed{after}: {error.message}")
        if self.failure is None:
            self.failure = run_error
        return run_error

    def new_step(self, name: str, task: PipelineTaskSpec) -> Step:
        component = self.ir.find_component(task)
        container = None if component is None else self.ir.container(component)
        return Step(
            name=name,
            component=component_name(task),
            image="" if container is None else str(container.image),
            state=StepState.PENDING,
        )

    def step_of(self, name: str, task: PipelineTaskSpec) -> Step:
        """The step as last reported, or a new PENDING one."""
        return self.live.get(name) or self.new_step(name, task)

    async def step_failed(self, step: Step, failure: ErrorInfo, attempts: int = 1) -> Outcome:
        """Reports the step FAILED and records the run's failure."""
        logger.info("runs/%s: step %s failed: %s", self.id, step.name, failure.message)
        error = self.fail(step.name, failure, attempts=attempts)
        if attempts > 1:
            failure = replace(failure, message=f"{failure.message} (after {attempts} attempts)")
        await self.report(
            replace(step, state=StepState.FAILED, attempt=attempts, end_time=now(), error=failure)
        )
        return Outcome.failed(error)
