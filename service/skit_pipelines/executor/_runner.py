"""The step runner: runs one container task as KFP's launcher would, attempt by attempt.

It owns what all runs sharing the executor share: the step slots (`max_parallel_steps`),
the ledger of step processes, the step cache; and per attempt, the log and the process.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kfp.pipeline_spec.pipeline_spec_pb2 import (
    ComponentSpec,
    PipelineDeploymentConfig,
    PipelineTaskSpec,
)

from skit_pipelines.artifacts import ArtifactStore
from skit_pipelines.domain import Artifact, Step, StepState
from skit_pipelines.errors import PipelinesError
from skit_pipelines.executor._api import CachedOutputs, ExecutorConfig, StepCache
from skit_pipelines.executor._cache import NotReusable, cache_key, restore_artifacts
from skit_pipelines.executor._command import (
    CommandContext,
    LocalArtifact,
    PlaceholderError,
    resolve,
    uses_executor_output,
)
from skit_pipelines.executor._environment import StepEnvironment
from skit_pipelines.executor._inputs import InputError, TaskInputs, with_defaults
from skit_pipelines.executor._logs import AttemptLog, last_attempt, step_log_path
from skit_pipelines.executor._orphans import ProcessLedger
from skit_pipelines.executor._outcome import (
    AttemptFailed,
    AttemptResult,
    Outcome,
    StepOutputs,
    TaskState,
    step_error,
    timeout_error,
)
from skit_pipelines.executor._outputs import StepDir, collect, localize
from skit_pipelines.executor._process import StepProcess, exit_reason
from skit_pipelines.executor._retry import RetryPolicy
from skit_pipelines.executor._run import RunState, now
from skit_pipelines.executor._values import ParameterTypeError
from skit_pipelines.images import ImageFolder, resolve_image

logger = logging.getLogger(__name__)

_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")


@dataclass(frozen=True)
class ContainerTask:
    """A container task ready to run: what the DAG walk resolved for it."""

    name: str
    task: PipelineTaskSpec
    component: ComponentSpec
    container: PipelineDeploymentConfig.PipelineContainerSpec
    inputs: TaskInputs
    always: bool
    """An exit handler's task: it starts even after another step failed."""


@dataclass(frozen=True)
class _Work:
    """What every attempt of a container step runs."""

    folder: ImageFolder
    task: ContainerTask
    templates: list[str]
    inputs: TaskInputs
    timeout_seconds: float | None


@dataclass(frozen=True)
class _Attempt:
    """How an attempt ended, and the step as last reported during it."""

    step: Step
    result: AttemptResult


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


class StepRunner:
    """Runs container steps with bounded concurrency; shared by every run of an executor."""

    def __init__(
        self,
        config: ExecutorConfig,
        artifacts: ArtifactStore,
        cache: StepCache | None,
        processes: ProcessLedger,
    ) -> None:
        self._config = config
        self._artifacts = artifacts
        self._cache = cache
        self._processes = processes
        self._environment = StepEnvironment(config.inherited_env, config.step_env)
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def _step_slots(self) -> asyncio.Semaphore:
        # A semaphore binds to the loop it first waits in; a fresh loop (asyncio.run per
        # call, as in tests and benchmarks) needs a fresh one.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self._config.max_parallel_steps)
            self._slots_loop = loop
        return self._slots

    async def run(self, run: RunState, work_item: ContainerTask) -> Outcome:
        """Runs the step (or restores it from the cache) and reports it to the end."""
        step = run.step_of(work_item.name, work_item.task)
        try:
            # Reads component.yaml (the first time) and stats the folder: off the loop,
            # which may be delivering the revision reported just before.
            folder = await asyncio.to_thread(
                resolve_image, str(work_item.container.image), self._config.images_root
            )
            parameters = with_defaults(
                work_item.component, work_item.inputs.parameters, required=True
            )
        except (PipelinesError, ParameterTypeError, InputError) as exc:
            return await run.step_failed(step, step_error(str(exc)))
        artifacts = work_item.inputs.artifacts
        run.consumed.update(a.uri for found in artifacts.values() for a in found)
        templates = [*work_item.container.command, *work_item.container.args]
        cache = self._cache if work_item.task.caching_options.enable_cache else None
        key = ""
        if cache is not None:
            key = cache_key(
                folder, work_item.container, work_item.component, templates, parameters, artifacts
            )
            hit = cache.get(key)
            if hit is not None:
                reused = await self.restore(run, step.name, hit.output_artifacts)
                if not isinstance(reused, NotReusable):
                    return await self._cached(run, step, hit, reused)
                # The entry outlived its artifacts (a deleted run, a cleaned directory, an
                # S3 lifecycle rule): run the step, whose success stores a new entry.
                logger.info(
                    "runs/%s: not reusing step %s from the cache (%s); running it",
                    run.id,
                    step.name,
                    reused.reason,
                )
                cache.delete(key)
        work = _Work(
            folder=folder,
            task=work_item,
            templates=templates,
            inputs=TaskInputs(parameters, artifacts),
            timeout_seconds=folder.timeout_seconds or self._config.default_step_timeout_seconds,
        )
        outcome = await self._run_attempts(run, step, work, RetryPolicy.of(work_item.task))
        if cache is not None and outcome.state is TaskState.SUCCEEDED:
            cache.put(
                key,
                CachedOutputs(
                    output_artifacts=tuple(
                        a for found in outcome.artifacts.values() for a in found
                    ),
                    output_parameters=dict(outcome.parameters),
                ),
            )
        return outcome

    async def restore(
        self, run: RunState, step_name: str, artifacts: Sequence[Artifact]
    ) -> tuple[Artifact, ...] | NotReusable:
        """Reused artifacts checked intact and copied below the run's own prefix
        (`restore_artifacts`), off the event loop."""
        if not artifacts:
            return ()
        return await asyncio.to_thread(
            restore_artifacts, self._artifacts, run.id, step_name, artifacts
        )

    async def _cached(
        self, run: RunState, step: Step, hit: CachedOutputs, artifacts: tuple[Artifact, ...]
    ) -> Outcome:
        at = now()
        run.produced.extend(artifacts)
        await run.report(
            replace(
                step,
                state=StepState.CACHED,
                cached=True,
                start_time=at,
                end_time=at,
                output_artifacts=artifacts,
                output_parameters=dict(hit.output_parameters),
            )
        )
        return Outcome.succeeded(hit.output_parameters, artifacts)

    async def _run_attempts(
        self, run: RunState, step: Step, work: _Work, retry: RetryPolicy | None
    ) -> Outcome:
        """Runs attempts until one succeeds or the retry policy gives up.

        Between attempts the step is PENDING with the next attempt's number and the failed
        attempt's error, and holds no step slot. Attempts a crash interrupted (their logs
        are kept) count: the step goes on from the next number, while the retry policy
        counts the attempts of this execution.
        """
        earlier = await asyncio.to_thread(
            last_attempt, self._config.resolved_logs_root, run.id, step.name
        )
        tries = 1
        first_start = 0.0
        while True:
            attempt = earlier + tries
            async with self._step_slots():
                if run.failure is not None and not work.task.always:
                    if tries == 1:
                        await run.report(replace(step, state=StepState.SKIPPED, end_time=now()))
                        return Outcome(TaskState.SKIPPED)
                    # Another step failed during the backoff: nothing new starts.
                    assert step.error is not None
                    return await run.step_failed(step, step.error, attempt - 1)
                if tries == 1:
                    first_start = time.monotonic()
                ended = await self._attempt(run, step, attempt, work)
            step = ended.step
            result = ended.result
            if isinstance(result, StepOutputs):
                run.produced.extend(result.artifacts)
                await run.report(
                    replace(
                        step,
                        state=StepState.SUCCEEDED,
                        end_time=now(),
                        output_artifacts=result.artifacts,
                        output_parameters=result.parameters,
                    )
                )
                return Outcome.succeeded(result.parameters, result.artifacts)
            delay = retry.delay(tries, time.monotonic() - first_start) if retry else None
            if delay is None:
                return await run.step_failed(step, result.error, attempt)
            logger.info(
                "runs/%s: step %s attempt %s failed (%s); retrying in %.3gs",
                run.id,
                step.name,
                attempt,
                result.error.message,
                delay,
            )
            tries += 1
            step = replace(step, state=StepState.PENDING, attempt=attempt + 1, error=result.error)
            await run.report(step)
            if delay > 0:
                await asyncio.sleep(delay)

    async def _attempt(self, run: RunState, step: Step, attempt: int, work: _Work) -> _Attempt:
        """One run of the step's command. Reports RUNNING once the process has started."""
        step_dir = StepDir(run.work_dir / step.name)
        component = work.task.component
        local_inputs = await asyncio.to_thread(self._prepare, step_dir, work, fresh=attempt > 1)
        if isinstance(local_inputs, AttemptFailed):
            return _Attempt(step, local_inputs)
        context = CommandContext(
            parameters=work.inputs.parameters,
            input_artifacts=local_inputs,
            output_artifacts=step_dir.output_artifacts(component),
            output_parameter_files=step_dir.output_parameter_files(component),
            executor_output_file=str(step_dir.executor_output),
            system={
                "pipeline_job_name": run.id,
                "pipeline_job_resource_name": run.id,
                "pipeline_job_uuid": run.id,
                "pipeline_task_name": step.name,
                "pipeline_task_uuid": f"{run.id}/{step.name}",
            },
        )
        try:
            argv = resolve(work.templates, context)
        except PlaceholderError as exc:
            return _Attempt(step, AttemptFailed(step_error(str(exc))))
        if not argv:
            return _Attempt(step, AttemptFailed(step_error("the container has no command")))
        if _PYTHON.fullmatch(argv[0]):
            argv[0] = self._config.python
        log_path = step_log_path(self._config.resolved_logs_root, run.id, step.name, attempt)
        try:
            log = await asyncio.to_thread(AttemptLog, log_path)
        except OSError as exc:
            return _Attempt(step, AttemptFailed(step_error(f"cannot create its log file: {exc}")))
        trace = run.trace_context(step.name) if run.trace_context is not None else {}
        env = self._environment.for_step(work.folder, work.task.container, step_dir.tmp, trace)
        try:
            process = await StepProcess.start(
                argv,
                cwd=work.folder.path,
                env=env,
                log=log,
                grace_seconds=self._config.cancel_grace_seconds,
            )
        except OSError as exc:
            log.close()
            return _Attempt(step, AttemptFailed(step_error(f"cannot start {argv[0]}: {exc}")))
        except BaseException:
            log.close()
            raise
        self._processes.record(process.pid, run=run.id, step=step.name)
        running = replace(
            step,
            state=StepState.RUNNING,
            attempt=attempt,
            start_time=step.start_time or now(),
            error=None,
        )
        try:
            try:
                await run.report(running)
            except BaseException:
                await process.stop()
                raise
            limit = work.timeout_seconds
            try:
                if limit is None:
                    returncode = await process.wait()
                else:
                    async with asyncio.timeout(limit):
                        returncode = await process.wait()
            except TimeoutError:
                return _Attempt(
                    running,
                    AttemptFailed(timeout_error(f"timed out after {_format_seconds(limit or 0)}")),
                )
        finally:
            log.close()
            self._processes.forget(process.pid)
        if returncode != 0:
            reason = process.last_error_line or exit_reason(returncode)
            return _Attempt(running, AttemptFailed(step_error(reason)))
        collected = await asyncio.to_thread(
            collect,
            self._artifacts,
            run.id,
            step.name,
            step_dir,
            component,
            uses_executor_output(work.templates),
        )
        return _Attempt(running, collected)

    def _prepare(
        self, step_dir: StepDir, work: _Work, *, fresh: bool
    ) -> dict[str, list[LocalArtifact]] | AttemptFailed:
        """The step's directories and local input artifacts. Blocking."""
        step_dir.prepare(work.task.component, fresh=fresh)
        if not work.inputs.artifacts:
            return {}
        try:
            return localize(self._artifacts, work.inputs.artifacts, work.task.component, step_dir)
        except (PipelinesError, OSError) as exc:
            return AttemptFailed(step_error(f"cannot read an input artifact: {exc}"))
