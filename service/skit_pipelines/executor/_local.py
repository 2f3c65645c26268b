"""LocalExecutor: runs a compiled KFP PipelineSpec (IR) on this machine, without containers.

It plays the part of KFP's driver and launcher: walks the DAGs (conditions, loops, exit
handlers), resolves each task's inputs, substitutes the container placeholders, runs the
command in the image's folder, and uploads what the step produced.
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
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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
)
from skit_pipelines.executor._cel import ExpressionError, evaluate_condition, select
from skit_pipelines.executor._command import (
    CommandContext,
    LocalArtifact,
    PlaceholderError,
    resolve,
    uses_executor_output,
)
from skit_pipelines.executor._process import StepProcess, exit_reason, last_error_line
from skit_pipelines.executor._values import ParameterTypeError, coerce, parse_output, to_text
from skit_pipelines.images import ImageFolder, resolve_image

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UNKNOWN = 2
_STEP_FAILED = "STEP_FAILED"
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

    @property
    def ok(self) -> bool:
        return self.state in (_State.SUCCEEDED, _State.NOT_TRIGGERED)


class _InputError(ValueError):
    """A task's inputs cannot be resolved."""


@dataclass(frozen=True)
class _Scope:
    """The inputs of the DAG a task belongs to."""

    parameters: Mapping[str, Any]
    artifacts: Mapping[str, tuple[Artifact, ...]]


class _Run:
    """The state of one `execute` call."""

    def __init__(
        self, run_id: str, spec: Mapping[str, Any], observer: RunObserver, work_dir: Path
    ) -> None:
        self.id = run_id
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

    async def report(self, step: Step) -> None:
        if step.state.terminal:
            self.live.pop(step.name, None)
        else:
            self.live[step.name] = step
        await self.observer.step_changed(step)

    def fail(self, task: str, reason: str) -> ErrorInfo:
        error = ErrorInfo(
            code=_UNKNOWN, message=f"step {task} failed: {reason}", reason=_STEP_FAILED
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
    ) -> RunResult:
        """Runs the pipeline to the end.

        Raises:
            PipelineFailed: a step failed (after running steps finished and exit
                handlers ran).
            asyncio.CancelledError: the caller cancelled; step processes were stopped and
                their steps reported CANCELLED.
        """
        work_dir = self._config.work_root / run_id
        run = _Run(run_id, spec, observer, work_dir)
        root = spec.get("root") or {}
        try:
            outcome = await self._run_dag(run, root, "", "pipeline", dict(parameters), {})
        except asyncio.CancelledError:
            end = _now()
            for step in list(run.live.values()):
                await run.report(replace(step, state=StepState.CANCELLED, end_time=end))
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
    ) -> _Outcome:
        dag = component.get("dag") or {}
        tasks: Mapping[str, Any] = dag.get("tasks") or {}
        try:
            scope = _Scope(_with_defaults(component, parameters, required=False), artifacts)
        except (ParameterTypeError, _InputError) as exc:
            return _Outcome(_State.FAILED, error=run.fail(label, str(exc)))
        for key, task in tasks.items():
            component_of_task = run.components.get((task.get("componentRef") or {}).get("name"))
            if component_of_task is not None and run.container(component_of_task) is not None:
                await run.report(self._new_step(run, prefix + _task_name(key, task), task))
        futures: dict[str, asyncio.Task[_Outcome]] = {}
        for key, task in tasks.items():
            futures[key] = _spawn(self._run_task(run, prefix, key, task, scope, futures))
        outcomes = dict(zip(futures, await _supervise(list(futures.values())), strict=True))
        failed = [o for o in outcomes.values() if not o.ok]
        if failed:
            error = next((o.error for o in failed if o.error is not None), None)
            return _Outcome(_State.FAILED, error=error or run.failure)
        parameters_out, artifacts_out = _dag_outputs(dag, outcomes)
        return _Outcome(_State.SUCCEEDED, parameters_out, artifacts_out)

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
        try:
            component = run.component(task)
        except _InputError as exc:
            return _Outcome(_State.FAILED, error=run.fail(name, str(exc)))
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
                return _Outcome(_State.NOT_TRIGGERED)
        except (_InputError, ExpressionError, ParameterTypeError) as exc:
            return await self._task_failed(run, name, task, component, str(exc))
        if "dag" in component:
            if "parameterIterator" in task or "artifactIterator" in task:
                return await self._run_loop(run, name, task, component, parameters, artifacts)
            return await self._run_dag(run, component, f"{name}/", name, parameters, artifacts)
        return await self._run_container(run, name, task, component, parameters, artifacts, always)

    async def _run_loop(
        self,
        run: _Run,
        name: str,
        task: Mapping[str, Any],
        component: Mapping[str, Any],
        parameters: Mapping[str, Any],
        artifacts: Mapping[str, tuple[Artifact, ...]],
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
                return await self._run_dag(run, component, f"{label}/", label, *inputs)
            async with gate:
                return await self._run_dag(run, component, f"{label}/", label, *inputs)

        outcomes = await _supervise([_spawn(iteration(i, x)) for i, x in enumerate(iterations)])
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
        return _Outcome(_State.SUCCEEDED, collected_parameters, collected_artifacts)

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

    async def _step_failed(self, run: _Run, step: Step, reason: str) -> _Outcome:
        logger.info("runs/%s: step %s failed: %s", run.id, step.name, reason)
        error = run.fail(step.name, reason)
        await run.report(
            replace(
                step,
                state=StepState.FAILED,
                end_time=_now(),
                error=ErrorInfo(code=_UNKNOWN, message=reason, reason=_STEP_FAILED),
            )
        )
        return _Outcome(_State.FAILED, error=error)

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
        run.consumed.update(a.uri for found in artifacts.values() for a in found)
        templates = [*container.get("command", ()), *container.get("args", ())]
        cache = self._cache if (task.get("cachingOptions") or {}).get("enableCache") else None
        cache_key = ""
        if cache is not None:
            cache_key = _cache_key(folder, container, component, templates, parameters, artifacts)
            hit = cache.get(cache_key)
            if hit is not None:
                return await self._cached(run, step, hit)
        async with self._step_slots():
            if run.failure is not None and not always:
                await run.report(replace(step, state=StepState.SKIPPED, end_time=_now()))
                return _Outcome(_State.SKIPPED)
            outcome = await self._spawn_step(
                run, step, folder, container, component, templates, parameters, artifacts
            )
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

    async def _spawn_step(
        self,
        run: _Run,
        step: Step,
        folder: ImageFolder,
        container: Mapping[str, Any],
        component: Mapping[str, Any],
        templates: list[str],
        parameters: Mapping[str, Any],
        artifacts: Mapping[str, tuple[Artifact, ...]],
    ) -> _Outcome:
        step_dir = run.work_dir / step.name
        outputs = component.get("outputDefinitions") or {}
        output_parameters: Mapping[str, Any] = outputs.get("parameters") or {}
        output_artifacts: Mapping[str, Any] = outputs.get("artifacts") or {}
        (step_dir / "tmp").mkdir(parents=True, exist_ok=True)
        if output_artifacts:
            (step_dir / "artifacts").mkdir(exist_ok=True)
        if output_parameters:
            (step_dir / "parameters").mkdir(exist_ok=True)
        input_definitions = (component.get("inputDefinitions") or {}).get("artifacts") or {}
        try:
            local_inputs = (
                await asyncio.to_thread(self._localize, artifacts, input_definitions, step_dir)
                if artifacts
                else {}
            )
        except (PipelinesError, OSError) as exc:
            return await self._step_failed(run, step, f"cannot read an input artifact: {exc}")
        context = CommandContext(
            parameters=parameters,
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
            argv = resolve(templates, context)
        except PlaceholderError as exc:
            return await self._step_failed(run, step, str(exc))
        if not argv:
            return await self._step_failed(run, step, "the container has no command")
        if _PYTHON.fullmatch(argv[0]):
            argv[0] = self._config.python
        stderr = step_dir / "stderr.log"
        try:
            process = await StepProcess.start(
                argv,
                cwd=folder.path,
                env=self._environment(folder, container, step_dir / "tmp"),
                stdout=step_dir / "stdout.log",
                stderr=stderr,
                grace_seconds=self._config.cancel_grace_seconds,
            )
        except OSError as exc:
            return await self._step_failed(run, step, f"cannot start {argv[0]}: {exc}")
        running = replace(step, state=StepState.RUNNING, start_time=_now())
        try:
            await run.report(running)
        except BaseException:
            await process.stop()
            raise
        returncode = await process.wait()
        if returncode != 0:
            return await self._step_failed(
                run, running, last_error_line(stderr) or exit_reason(returncode)
            )
        try:
            collected = await asyncio.to_thread(
                self._collect,
                run.id,
                step.name,
                step_dir,
                output_parameters,
                output_artifacts,
                uses_executor_output(templates),
            )
        except (PipelinesError, OSError) as exc:
            collected = f"cannot store its outputs: {exc}"
        if isinstance(collected, str):
            return await self._step_failed(run, running, collected)
        values, stored = collected
        run.produced.extend(stored)
        await run.report(
            replace(
                running,
                state=StepState.SUCCEEDED,
                end_time=_now(),
                output_artifacts=stored,
                output_parameters=values,
            )
        )
        return _Outcome(_State.SUCCEEDED, values, {a.name: (a,) for a in stored})

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
