"""The embedded backend: runs execute in this process on the local executor."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from skit_pipelines import jsonlog
from skit_pipelines.backends.base import Backend, RunSink
from skit_pipelines.backends.local_checks import LocalRunChecks
from skit_pipelines.domain import Code, ErrorInfo, LogLine, Pipeline, Run, Step, StepState
from skit_pipelines.errors import NotFound, Unavailable
from skit_pipelines.executor import CachedOutputs, LocalExecutor, PipelineFailed, read_step_logs
from skit_pipelines.store.base import RunStore
from skit_pipelines.store.codec import artifact_from_dict, artifact_to_dict

logger = logging.getLogger(__name__)

_REUSABLE = (StepState.SUCCEEDED, StepState.CACHED)


class _SinkObserver:
    def __init__(self, sink: RunSink, run_id: str, abandoned: Callable[[], bool]) -> None:
        self._sink = sink
        self._run_id = run_id
        self._abandoned = abandoned

    async def step_changed(self, *steps: Step) -> None:
        # An abandoned run executes on another replica now: what its steps do here as
        # they stop (CANCELLED) is not the run's news.
        if not self._abandoned():
            await self._sink.step_changed(self._run_id, *steps)


class StoreStepCache:
    """The executor's StepCache kept in the run store, so cached steps survive restarts."""

    def __init__(self, store: RunStore) -> None:
        self._store = store

    def get(self, key: str) -> CachedOutputs | None:
        value = self._store.cache_get(key)
        if value is None:
            return None
        return CachedOutputs(
            output_artifacts=tuple(artifact_from_dict(a) for a in value["artifacts"]),
            output_parameters=value["parameters"],
        )

    def put(self, key: str, outputs: CachedOutputs) -> None:
        self._store.cache_put(
            key,
            {
                "artifacts": [artifact_to_dict(a) for a in outputs.output_artifacts],
                "parameters": dict(outputs.output_parameters),
            },
        )

    def delete(self, key: str) -> None:
        self._store.cache_delete(key)


class LocalBackend(Backend):
    """Executes runs on the local executor, at most `max_active_runs` at once.

    Args:
        trace_context: A step's trace context by run id and step name, as environment
            variables for its process (Telemetry.step_trace_env).
        checks: What CreateRun checks (packages, importer URIs); by default built from
            the executor's import policy.
    """

    name = "local"

    def __init__(
        self,
        executor: LocalExecutor,
        *,
        max_active_runs: int = 8,
        trace_context: Callable[[str, str], Mapping[str, str]] | None = None,
        checks: LocalRunChecks | None = None,
    ) -> None:
        self._executor = executor
        self._checks = checks or LocalRunChecks(executor.import_policy)
        self._trace_context = trace_context
        self._slots = asyncio.Semaphore(max_active_runs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._abandoned: set[str] = set()
        self._shutting_down = False

    def active_runs(self) -> int:
        return len(self._tasks)

    def check_runnable(
        self, pipeline: Pipeline, parameters: Mapping[str, Any] | None = None
    ) -> None:
        self._checks.check(pipeline, parameters)

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        if run.id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(
            self._execute(run, pipeline, self.sink), name=f"run-{run.id}"
        )
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._forget(run.id))

    def _forget(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._abandoned.discard(run_id)

    async def _execute(self, run: Run, pipeline: Pipeline, sink: RunSink) -> None:
        with jsonlog.context(run=run.id):
            await self._execute_logged(run, pipeline, sink)

    async def _execute_logged(self, run: Run, pipeline: Pipeline, sink: RunSink) -> None:
        trace_context = None
        if self._trace_context is not None:
            trace_context = functools.partial(self._trace_context, run.id)
        try:
            async with self._slots:
                await sink.run_started(run.id)
                result = await self._executor.execute(
                    run.id,
                    pipeline.spec,
                    run.parameters,
                    _SinkObserver(sink, run.id, lambda: run.id in self._abandoned),
                    # Steps completed before a crash, or reused by RetryRun (then CACHED).
                    reuse={s.name: s for s in run.steps if s.state in _REUSABLE},
                    trace_context=trace_context,
                    disable_cache=run.disable_cache,
                )
            await sink.run_succeeded(run.id, result.outputs, result.output_parameters)
        except PipelineFailed as failure:
            await sink.run_failed(run.id, failure.error)
        except asyncio.CancelledError:
            if not (self._shutting_down or run.id in self._abandoned):
                await sink.run_cancelled(run.id)
            raise
        except Exception as exc:
            logger.exception("executing runs/%s failed", run.id)
            await sink.run_failed(
                run.id,
                ErrorInfo(
                    code=Code.INTERNAL, message=f"executor error: {exc}", reason="EXECUTOR_ERROR"
                ),
            )

    async def cancel(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is None:
            return
        task.cancel()

    async def abandon(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is None:
            return
        self._abandoned.add(run_id)
        task.cancel()
        # Returns once its step processes have stopped.
        await asyncio.gather(task, return_exceptions=True)

    async def delete_run(self, run: Run) -> None:
        try:
            await self._executor.delete_run(run.id)
        except OSError as exc:
            raise Unavailable(
                f"cannot delete the artifacts of {run.name}: {exc}; delete it again",
                reason="ARTIFACTS_UNAVAILABLE",
            ) from exc

    async def read_logs(
        self, run: Run, step: str, attempt: int, still_writing: Callable[[], bool]
    ) -> AsyncIterator[LogLine]:
        lines = read_step_logs(
            self._executor.logs_root, run.id, step, attempt=attempt, follow=still_writing
        )
        try:
            async for line in lines:
                yield line
        except FileNotFoundError:
            raise NotFound(
                f"{run.name} has no logs for step {step!r}"
                + (f" attempt {attempt}" if attempt else "")
                + " (a step whose outputs came from the cache never ran here)",
                reason="LOGS_NOT_FOUND",
            ) from None

    async def shutdown(self) -> None:
        self._shutting_down = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
