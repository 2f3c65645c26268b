"""The step runner: runs one container task as KFP's launcher would, attempt by attempt.

It owns what all runs sharing the executor share: the step slots (`max_parallel_steps`),
the ledger of step processes, the step cache; and per attempt, the log and the process.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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
    system_values,
    uses_executor_output,
)
from skit_pipelines.executor._environment import StepEnvironment
from skit_pipelines.executor._importer import ImporterTask, import_artifact
from skit_pipelines.executor._inputs import InputError, TaskInputs, with_defaults
from skit_pipelines.executor._logs import AttemptLog, last_attempt, step_log_path
from skit_pipelines.executor._orphans import ProcessLedger
from skit_pipelines.executor._outcome import (
    AttemptFailed,
    AttemptResult,
    Outcome,
    StepOutputs,
    TaskState,
    rejected_error,
    step_error,
    timeout_error,
)
from skit_pipelines.executor._outputs import StepDir, collect, localize
from skit_pipelines.executor._process import StepProcess, exit_reason
from skit_pipelines.executor._retry import RetryPolicy
from skit_pipelines.executor._run import RunState, now
from skit_pipelines.executor._values import ParameterTypeError
from skit_pipelines.images import ImageFolder, resolve_image
from skit_pipelines.python_components import (
    KFP_EXECUTOR_MODULE,
    PythonComponent,
    recognise,
    unsatisfied,
)

logger = logging.getLogger(__name__)

_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")
EXIT_BAD_INPUT = 2
"""The components' exit code for bad input or configuration (skit_components.cli), which
is also how Python and argparse end on a bad command line: retrying will not help."""
_KFP_RUNTIME = {"_KFP_RUNTIME": "true"}
"""What kfp's lightweight bootstrap sets: kfp imports only what a component needs."""


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
    """Where the step runs: its image folder, or for a lightweight Python component a
    stand-in for its own scratch directory (no folder, nothing declared)."""
    task: ContainerTask
    templates: list[str]
    inputs: TaskInputs
    timeout_seconds: float | None
    python: PythonComponent | None = None
    """A KFP Python component: run with the project's interpreter, without its bootstrap."""


@dataclass(frozen=True)
class _Attempt:
    """How an attempt ended, and the step as last reported during it."""

    step: Step
    result: AttemptResult


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


@functools.cache
def _kfp_version() -> str:
    return importlib.metadata.version("kfp")


def _lightweight_folder(image: str, step_dir: Path) -> ImageFolder:
    """A lightweight Python component has no image folder: it runs in its own scratch
    directory, declares no variables (the same rule as any component: a step receives
    only what its folder declares), and its code is in the IR, so kfp's version (which
    runs it) stands for the image's."""
    return ImageFolder(name=image, path=step_dir, version=f"kfp-{_kfp_version()}", declared_env=())


def _missing_packages(python: PythonComponent) -> str:
    """Why the component cannot run here, or "" when its packages are installed."""
    missing = unsatisfied(python.requirements)
    if not missing:
        return ""
    return (
        "packages_to_install not satisfied by the service's environment, which steps run"
        f" in (nothing is installed at run time): {', '.join(map(str, missing))}"
    )


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
        container = work_item.container
        python = recognise(container.command, container.args)
        try:
            if python is not None and python.lightweight:
                folder = _lightweight_folder(str(container.image), run.work_dir / step.name)
            else:
                # Reads component.yaml (the first time) and stats the folder: off the
                # loop, which may be delivering the revision reported just before.
                folder = await asyncio.to_thread(
                    resolve_image, str(container.image), self._config.images_root
                )
            parameters = with_defaults(
                work_item.component, work_item.inputs.parameters, required=True
            )
        except (PipelinesError, ParameterTypeError, InputError) as exc:
            return await run.step_failed(step, rejected_error(str(exc)))
        if python is not None:
            # CreateRun refused this already; the environment may have changed since
            # (a resumed run, a RetryRun after an upgrade).
            missing = await asyncio.to_thread(_missing_packages, python)
            if missing:
                return await run.step_failed(step, rejected_error(missing))
        artifacts = work_item.inputs.artifacts
        run.consumed.update(a.uri for found in artifacts.values() for a in found)
        templates = [*work_item.container.command, *work_item.container.args]
        cache = self._cache if work_item.task.caching_options.enable_cache else None
        key = ""
        if cache is not None:
            key = cache_key(
                folder, work_item.container, work_item.component, templates, parameters, artifacts
            )
            # A run with the cache off looks nothing up, yet stores its success below: the
            # next run with the cache on reuses what this one computed afresh.
            hit = None if run.disable_cache else cache.get(key)
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
            python=python,
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

    async def run_importer(self, run: RunState, item: ImporterTask) -> Outcome:
        """Imports the importer's URI as the step's artifact and reports it to the end.

        Never cached: the file may change under the same URI, and importing is a copy.
        Steps using the artifact are cached by its content hash as usual.
        """
        step = run.step_of(item.name, item.task)
        async with self._step_slots():
            if run.failure is not None and not item.always:
                await run.report(replace(step, state=StepState.SKIPPED, end_time=now()))
                return Outcome(TaskState.SKIPPED)
            running = replace(step, state=StepState.RUNNING, start_time=now(), error=None)
            await run.report(running)
            scratch = run.work_dir / step.name
            try:
                result = await asyncio.to_thread(
                    import_artifact,
                    self._artifacts,
                    self._config.import_policy,
                    run_id=run.id,
                    step_name=step.name,
                    item=item,
                    scratch=scratch,
                )
            finally:
                await asyncio.to_thread(shutil.rmtree, scratch, True)
        if isinstance(result, AttemptFailed):
            return await run.step_failed(running, result.error)
        run.produced.append(result)
        await run.report(
            replace(
                running,
                state=StepState.SUCCEEDED,
                end_time=now(),
                output_artifacts=(result,),
            )
        )
        return Outcome.succeeded({}, (result,))

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
        """One run of the step's command. Reports RUNNING as the process starts."""
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
            system=system_values(run.id, step.name),
        )
        try:
            if work.python is None:
                argv = resolve(work.templates, context)
            else:
                argv = self._python_argv(work.python, step_dir, context)
        except PlaceholderError as exc:
            return _Attempt(step, AttemptFailed(rejected_error(str(exc))))
        if not argv:
            return _Attempt(step, AttemptFailed(rejected_error("the container has no command")))
        if _PYTHON.fullmatch(argv[0]):
            argv[0] = self._config.python
        log_path = step_log_path(self._config.resolved_logs_root, run.id, step.name, attempt)
        try:
            log = await asyncio.to_thread(AttemptLog, log_path)
        except OSError as exc:
            return _Attempt(step, AttemptFailed(step_error(f"cannot create its log file: {exc}")))
        trace = run.trace_context(step.name) if run.trace_context is not None else {}
        env = self._environment.for_step(work.folder, work.task.container, step_dir.tmp, trace)
        if work.python is not None and work.python.lightweight:
            env.update(_KFP_RUNTIME)
        running = replace(
            step,
            state=StepState.RUNNING,
            attempt=attempt,
            start_time=step.start_time or now(),
            error=None,
        )
        try:
            # Reported just before the process starts: storing it waits until the run's
            # watchers have been sent it (RunWrites), so the starting process (often an
            # interpreter importing its modules) does not compete with that delivery.
            await run.report(running)
            process = await StepProcess.start(
                argv,
                cwd=work.folder.path,
                env=env,
                log=log,
                grace_seconds=self._config.cancel_grace_seconds,
            )
        except OSError as exc:
            log.close()
            return _Attempt(running, AttemptFailed(step_error(f"cannot start {argv[0]}: {exc}")))
        except BaseException:
            log.close()
            raise
        self._processes.record(process.pid, run=run.id, step=step.name)
        try:
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
            error = rejected_error(reason) if returncode == EXIT_BAD_INPUT else step_error(reason)
            return _Attempt(running, AttemptFailed(error))
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

    def _python_argv(
        self, python: PythonComponent, step_dir: StepDir, context: CommandContext
    ) -> list[str]:
        """kfp's executor, run as the component's bootstrap would after pip: with the
        module `_prepare` wrote for a lightweight component."""
        argv = [self._config.python, "-m", KFP_EXECUTOR_MODULE]
        if python.lightweight:
            argv += ["--component_module_path", str(step_dir.program)]
        return argv + resolve(python.args, context)

    def _prepare(
        self, step_dir: StepDir, work: _Work, *, fresh: bool
    ) -> dict[str, list[LocalArtifact]] | AttemptFailed:
        """The step's directories, a lightweight component's module, and local input
        artifacts. Blocking."""
        step_dir.prepare(work.task.component, fresh=fresh)
        if work.python is not None and work.python.source is not None:
            step_dir.program.parent.mkdir(parents=True, exist_ok=True)
            step_dir.program.write_text(work.python.source)
        if not work.inputs.artifacts:
            return {}
        try:
            return localize(self._artifacts, work.inputs.artifacts, work.task.component, step_dir)
        except (PipelinesError, OSError) as exc:
            return AttemptFailed(step_error(f"cannot read an input artifact: {exc}"))
