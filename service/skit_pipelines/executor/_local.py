"""LocalExecutor: runs a compiled KFP PipelineSpec (IR) on this machine, without containers.

It plays the part of KFP's driver and launcher: walks the DAGs (conditions, loops, exit
handlers), resolves each task's inputs, substitutes the container placeholders, runs the
command in the image's folder, and uploads what the step produced. A failed attempt is
retried as the task's `retryPolicy` says; an attempt that outlives its image folder's
`skit.ai/timeout` is stopped; steps completed earlier (resume, RetryRun) are reused.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from skit_pipelines.artifacts import ArtifactStore
from skit_pipelines.domain import Artifact, ErrorInfo, Step, StepState
from skit_pipelines.errors import PipelinesError
from skit_pipelines.executor._api import (
    CachedOutputs,
    ExecutorConfig,
    PipelineFailed,
    RunObserver,
    RunResult,
    StepCache,
    StepTraceContext,
)
from skit_pipelines.executor._cel import ExpressionError, evaluate_condition, select
from skit_pipelines.executor._command import (
    CommandContext,
    LocalArtifact,
    PlaceholderError,
    resolve,
    uses_executor_output,
)
from skit_pipelines.executor._logs import AttemptLog, step_log_path
from skit_pipelines.executor._orphans import ProcessLedger
from skit_pipelines.executor._process import StepProcess, exit_reason
from skit_pipelines.executor._values import ParameterTypeError, coerce, parse_output, to_text
from skit_pipelines.images import ImageFolder, parse_duration, resolve_image

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UNKNOWN = 2
_DEADLINE_EXCEEDED = 4
_STEP_FAILED = "STEP_FAILED"
_STEP_TIMEOUT = "STEP_TIMEOUT"
_REUSABLE = (StepState.SUCCEEDED, StepState.CACHED)
_RUN_ALWAYS = "ALL_UPSTREAM_TASKS_COMPLETED"
_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")
_SELF_REFERENCE = re.compile(r"\{\{\$\.inputs\.parameters\['([^']*)'\]\}\}")


class _State(enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    NOT_TRIGGERED = "NOT_TRIGGERED"
    """Its condition was false; tasks after it still run (KFP semantics)."""
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    """Not run because something upstream, or elsewhere in the run, failed."""


@dataclass(frozen=True)
class _Outcome:
    """How a task (container, DAG or loop) ended, and what it produced."""

    state: _State
    parameters: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, tuple[Artifact, ...]] = field(default_factory=dict)
    error: ErrorInfo | None = None
    fresh: bool = True
    """Produced in this call rather than all taken from `reuse`: what depends on it
    cannot be reused, since its earlier result came from different inputs."""

    @property
    def ok(self) -> bool:
        return self.state in (_State.SUCCEEDED, _State.NOT_TRIGGERED)


@dataclass(frozen=True)
class _Work:
    """What every attempt of a container step runs."""

    folder: ImageFolder
    container: Mapping[str, Any]
    component: Mapping[str, Any]
    templates: list[str]
    parameters: Mapping[str, Any]
    artifacts: Mapping[str, tuple[Artifact, ...]]
    timeout_seconds: float | None


class _InputError(ValueError):
    """A task's inputs cannot be resolved."""


@dataclass(frozen=True)
class _Scope:
    """The inputs of the DAG a task belongs to."""

    parameters: Mapping[str, Any]
    artifacts: Mapping[str, tuple[Artifact, ...]]
    fresh: bool = False
    """The DAG's inputs came from something produced in this call (see _Outcome.fresh)."""


@dataclass(frozen=True)
class _RetryPolicy:
    """A task's `retryPolicy`, as kfp's `set_retry` compiles it."""

    max_retries: int
    backoff_seconds: float
    factor: float
    max_duration_seconds: float

    @classmethod
    def of(cls, task: Mapping[str, Any]) -> _RetryPolicy | None:
        """None when the task is not retried; raises ValueError for a malformed policy."""
        policy = task.get("retryPolicy") or {}
        retries = int(policy.get("maxRetryCount") or 0)
        if retries <= 0:
            return None
        # Defaults are kfp's (RetryPolicy.to_proto), for IR written by hand.
        return cls(
            max_retries=retries,
            backoff_seconds=parse_duration(str(policy.get("backoffDuration") or "0s")),
            factor=float(policy.get("backoffFactor") or 2.0),
            max_duration_seconds=parse_duration(str(policy.get("backoffMaxDuration") or "3600s")),
        )

    def delay(self, failed_attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none.

        `elapsed` is the time since the first attempt started: like Argo's
        backoff.maxDuration, no attempt starts later than `max_duration_seconds` after it.
        """
        if failed_attempt > self.max_retries:
            return None
        delay = self.backoff_seconds * self.factor ** (failed_attempt - 1)
        if elapsed + delay > self.max_duration_seconds:
            return None
        return delay


class _Run:
    """The state of one `execute` call."""

    def __init__(
        self,
        run_id: str,
        spec: Mapping[str, Any],
        observer: RunObserver,
        work_dir: Path,
        reuse: Mapping[str, Step],
        trace_context: StepTraceContext | None = None,
    ) -> None:
        self.id = run_id
        self.trace_context = trace_context
        self.components: Mapping[str, Any] = spec.get("components") or {}
        self.executors: Mapping[str, Any] = (spec.get("deploymentSpec") or {}).get(
            "executors"
        ) or {}
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

    async def report(self, step: Step) -> None:
        self.awaiting_reuse.pop(step.name, None)
        if step.state.terminal:
            self.live.pop(step.name, None)
        else:
            self.live[step.name] = step
        await self.observer.step_changed(step)

    def fail(
        self,
        task: str,
        reason: str,
        *,
        code: int = _UNKNOWN,
        error_reason: str = _STEP_FAILED,
        attempts: int = 1,
    ) -> ErrorInfo:
        after = f" after {attempts} attempts" if attempts > 1 else ""
        error = ErrorInfo(
            code=code, message=f"step {task} failed{after}: {reason}", reason=error_reason
        )
        if self.failure is None:
            self.failure = error
        return error

    def component(self, task: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = (task.get("componentRef") or {}).get("name", "")
        try:
            return self.components[ref]
        except KeyError:
            raise _InputError(f"the pipeline has no component {ref!r}") from None

    def container(self, component: Mapping[str, Any]) -> Mapping[str, Any] | None:
        executor = self.executors.get(component.get("executorLabel", "")) or {}
        return executor.get("container")


def _now() -> datetime:
    return datetime.now(UTC)


def _step_error(message: str) -> ErrorInfo:
    return ErrorInfo(code=_UNKNOWN, message=message, reason=_STEP_FAILED)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _gone_artifacts(uris: Sequence[str]) -> list[str]:
    """The file:// URIs whose file is missing. Blocking.

    Other schemes count as present: checking them would mean a request per artifact,
    and a gone one fails the step that reads it, which the retry policy can rerun.
    """
    gone = []
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme == "file" and not Path(unquote(parsed.path)).exists():
            gone.append(uri)
    return gone


def _task_name(key: str, task: Mapping[str, Any]) -> str:
    return (task.get("taskInfo") or {}).get("name") or key


def _upstream(task: Mapping[str, Any]) -> set[str]:
    """Tasks that must finish first: explicit dependencies plus producers of inputs."""
    deps = set(task.get("dependentTasks") or ())
    inputs = task.get("inputs") or {}
    for source in (inputs.get("parameters") or {}).values():
        for kind in ("taskOutputParameter", "taskFinalStatus"):
            if kind in source:
                deps.add(source[kind]["producerTask"])
    for source in (inputs.get("artifacts") or {}).values():
        if "taskOutputArtifact" in source:
            deps.add(source["taskOutputArtifact"]["producerTask"])
    return deps


async def _supervise(tasks: Sequence[asyncio.Task[T]]) -> list[T]:
    """Awaits all tasks; on cancellation or an unexpected error, cancels and drains the rest.

    Unlike TaskGroup this re-raises the original exception, not an ExceptionGroup.
    """
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _cancel_all(tasks)
        raise
    for task in tasks:
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            await _cancel_all(tasks)
            raise error
    return [task.result() for task in tasks]


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)


def _spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    return asyncio.get_running_loop().create_task(coro)


class LocalExecutor:
    """Executes compiled pipelines with one process per container task.

    One executor is shared by all runs: `max_parallel_steps` bounds their processes
    together.
    """

    def __init__(
        self, config: ExecutorConfig, artifacts: ArtifactStore, cache: StepCache | None = None
    ) -> None:
        self._config = config
        self._artifacts = artifacts
        self._cache = cache
        # Before any step starts: a step left running by a killed server would otherwise
        # run side by side with its rerun.
        self._processes = ProcessLedger(config.work_root / "processes")
        self._processes.reap_orphans()
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        # Only these pass through from the service's environment; everything else a
        # step gets is declared by its image folder (see _environment).
        self._base_env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def logs_root(self) -> Path:
        """Where step logs are kept: read them with `read_step_logs(logs_root, run, step)`."""
        return self._config.resolved_logs_root

    def _step_slots(self) -> asyncio.Semaphore:
        # A semaphore binds to the loop it first waits in; a fresh loop (asyncio.run per
        # call, as in tests and benchmarks) needs a fresh one.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self._config.max_parallel_steps)
            self._slots_loop = loop
        return self._slots

    async def execute(
        self,
        run_id: str,
        spec: Mapping[str, Any],
        parameters: Mapping[str, Any],
        observer: RunObserver,
        *,
        reuse: Mapping[str, Step] | None = None,
        trace_context: StepTraceContext | None = None,
    ) -> RunResult:
        """Runs the pipeline to the end.

        Args:
            reuse: Steps completed earlier, by name: after a crash, the run's own
                completed steps (resume); for RetryRun, the succeeded steps of the failed
                run, converted to CACHED by the caller. A step named here with state
                SUCCEEDED or CACHED is not executed: its Step value is reported unchanged
                as its final state and its outputs feed what follows. The executor runs
                it after all, as a new step, when its outputs are incomplete (a declared
                output missing, or an artifact URI that is empty or, for file:// URIs,
                gone from the store), or when something it depends on was not reused
                (its earlier result came from other inputs); that is why an exit handler
                reruns whenever a step inside its ExitHandler ran.
            trace_context: Called just before each attempt of a step starts; what it
                returns joins the step process's environment (TRACEPARENT).

        Raises:
            PipelineFailed: a step failed (after its retries, after running steps
                finished and exit handlers ran).
            asyncio.CancelledError: the caller cancelled; step processes were stopped and
                their steps reported CANCELLED.
        """
        work_dir = self._config.work_root / "runs" / run_id
        run = _Run(run_id, spec, observer, work_dir, reuse or {}, trace_context)
        root = spec.get("root") or {}
        try:
            outcome = await self._run_dag(run, root, "", "pipeline", dict(parameters), {})
        except asyncio.CancelledError:
            end = _now()
            for step in list(run.live.values()):
                await run.report(replace(step, state=StepState.CANCELLED, end_time=end))
            # Completed before this call, so not cancelled: report them as they were.
            for step in list(run.awaiting_reuse.values()):
                await run.report(step)
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
        if run.failure is not None:
            raise PipelineFailed(run.failure)
        if not outcome.ok:
            raise PipelineFailed(
                outcome.error
                or ErrorInfo(code=_UNKNOWN, message="the pipeline failed", reason=_STEP_FAILED)
            )
        declared = (root.get("dag") or {}).get("outputs") or {}
        if declared:
            outputs = tuple(
                replace(artifact, name=name)
                for name in declared.get("artifacts") or {}
                for artifact in outcome.artifacts.get(name, ())
            )
        else:
            outputs = tuple(a for a in run.produced if a.uri not in run.consumed)
        return RunResult(outputs=outputs, output_parameters=dict(outcome.parameters))

    # DAGs

    async def _run_dag(
        self,
        run: _Run,
        component: Mapping[str, Any],
        prefix: str,
        label: str,
        parameters: Mapping[str, Any],
        artifacts: Mapping[str, tuple[Artifact, ...]],
        fresh: bool = False,
    ) -> _Outcome:
        dag = component.get("dag") or {}
        tasks: Mapping[str, Any] = dag.get("tasks") or {}
        try:
            scope = _Scope(_with_defaults(component, parameters, required=False), artifacts, fresh)
        except (ParameterTypeError, _InputError) as exc:
            return _Outcome(_State.FAILED, error=run.fail(label, str(exc)))
        for key, task in tasks.items():
            component_of_task = run.components.get((task.get("componentRef") or {}).get("name"))
            if component_of_task is not None and run.container(component_of_task) is not None:
                name = prefix + _task_name(key, task)
                if not fresh and name in run.reuse:
                    run.awaiting_reuse[name] = run.reuse[name]
                else:
                    await run.report(self._new_step(run, name, task))
        futures: dict[str, asyncio.Task[_Outcome]] = {}
        for key, task in tasks.items():
            futures[key] = _spawn(self._run_task(run, prefix, key, task, scope, futures))
        outcomes = dict(zip(futures, await _supervise(list(futures.values())), strict=True))
        fresh_out = fresh or any(o.fresh for o in outcomes.values())
        failed = [o for o in outcomes.values() if not o.ok]
        if failed:
            error = next((o.error for o in failed if o.error is not None), None)
            return _Outcome(_State.FAILED, error=error or run.failure)
        parameters_out, artifacts_out = _dag_outputs(dag, outcomes)
        return _Outcome(_State.SUCCEEDED, parameters_out, artifacts_out, fresh=fresh_out)

    async def _run_task(
        self,
        run: _Run,
        prefix: str,
        key: str,
        task: Mapping[str, Any],
        scope: _Scope,
        futures: Mapping[str, asyncio.Task[_Outcome]],
    ) -> _Outcome:
        name = prefix + _task_name(key, task)
        deps = _upstream(task)
        unknown = deps - futures.keys()
        if unknown:
            return _Outcome(
                _State.FAILED, error=run.fail(name, f"unknown upstream tasks {sorted(unknown)}")
            )
        if deps:
            await asyncio.wait([futures[d] for d in deps])
        upstream = {d: futures[d].result() for d in deps}
        fresh = scope.fresh or any(o.fresh for o in upstream.values())
        try:
            component = run.component(task)
        except _InputError as exc:
            return _Outcome(_State.FAILED, error=run.fail(name, str(exc)))
        if name in run.awaiting_reuse:
            # Before the failure check: a step that completed stays completed even when
            # something else in this run has failed since.
            reused = None if fresh else await self._reuse(run, name, component)
            if reused is not None:
                return reused
            await run.report(self._new_step(run, name, task))
        policy = task.get("triggerPolicy") or {}
        always = policy.get("strategy") == _RUN_ALWAYS
        if not always and (run.failure is not None or not all(o.ok for o in upstream.values())):
            await self._skip(run, name, task, component)
            return _Outcome(_State.SKIPPED)
        try:
            parameters, artifacts = self._resolve_inputs(run, prefix, task, scope, upstream)
            condition = policy.get("condition")
            if condition and not evaluate_condition(condition, parameters):
                await self._skip(run, name, task, component)
                return _Outcome(_State.NOT_TRIGGERED, fresh=fresh)
        except (_InputError, ExpressionError, ParameterTypeError) as exc:
            return await self._task_failed(run, name, task, component, str(exc))
        if "dag" in component:
            if "parameterIterator" in task or "artifactIterator" in task:
                return await self._run_loop(
                    run, name, task, component, parameters, artifacts, fresh
                )
            return await self._run_dag(
                run, component, f"{name}/", name, parameters, artifacts, fresh
            )
        return await self._run_container(run, name, task, component, parameters, artifacts, always)

    async def _run_loop(
        self,
        run: _Run,
        name: str,
        task: Mapping[str, Any],
        component: Mapping[str, Any],
        parameters: Mapping[str, Any],
        artifacts: Mapping[str, tuple[Artifact, ...]],
        fresh: bool,
    ) -> _Outcome:
        iterations: list[tuple[Mapping[str, Any], Mapping[str, tuple[Artifact, ...]]]]
        try:
            if "parameterIterator" in task:
                iterator = task["parameterIterator"]
                source = iterator.get("items") or {}
                if "raw" in source:
                    items = coerce(source["raw"], "LIST")
                else:
                    items = coerce(parameters.get(source.get("inputParameter", "")), "LIST")
                if items is None:
                    raise _InputError(f"loop {name} has no items")
                item_input = iterator["itemInput"]
                iterations = [({**parameters, item_input: item}, artifacts) for item in items]
            else:
                iterator = task["artifactIterator"]
                source = iterator.get("items") or {}
                item_input = iterator["itemInput"]
                iterations = [
                    (parameters, {**artifacts, item_input: (item,)})
                    for item in artifacts.get(source.get("inputArtifact", ""), ())
                ]
        except (_InputError, ParameterTypeError, KeyError) as exc:
            return _Outcome(_State.FAILED, error=run.fail(name, f"bad loop items: {exc}"))
        limit = int((task.get("iteratorPolicy") or {}).get("parallelismLimit") or 0)
        gate = asyncio.Semaphore(limit) if limit > 0 else None

        async def iteration(index: int, inputs: tuple[Mapping[str, Any], Any]) -> _Outcome:
            label = f"{name}[{index}]"
            if gate is None:
                return await self._run_dag(run, component, f"{label}/", label, *inputs, fresh)
            async with gate:
                return await self._run_dag(run, component, f"{label}/", label, *inputs, fresh)

        outcomes = await _supervise([_spawn(iteration(i, x)) for i, x in enumerate(iterations)])
        fresh_out = fresh or any(o.fresh for o in outcomes)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            error = next((o.error for o in failed if o.error is not None), None)
            return _Outcome(_State.FAILED, error=error or run.failure)
        outputs = (component.get("dag") or {}).get("outputs") or {}
        collected_parameters = {
            key: [o.parameters[key] for o in outcomes if key in o.parameters]
            for key in outputs.get("parameters") or {}
        }
        collected_artifacts = {
            key: tuple(a for o in outcomes for a in o.artifacts.get(key, ()))
            for key in outputs.get("artifacts") or {}
        }
        return _Outcome(
            _State.SUCCEEDED, collected_parameters, collected_artifacts, fresh=fresh_out
        )

    def _resolve_inputs(
        self,
        run: _Run,
        prefix: str,
        task: Mapping[str, Any],
        scope: _Scope,
        upstream: Mapping[str, _Outcome],
    ) -> tuple[dict[str, Any], dict[str, tuple[Artifact, ...]]]:
        inputs = task.get("inputs") or {}
        parameters: dict[str, Any] = {}
        templated: list[str] = []
        for name, source in (inputs.get("parameters") or {}).items():
            if "componentInputParameter" in source:
                value = scope.parameters.get(source["componentInputParameter"])
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                value = upstream[ref["producerTask"]].parameters.get(ref["outputParameterKey"])
            elif "runtimeValue" in source:
                value = (source["runtimeValue"] or {}).get("constant")
                if isinstance(value, str) and "{{$" in value:
                    templated.append(name)
            elif "taskFinalStatus" in source:
                producer = source["taskFinalStatus"]["producerTask"]
                value = _final_status(run, prefix + producer, upstream[producer])
            else:
                raise _InputError(f"unsupported source for input {name!r}: {sorted(source)}")
            selector = source.get("parameterExpressionSelector")
            if selector and value is not None:
                value = select(selector, value)
            parameters[name] = value
        # f-strings compile to constants that embed the task's other inputs.
        for name in templated:
            parameters[name] = _SELF_REFERENCE.sub(
                lambda m: to_text(parameters.get(m.group(1))), parameters[name]
            )
        artifacts: dict[str, tuple[Artifact, ...]] = {}
        for name, source in (inputs.get("artifacts") or {}).items():
            if "taskOutputArtifact" in source:
                ref = source["taskOutputArtifact"]
                found = upstream[ref["producerTask"]].artifacts.get(ref["outputArtifactKey"], ())
            elif "componentInputArtifact" in source:
                found = scope.artifacts.get(source["componentInputArtifact"], ())
            else:
                raise _InputError(f"unsupported source for artifact {name!r}: {sorted(source)}")
            if found:
                artifacts[name] = tuple(found)
        return parameters, artifacts

    # Steps

    def _new_step(self, run: _Run, name: str, task: Mapping[str, Any]) -> Step:
        ref = (task.get("componentRef") or {}).get("name", "")
        container = run.container(run.components.get(ref) or {}) or {}
        return Step(
            name=name,
            component=ref.removeprefix("comp-"),
            image=container.get("image", ""),
            state=StepState.PENDING,
        )

    async def _skip(
        self, run: _Run, name: str, task: Mapping[str, Any], component: Mapping[str, Any]
    ) -> None:
        """Reports SKIPPED for every container step in the task (un-expanded for loops)."""
        if "dag" in component:
            for key, child in ((component.get("dag") or {}).get("tasks") or {}).items():
                child_component = run.components.get((child.get("componentRef") or {}).get("name"))
                if child_component is not None:
                    await self._skip(
                        run, f"{name}/{_task_name(key, child)}", child, child_component
                    )
        elif run.container(component) is not None:
            step = run.live.get(name) or self._new_step(run, name, task)
            await run.report(replace(step, state=StepState.SKIPPED, end_time=_now()))

    async def _task_failed(
        self,
        run: _Run,
        name: str,
        task: Mapping[str, Any],
        component: Mapping[str, Any],
        reason: str,
    ) -> _Outcome:
        if run.container(component) is None:
            return _Outcome(_State.FAILED, error=run.fail(name, reason))
        step = run.live.get(name) or self._new_step(run, name, task)
        return await self._step_failed(run, step, reason)

    async def _step_failed(
        self, run: _Run, step: Step, failure: ErrorInfo | str, attempts: int = 1
    ) -> _Outcome:
        if isinstance(failure, str):
            failure = _step_error(failure)
        logger.info("runs/%s: step %s failed: %s", run.id, step.name, failure.message)
        error = run.fail(
            step.name,
            failure.message,
            code=failure.code,
            error_reason=failure.reason,
            attempts=attempts,
        )
        if attempts > 1:
            failure = replace(failure, message=f"{failure.message} (after {attempts} attempts)")
        await run.report(
            replace(step, state=StepState.FAILED, attempt=attempts, end_time=_now(), error=failure)
        )
        return _Outcome(_State.FAILED, error=error)

    async def _reuse(self, run: _Run, name: str, component: Mapping[str, Any]) -> _Outcome | None:
        """Reports a step completed earlier and returns its outputs; None to run it instead."""
        step = run.awaiting_reuse[name]
        outputs = component.get("outputDefinitions") or {}
        by_name = {a.name: a for a in step.output_artifacts}
        problem = ""
        values = dict(step.output_parameters)
        for key, definition in (outputs.get("parameters") or {}).items():
            if key not in values:
                problem = f"it has no output parameter {key!r}"
                break
            try:
                # The store may hand back 4.0 for 4: downstream sees what a run would pass.
                values[key] = coerce(values[key], definition.get("parameterType"))
            except ParameterTypeError as exc:
                problem = f"output parameter {key!r}: {exc}"
                break
        declared = list(outputs.get("artifacts") or {})
        if not problem:
            missing = [n for n in declared if n not in by_name or not by_name[n].uri]
            if missing:
                problem = f"it has no output artifact {', '.join(map(repr, missing))}"
        if not problem and declared:
            gone = await asyncio.to_thread(_gone_artifacts, [by_name[n].uri for n in declared])
            if gone:
                problem = f"its artifact {gone[0]} is gone"
        if problem:
            logger.info("runs/%s: not reusing step %s (%s); running it", run.id, name, problem)
            return None
        run.produced.extend(step.output_artifacts)
        await run.report(step)
        return _Outcome(
            _State.SUCCEEDED, values, {a.name: (a,) for a in step.output_artifacts}, fresh=False
        )

    async def _run_container(
        self,
        run: _Run,
        name: str,
        task: Mapping[str, Any],
        component: Mapping[str, Any],
        parameters: Mapping[str, Any],
        artifacts: Mapping[str, tuple[Artifact, ...]],
        always: bool,
    ) -> _Outcome:
        container = run.container(component)
        if container is None:
            label = component.get("executorLabel", "")
            return _Outcome(
                _State.FAILED,
                error=run.fail(name, f"executor {label!r} is not a container (unsupported)"),
            )
        step = run.live.get(name) or self._new_step(run, name, task)
        try:
            folder = resolve_image(container.get("image", ""), self._config.images_root)
            parameters = _with_defaults(component, parameters, required=True)
        except (PipelinesError, ParameterTypeError, _InputError) as exc:
            return await self._step_failed(run, step, str(exc))
        try:
            retry = _RetryPolicy.of(task)
        except ValueError as exc:
            return await self._step_failed(run, step, f"bad retryPolicy: {exc}")
        run.consumed.update(a.uri for found in artifacts.values() for a in found)
        templates = [*container.get("command", ()), *container.get("args", ())]
        cache = self._cache if (task.get("cachingOptions") or {}).get("enableCache") else None
        cache_key = ""
        if cache is not None:
            cache_key = _cache_key(folder, container, component, templates, parameters, artifacts)
            hit = cache.get(cache_key)
            if hit is not None:
                return await self._cached(run, step, hit)
        work = _Work(
            folder=folder,
            container=container,
            component=component,
            templates=templates,
            parameters=parameters,
            artifacts=artifacts,
            timeout_seconds=folder.timeout_seconds or self._config.default_step_timeout_seconds,
        )
        outcome = await self._run_attempts(run, step, work, retry, always)
        if cache is not None and outcome.state is _State.SUCCEEDED:
            cache.put(
                cache_key,
                CachedOutputs(
                    output_artifacts=tuple(
                        a for found in outcome.artifacts.values() for a in found
                    ),
                    output_parameters=dict(outcome.parameters),
                ),
            )
        return outcome

    async def _cached(self, run: _Run, step: Step, hit: CachedOutputs) -> _Outcome:
        restored = tuple(replace(a, step=step.name) for a in hit.output_artifacts)
        now = _now()
        run.produced.extend(restored)
        await run.report(
            replace(
                step,
                state=StepState.CACHED,
                cached=True,
                start_time=now,
                end_time=now,
                output_artifacts=restored,
                output_parameters=dict(hit.output_parameters),
            )
        )
        return _Outcome(
            _State.SUCCEEDED, dict(hit.output_parameters), {a.name: (a,) for a in restored}
        )

    async def _run_attempts(
        self, run: _Run, step: Step, work: _Work, retry: _RetryPolicy | None, always: bool
    ) -> _Outcome:
        """Runs attempts until one succeeds or the retry policy gives up.

        Between attempts the step is PENDING with the next attempt's number and the failed
        attempt's error, and holds no step slot.
        """
        attempt = 1
        first_start = 0.0
        while True:
            async with self._step_slots():
                if run.failure is not None and not always:
                    if attempt == 1:
                        await run.report(replace(step, state=StepState.SKIPPED, end_time=_now()))
                        return _Outcome(_State.SKIPPED)
                    # Another step failed during the backoff: nothing new starts.
                    assert step.error is not None
                    return await self._step_failed(run, step, step.error, attempt - 1)
                if attempt == 1:
                    first_start = time.monotonic()
                step, result = await self._attempt(run, step, attempt, work)
            if not isinstance(result, ErrorInfo):
                values, stored = result
                run.produced.extend(stored)
                await run.report(
                    replace(
                        step,
                        state=StepState.SUCCEEDED,
                        end_time=_now(),
                        output_artifacts=stored,
                        output_parameters=values,
                    )
                )
                return _Outcome(_State.SUCCEEDED, values, {a.name: (a,) for a in stored})
            delay = retry.delay(attempt, time.monotonic() - first_start) if retry else None
            if delay is None:
                return await self._step_failed(run, step, result, attempt)
            logger.info(
                "runs/%s: step %s attempt %s failed (%s); retrying in %.3gs",
                run.id,
                step.name,
                attempt,
                result.message,
                delay,
            )
            attempt += 1
            step = replace(step, state=StepState.PENDING, attempt=attempt, error=result)
            await run.report(step)
            if delay > 0:
                await asyncio.sleep(delay)

    async def _attempt(
        self, run: _Run, step: Step, attempt: int, work: _Work
    ) -> tuple[Step, tuple[dict[str, Any], tuple[Artifact, ...]] | ErrorInfo]:
        """One run of the step's command: the step as last reported, and the outputs or why
        the attempt failed. Reports RUNNING once the process has started."""
        step_dir = run.work_dir / step.name
        if attempt > 1:
            await asyncio.to_thread(shutil.rmtree, step_dir, True)
        outputs = work.component.get("outputDefinitions") or {}
        output_parameters: Mapping[str, Any] = outputs.get("parameters") or {}
        output_artifacts: Mapping[str, Any] = outputs.get("artifacts") or {}
        (step_dir / "tmp").mkdir(parents=True, exist_ok=True)
        if output_artifacts:
            (step_dir / "artifacts").mkdir(exist_ok=True)
        if output_parameters:
            (step_dir / "parameters").mkdir(exist_ok=True)
        input_definitions = (work.component.get("inputDefinitions") or {}).get("artifacts") or {}
        try:
            local_inputs = (
                await asyncio.to_thread(self._localize, work.artifacts, input_definitions, step_dir)
                if work.artifacts
                else {}
            )
        except (PipelinesError, OSError) as exc:
            return step, _step_error(f"cannot read an input artifact: {exc}")
        context = CommandContext(
            parameters=work.parameters,
            input_artifacts=local_inputs,
            output_artifacts={
                n: LocalArtifact(n, str(step_dir / "artifacts" / n), "", _schema(d))
                for n, d in output_artifacts.items()
            },
            output_parameter_files={n: str(step_dir / "parameters" / n) for n in output_parameters},
            executor_output_file=str(step_dir / "executor_output.json"),
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
            return step, _step_error(str(exc))
        if not argv:
            return step, _step_error("the container has no command")
        if _PYTHON.fullmatch(argv[0]):
            argv[0] = self._config.python
        log_path = step_log_path(self.logs_root, run.id, step.name, attempt)
        try:
            log = AttemptLog(log_path)
        except OSError as exc:
            return step, _step_error(f"cannot create its log file: {exc}")
        env = self._environment(work.folder, work.container, step_dir / "tmp")
        if run.trace_context is not None:
            env.update(run.trace_context(step.name))
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
            return step, _step_error(f"cannot start {argv[0]}: {exc}")
        except BaseException:
            log.close()
            raise
        self._processes.record(process.pid, run=run.id, step=step.name)
        running = replace(
            step,
            state=StepState.RUNNING,
            attempt=attempt,
            start_time=step.start_time or _now(),
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
                return running, ErrorInfo(
                    code=_DEADLINE_EXCEEDED,
                    message=f"timed out after {_format_seconds(limit or 0)}",
                    reason=_STEP_TIMEOUT,
                )
        finally:
            log.close()
            self._processes.forget(process.pid)
        if returncode != 0:
            return running, _step_error(process.last_error_line or exit_reason(returncode))
        try:
            collected = await asyncio.to_thread(
                self._collect,
                run.id,
                step.name,
                step_dir,
                output_parameters,
                output_artifacts,
                uses_executor_output(work.templates),
            )
        except (PipelinesError, OSError) as exc:
            collected = f"cannot store its outputs: {exc}"
        if isinstance(collected, str):
            return running, _step_error(collected)
        return running, collected

    def _environment(
        self, folder: ImageFolder, container: Mapping[str, Any], tmp: Path
    ) -> dict[str, str]:
        env = dict(self._base_env)
        env["TMPDIR"] = str(tmp)
        for item in container.get("env") or ():
            env[item["name"]] = str(item.get("value", ""))
        step_env = self._config.step_env
        for name in folder.declared_env:
            if name in step_env:
                env[name] = step_env[name]
        return env

    def _localize(
        self,
        artifacts: Mapping[str, tuple[Artifact, ...]],
        definitions: Mapping[str, Any],
        step_dir: Path,
    ) -> dict[str, list[LocalArtifact]]:
        """Makes input artifacts readable locally (a no-op for the local store). Blocking."""
        local: dict[str, list[LocalArtifact]] = {}
        for name, found in artifacts.items():
            schema = _schema(definitions.get(name) or {})
            local[name] = []
            for index, artifact in enumerate(found):
                scratch = step_dir / "inputs" / name / str(index)
                scratch.mkdir(parents=True, exist_ok=True)
                path = self._artifacts.open_local(artifact.uri, scratch)
                local[name].append(LocalArtifact(name, str(path), artifact.uri, schema))
        return local

    def _collect(
        self,
        run_id: str,
        step_name: str,
        step_dir: Path,
        output_parameters: Mapping[str, Any],
        output_artifacts: Mapping[str, Any],
        read_executor_output: bool,
    ) -> tuple[dict[str, Any], tuple[Artifact, ...]] | str:
        """Reads output parameters and stores output artifacts; a str is the failure reason.

        Blocking; removes the step's directory.
        """
        try:
            written: Mapping[str, Any] = {}
            executor_output = step_dir / "executor_output.json"
            if read_executor_output and executor_output.is_file():
                try:
                    written = json.loads(executor_output.read_text()).get("parameterValues") or {}
                except (ValueError, AttributeError):
                    return "wrote an executor output file that is not an ExecutorOutput JSON"
            values: dict[str, Any] = {}
            for name, definition in output_parameters.items():
                kind = definition.get("parameterType")
                try:
                    text = (step_dir / "parameters" / name).read_text()
                    values[name] = parse_output(text, kind)
                except FileNotFoundError:
                    if name not in written:
                        return f"exited 0 but did not write output parameter {name!r}"
                    try:
                        values[name] = coerce(written[name], kind)
                    except ParameterTypeError as exc:
                        return f"output parameter {name!r}: {exc}"
                except ValueError as exc:
                    return f"output parameter {name!r} is not a valid {kind}: {exc}"
            missing = [n for n in output_artifacts if not (step_dir / "artifacts" / n).exists()]
            if missing:
                return (
                    f"exited 0 but did not create output artifact {', '.join(map(repr, missing))}"
                )
            stored: list[Artifact] = []
            for name in output_artifacts:
                result = self._artifacts.put(
                    step_dir / "artifacts" / name, f"runs/{run_id}/{step_name}/{name}"
                )
                stored.append(
                    Artifact(
                        name=name,
                        uri=result.uri,
                        step=step_name,
                        sha256=result.sha256,
                        size_bytes=result.size_bytes,
                    )
                )
            return values, tuple(stored)
        finally:
            shutil.rmtree(step_dir, ignore_errors=True)


def _schema(definition: Mapping[str, Any]) -> str:
    return (definition.get("artifactType") or {}).get("schemaTitle") or "system.Artifact"


def _with_defaults(
    component: Mapping[str, Any], parameters: Mapping[str, Any], *, required: bool
) -> dict[str, Any]:
    """Fills defaults and coerces declared inputs to their types; keeps undeclared ones."""
    resolved = dict(parameters)
    definitions = (component.get("inputDefinitions") or {}).get("parameters") or {}
    for name, definition in definitions.items():
        value = resolved.get(name)
        if value is None:
            value = definition.get("defaultValue")
        if value is None and required and not definition.get("isOptional"):
            raise _InputError(f"missing required input parameter {name!r}")
        resolved[name] = coerce(value, definition.get("parameterType"))
    return resolved


def _final_status(run: _Run, task_name: str, outcome: _Outcome) -> dict[str, Any]:
    """A PipelineTaskFinalStatus value, as kfp's executor reads it."""
    if outcome.ok:
        return {
            "state": "SUCCEEDED",
            "pipelineJobResourceName": run.id,
            "pipelineTaskName": task_name,
            "error": {},
        }
    error = outcome.error or run.failure
    return {
        "state": "FAILED",
        "pipelineJobResourceName": run.id,
        "pipelineTaskName": task_name,
        "error": {"code": error.code, "message": error.message} if error else {},
    }


def _dag_outputs(
    dag: Mapping[str, Any], outcomes: Mapping[str, _Outcome]
) -> tuple[dict[str, Any], dict[str, tuple[Artifact, ...]]]:
    """A DAG's outputs; with several selectors (dsl.OneOf) the first branch that ran wins."""
    declared = dag.get("outputs") or {}
    parameters: dict[str, Any] = {}
    for name, source in (declared.get("parameters") or {}).items():
        if "valueFromParameter" in source:
            selectors = [source["valueFromParameter"]]
        else:
            selectors = (source.get("valueFromOneof") or {}).get("parameterSelectors") or []
        found = _first_selected(selectors, "outputParameterKey", outcomes, lambda o: o.parameters)
        if found is not _MISSING:
            parameters[name] = found
    artifacts: dict[str, tuple[Artifact, ...]] = {}
    for name, source in (declared.get("artifacts") or {}).items():
        selectors = source.get("artifactSelectors") or []
        found = _first_selected(selectors, "outputArtifactKey", outcomes, lambda o: o.artifacts)
        if found is not _MISSING:
            artifacts[name] = found
    return parameters, artifacts


_MISSING = object()


def _first_selected(
    selectors: list[Mapping[str, Any]],
    key_field: str,
    outcomes: Mapping[str, _Outcome],
    values_of: Callable[[_Outcome], Mapping[str, Any]],
) -> Any:
    for selector in selectors:
        outcome = outcomes.get(selector["producerSubtask"])
        if outcome is None or outcome.state is not _State.SUCCEEDED:
            continue
        values = values_of(outcome)
        if selector[key_field] in values:
            return values[selector[key_field]]
    return _MISSING


def _cache_key(
    folder: ImageFolder,
    container: Mapping[str, Any],
    component: Mapping[str, Any],
    templates: Sequence[str],
    parameters: Mapping[str, Any],
    artifacts: Mapping[str, tuple[Artifact, ...]],
) -> str:
    """A step's identity: the image, the command templates, and the inputs by value.

    The templates plus the inputs determine the resolved command except for paths, which
    differ per run and are deliberately left out; artifacts count by content hash.
    """
    outputs = component.get("outputDefinitions") or {}
    payload = {
        "image_version": folder.version,
        "image": container.get("image", ""),
        "env": container.get("env") or [],
        "command": list(templates),
        "outputs": [
            sorted(outputs.get("parameters") or {}),
            sorted(outputs.get("artifacts") or {}),
        ],
        "parameters": parameters,
        "artifacts": {
            name: [a.sha256 or a.uri for a in found] for name, found in artifacts.items()
        },
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()
