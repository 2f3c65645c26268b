"""The DAG walk: runs a DAG's tasks as their dependencies allow, with conditions, loops,
exit handlers and the reuse of steps completed earlier (kfp.local's dag_orchestrator)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from kfp.pipeline_spec.pipeline_spec_pb2 import ComponentSpec, PipelineTaskSpec

from skit_pipelines.domain import StepState
from skit_pipelines.executor._cache import NotReusable, check_outputs
from skit_pipelines.executor._cel import ExpressionError, evaluate_condition
from skit_pipelines.executor._command import system_values
from skit_pipelines.executor._importer import ImporterTask
from skit_pipelines.executor._inputs import (
    FinalStatusSource,
    InputError,
    Scope,
    TaskInputs,
    collect_iterations,
    dag_outputs,
    is_loop,
    loop_iterations,
    resolve_inputs,
    with_defaults,
)
from skit_pipelines.executor._ir import (
    IRError,
    is_dag,
    ordered,
    runs_always,
    task_name,
    upstream,
)
from skit_pipelines.executor._outcome import Outcome, Parameters, TaskState, rejected_error
from skit_pipelines.executor._run import RunState, now
from skit_pipelines.executor._runner import ContainerTask, StepRunner
from skit_pipelines.executor._values import ParameterTypeError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class _DagCall:
    """One DAG to run: the component, where its steps are named, and its inputs."""

    component: ComponentSpec
    prefix: str
    """Prepended to its tasks' names: "" for the root, "loop[0]/" for an iteration."""
    label: str
    """How failures name the DAG itself."""
    inputs: TaskInputs
    fresh: bool = False


class DagWalker:
    """Runs one run's DAGs; container tasks go to the shared StepRunner."""

    def __init__(self, run: RunState, runner: StepRunner) -> None:
        self._run = run
        self._runner = runner

    async def run_pipeline(self, parameters: Parameters) -> Outcome:
        root = self._run.ir.root
        return await self._run_dag(_DagCall(root, "", "pipeline", TaskInputs(dict(parameters), {})))

    async def _run_dag(self, call: _DagCall) -> Outcome:
        run = self._run
        tasks = ordered(call.component.dag.tasks)
        try:
            scope = Scope(
                with_defaults(call.component, call.inputs.parameters, required=False),
                call.inputs.artifacts,
                call.fresh,
            )
        except (ParameterTypeError, InputError) as exc:
            return Outcome.failed(run.fail(call.label, rejected_error(str(exc))))
        pending = []
        for key, task in tasks:
            if run.ir.reports_step(task):
                name = call.prefix + task_name(key, task)
                if not call.fresh and name in run.reuse:
                    run.awaiting_reuse[name] = run.reuse[name]
                else:
                    pending.append(run.new_step(name, task))
        if pending:
            # One revision with the whole DAG: watchers are sent it once, not once a step.
            await run.report(*pending)
        futures: dict[str, asyncio.Task[Outcome]] = {}
        for key, task in tasks:
            futures[key] = _spawn(self._run_task(call.prefix, key, task, scope, futures))
        outcomes = dict(zip(futures, await _supervise(list(futures.values())), strict=True))
        fresh_out = call.fresh or any(o.fresh for o in outcomes.values())
        failed = _first_failure(run, outcomes.values())
        if failed is not None:
            return failed
        outputs = dag_outputs(call.component.dag.outputs, outcomes)
        return Outcome(TaskState.SUCCEEDED, outputs.parameters, outputs.artifacts, fresh=fresh_out)

    async def _run_task(
        self,
        prefix: str,
        key: str,
        task: PipelineTaskSpec,
        scope: Scope,
        futures: Mapping[str, asyncio.Task[Outcome]],
    ) -> Outcome:
        run = self._run
        name = prefix + task_name(key, task)
        deps = upstream(task)
        unknown = deps - futures.keys()
        if unknown:
            return Outcome.failed(
                run.fail(name, rejected_error(f"unknown upstream tasks {sorted(unknown)}"))
            )
        if deps:
            await asyncio.wait([futures[d] for d in deps])
        upstream_outcomes = {d: futures[d].result() for d in deps}
        fresh = scope.fresh or any(o.fresh for o in upstream_outcomes.values())
        try:
            component = run.ir.component(task)
        except IRError as exc:
            return Outcome.failed(run.fail(name, rejected_error(str(exc))))
        if name in run.awaiting_reuse:
            # Before the failure check: a step that completed stays completed even when
            # something else in this run has failed since.
            reused = None if fresh else await self._reuse(name, component)
            if reused is not None:
                return reused
            await run.report(run.new_step(name, task))
        always = runs_always(task)
        if not always and (
            run.failure is not None or not all(o.ok for o in upstream_outcomes.values())
        ):
            await self._skip(name, task, component)
            return Outcome(TaskState.SKIPPED)
        try:
            statuses = {
                d: FinalStatusSource(run.id, prefix + d, outcome, run.failure)
                for d, outcome in upstream_outcomes.items()
            }
            inputs = resolve_inputs(
                task, scope, upstream_outcomes, statuses, system_values(run.id, name)
            )
            condition = task.trigger_policy.condition
            if condition and not evaluate_condition(condition, inputs.parameters):
                await self._skip(name, task, component)
                return Outcome(TaskState.NOT_TRIGGERED, fresh=fresh)
        except (InputError, ExpressionError, ParameterTypeError) as exc:
            return await self._task_failed(name, task, component, str(exc))
        if is_dag(component):
            if is_loop(task):
                return await self._run_loop(name, task, component, inputs, fresh)
            return await self._run_dag(_DagCall(component, f"{name}/", name, inputs, fresh))
        container = run.ir.container(component)
        if container is not None:
            return await self._runner.run(
                run, ContainerTask(name, task, component, container, inputs, always)
            )
        importer = run.ir.importer(component)
        if importer is not None:
            return await self._runner.run_importer(
                run, ImporterTask(name, task, component, importer, inputs, always)
            )
        label = component.executor_label
        return Outcome.failed(
            run.fail(
                name,
                rejected_error(f"executor {label!r} is neither a container nor an importer"),
            )
        )

    async def _run_loop(
        self,
        name: str,
        task: PipelineTaskSpec,
        component: ComponentSpec,
        inputs: TaskInputs,
        fresh: bool,
    ) -> Outcome:
        run = self._run
        try:
            iterations = loop_iterations(task, inputs)
        except (InputError, ParameterTypeError, ValueError) as exc:
            return Outcome.failed(run.fail(name, rejected_error(f"bad loop items: {exc}")))
        limit = task.iterator_policy.parallelism_limit
        gate = asyncio.Semaphore(limit) if limit > 0 else None

        async def iteration(index: int, item_inputs: TaskInputs) -> Outcome:
            label = f"{name}[{index}]"
            call = _DagCall(component, f"{label}/", label, item_inputs, fresh)
            if gate is None:
                return await self._run_dag(call)
            async with gate:
                return await self._run_dag(call)

        outcomes = await _supervise([_spawn(iteration(i, x)) for i, x in enumerate(iterations)])
        fresh_out = fresh or any(o.fresh for o in outcomes)
        failed = _first_failure(run, outcomes)
        if failed is not None:
            return failed
        collected = collect_iterations(component.dag.outputs, outcomes)
        return Outcome(
            TaskState.SUCCEEDED, collected.parameters, collected.artifacts, fresh=fresh_out
        )

    async def _skip(self, name: str, task: PipelineTaskSpec, component: ComponentSpec) -> None:
        """Reports SKIPPED for every container step in the task (un-expanded for loops)."""
        run = self._run
        if is_dag(component):
            for key, child in ordered(component.dag.tasks):
                child_component = run.ir.find_component(child)
                if child_component is not None:
                    await self._skip(f"{name}/{task_name(key, child)}", child, child_component)
        elif run.ir.is_step(component):
            step = run.step_of(name, task)
            await run.report(replace(step, state=StepState.SKIPPED, end_time=now()))

    async def _task_failed(
        self, name: str, task: PipelineTaskSpec, component: ComponentSpec, reason: str
    ) -> Outcome:
        run = self._run
        if not run.ir.is_step(component):
            return Outcome.failed(run.fail(name, rejected_error(reason)))
        return await run.step_failed(run.step_of(name, task), rejected_error(reason))

    async def _reuse(self, name: str, component: ComponentSpec) -> Outcome | None:
        """Reports a step completed earlier and returns its outputs; None to run it instead."""
        run = self._run
        step = run.awaiting_reuse[name]
        check = check_outputs(step, component)
        if not isinstance(check, NotReusable):
            # A RetryRun's reused steps are the retried run's: copied into this run.
            restored = await self._runner.restore(run, name, step.output_artifacts)
            if isinstance(restored, NotReusable):
                check = restored
            else:
                step = replace(step, output_artifacts=restored)
        if isinstance(check, NotReusable):
            logger.info("runs/%s: not reusing step %s (%s); running it", run.id, name, check.reason)
            return None
        run.produced.extend(step.output_artifacts)
        await run.report(step)
        return Outcome(
            TaskState.SUCCEEDED,
            check.parameters,
            {a.name: (a,) for a in step.output_artifacts},
            fresh=False,
        )


def _first_failure(run: RunState, outcomes: Iterable[Outcome]) -> Outcome | None:
    """A DAG's or loop's failure when any of its tasks failed, naming the first error."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return None
    error = next((o.error for o in failed if o.error is not None), None)
    return Outcome.failed(error or run.failure)


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
