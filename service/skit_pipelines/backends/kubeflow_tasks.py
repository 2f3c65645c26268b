"""Kubeflow task details back to the IR's steps.

A KFP 2.17 server answers GetRun with one task detail per Argo node of the run's workflow
(`backend/src/apiserver/server/api_converter.go` toModelTasks, `backend/src/common/util/
workflow.go` NodeStatuses): the workflow itself, `root-driver`, `root`, and for every IR
task a `<task>-driver` pod plus a `<task>` node, which for a container task is a DAG
holding one `executor` pod (`backend/src/v2/compiler/argocompiler/dag.go` task,
`container.go` addContainerExecutorTemplate). A loop `<task>` holds `iteration-driver`
and one `iteration-iterations(<i>:<i>)` node per item, each holding
`iteration-item-driver` and `iteration-item`, the loop body (dag.go iteratorTask,
iterationItemTask). Details carry no parent (`parent_task_id` is empty), no pod name of
their own, and no error; `child_tasks` lists the children's Argo node ids.

Argo names a node after its path ("<workflow>.root.for-loop-2.iteration-iterations(1:1)")
and gives it the id "<workflow>-<FNV-1a 32 of that name>" (argo-workflows
`Workflow.NodeID`), so the tree is rebuilt from the top: the workflow node is the one
whose children include the id of "<its display name>.root". When the ids do not fit
(another engine version), details are matched by display name alone, and loop
iterations are numbered in task-id order.

Only IR container tasks become steps, named as the local executor names them
("condition-1/echo-2", "for-loop-3[0]/count"); drivers, executors and DAG nodes never do.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from skit_pipelines.domain import Code, ErrorInfo, Step, StepState

ROOT = "root"
"""The Argo task running the pipeline's root DAG."""
EXECUTOR = "executor"
"""The Argo task, inside a container task's node, whose pod runs the component."""
ITERATION_ITEM = "iteration-item"
"""The Argo task, inside one loop iteration, running the loop body."""
_ITERATION = re.compile(r"^iteration-iterations\((\d+)(?::[^)]*)?\)$")
_ATTEMPT = re.compile(r"^\((\d+)\)$")
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_UINT32 = 0xFFFFFFFF

STEP_STATES: Mapping[str, StepState] = {
    "PENDING": StepState.PENDING,
    "RUNNING": StepState.RUNNING,
    "PAUSED": StepState.RUNNING,
    "CANCELING": StepState.RUNNING,
    "SUCCEEDED": StepState.SUCCEEDED,
    "SKIPPED": StepState.SKIPPED,
    "FAILED": StepState.FAILED,
    "CANCELED": StepState.CANCELLED,
}
"""KFP runtime states of a task (model/run.go RuntimeState.ToV2) -> step states. Argo's
Omitted becomes RUNTIME_STATE_UNSPECIFIED there: it is treated as not run yet."""


def argo_node_id(workflow: str, node_name: str) -> str:
    """The id Argo gives the node named `node_name` of `workflow`."""
    if node_name == workflow:
        return workflow
    digest = _FNV_OFFSET
    for byte in node_name.encode():
        digest = ((digest ^ byte) * _FNV_PRIME) & _UINT32
    return f"{workflow}-{digest}"


@dataclass(frozen=True)
class ArgoNode:
    """One task detail of a KFP run: an Argo node."""

    task_id: str
    display_name: str
    state: str
    """A KFP RuntimeState name."""
    start_time: datetime | None = None
    end_time: datetime | None = None
    children: tuple[str, ...] = ()
    """Argo node ids of the children (KFP lists them as pod names)."""


def _time(value: datetime | None) -> datetime | None:
    # KFP reports unset times as the Unix epoch.
    return value if value is not None and value.year > 1970 else None


def nodes_from_details(details: Iterable[Any] | None) -> tuple[ArgoNode, ...]:
    """ArgoNodes from kfp_server_api V2beta1PipelineTaskDetail objects."""
    nodes = []
    for detail in details or ():
        children = tuple(
            child.pod_name or child.task_id
            for child in detail.child_tasks or ()
            if child.pod_name or child.task_id
        )
        nodes.append(
            ArgoNode(
                task_id=detail.task_id or "",
                display_name=detail.display_name or "",
                state=detail.state or "RUNTIME_STATE_UNSPECIFIED",
                start_time=_time(detail.start_time),
                end_time=_time(detail.end_time),
                children=children,
            )
        )
    return tuple(nodes)


@dataclass(frozen=True)
class IrTask:
    """A container task of the IR, where it sits and what it runs."""

    key: str
    """The task's key in its DAG (Argo's task name)."""
    name: str
    """taskInfo.name, the step name's last part."""
    component: str
    image: str
    artifacts: tuple[str, ...] = ()
    """Names of its output artifacts."""
    retries: bool = False


@dataclass(frozen=True)
class _Dag:
    """One DAG of the IR: its container tasks, condition/sub-DAG tasks and loops."""

    containers: tuple[IrTask, ...]
    groups: tuple[tuple[str, str, _Dag], ...]
    """(key, name, body) of DAG tasks without an iterator."""
    loops: tuple[tuple[str, str, _Dag], ...]
    """(key, name, body) of loop tasks."""


def _dag(spec: Mapping[str, Any], dag: Mapping[str, Any]) -> _Dag:
    components: Mapping[str, Any] = spec.get("components") or {}
    executors: Mapping[str, Any] = (spec.get("deploymentSpec") or {}).get("executors") or {}
    containers: list[IrTask] = []
    groups: list[tuple[str, str, _Dag]] = []
    loops: list[tuple[str, str, _Dag]] = []
    for key, task in (dag.get("tasks") or {}).items():
        ref = (task.get("componentRef") or {}).get("name", "")
        component = components.get(ref) or {}
        name = (task.get("taskInfo") or {}).get("name") or key
        if "dag" in component:
            body = _dag(spec, component["dag"])
            iterated = "parameterIterator" in task or "artifactIterator" in task
            (loops if iterated else groups).append((key, name, body))
            continue
        container = (executors.get(component.get("executorLabel", "")) or {}).get("container")
        if container is None:
            continue  # an importer: no step locally either
        outputs = (component.get("outputDefinitions") or {}).get("artifacts") or {}
        containers.append(
            IrTask(
                key=key,
                name=name,
                component=ref.removeprefix("comp-"),
                image=container.get("image", ""),
                artifacts=tuple(outputs),
                retries="retryPolicy" in task,
            )
        )
    return _Dag(tuple(containers), tuple(groups), tuple(loops))


@dataclass(frozen=True)
class IrShape:
    """The IR's tasks as the mapping needs them; built once per pipeline version."""

    root: _Dag
    pipeline_name: str = ""
    """pipelineInfo.name: part of every artifact URI KFP makes."""
    declared_outputs: frozenset[tuple[str, str]] = frozenset()
    """(step, artifact) the pipeline declares as its outputs."""
    consumed: frozenset[tuple[str, str]] = frozenset()
    """(step, artifact) another task reads (loops un-expanded)."""

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> IrShape:
        components: Mapping[str, Any] = spec.get("components") or {}
        root_dag = (spec.get("root") or {}).get("dag") or {}
        consumed: set[tuple[str, str]] = set()

        def reads(dag: Mapping[str, Any], prefix: str) -> None:
            tasks: Mapping[str, Any] = dag.get("tasks") or {}
            names = {k: (t.get("taskInfo") or {}).get("name") or k for k, t in tasks.items()}
            for key, task in tasks.items():
                for source in ((task.get("inputs") or {}).get("artifacts") or {}).values():
                    ref = source.get("taskOutputArtifact")
                    if ref:
                        producer = names.get(ref["producerTask"], ref["producerTask"])
                        consumed.add((prefix + producer, ref["outputArtifactKey"]))
                component = components.get((task.get("componentRef") or {}).get("name", ""))
                if component and "dag" in component:
                    reads(component["dag"], f"{prefix}{names[key]}/")

        reads(root_dag, "")
        declared = {
            (selector["producerSubtask"], selector["outputArtifactKey"])
            for output in ((root_dag.get("outputs") or {}).get("artifacts") or {}).values()
            for selector in output.get("artifactSelectors") or ()
        }
        return cls(
            _dag(spec, root_dag),
            (spec.get("pipelineInfo") or {}).get("name", ""),
            frozenset(declared),
            frozenset(consumed),
        )

    def run_outputs(self, artifacts: Mapping[str, Sequence[Any]]) -> frozenset[tuple[str, str]]:
        """(step, artifact) of the run's outputs among `artifacts` (step -> artifacts):
        what the pipeline declares, else what no task read, as the local executor says."""
        if self.declared_outputs:
            return self.declared_outputs
        produced = {(step, a.name) for step, found in artifacts.items() for a in found}
        return frozenset(produced - self.consumed)

    def tasks(self) -> dict[str, IrTask]:
        """Step name (loops un-expanded: "for-loop-3/count") -> its task."""
        found: dict[str, IrTask] = {}

        def walk(dag: _Dag, prefix: str) -> None:
            for task in dag.containers:
                found[prefix + task.name] = task
            for _, name, body in (*dag.groups, *dag.loops):
                walk(body, f"{prefix}{name}/")

        walk(self.root, "")
        return found


@dataclass(frozen=True)
class MappedStep:
    """A step and where KFP ran it."""

    step: Step
    task: IrTask
    executor_node: str = ""
    """The Argo node id of the pod that ran it (its last attempt); "" when none ran."""
    executor_template: str = ""
    """The Argo template of that pod (part of the pod's name)."""


@dataclass(frozen=True)
class RunTasks:
    """What a run's task details say about its steps."""

    workflow: str
    """The Argo workflow's name; "" when no detail named it."""
    steps: tuple[MappedStep, ...] = field(default_factory=tuple)

    def pod_name(self, mapped: MappedStep) -> str:
        """The Kubernetes pod that ran `mapped` (backend/src/common/util/workflow.go
        RetrievePodName, pod names v2): "<workflow>-<template>-<hash of the node id>"."""
        if not mapped.executor_node or not self.workflow:
            return ""
        digest = mapped.executor_node.rsplit("-", 1)[-1]
        return f"{self.workflow}-{mapped.executor_template}-{digest}"


class _Scope:
    """The children of one node, by display name."""

    def __init__(self, children: Mapping[str, ArgoNode], tree: _Tree | None, path: str) -> None:
        self.children = children
        self.tree = tree
        self.path = path

    def child(self, display: str) -> tuple[ArgoNode, _Scope] | None:
        node = self.children.get(display)
        if node is None:
            return None
        if self.tree is None:
            return node, self
        return node, self.tree.scope(f"{self.path}.{display}")


class _Tree:
    """Argo nodes by their full names, rebuilt from child ids."""

    def __init__(self, workflow: str, nodes: tuple[ArgoNode, ...]) -> None:
        self.workflow = workflow
        self.by_name: dict[str, ArgoNode] = {}
        by_display: dict[str, list[ArgoNode]] = defaultdict(list)
        for node in sorted(nodes, key=lambda n: n.task_id):
            by_display[node.display_name].append(node)
        root = next(n for n in by_display[workflow] if self._is_workflow(n))
        claimed = {id(root)}
        self.by_name[workflow] = root
        pending = [workflow]
        while pending:
            parent = pending.pop()
            for child_id in self.by_name[parent].children:
                match = self._child(parent, child_id, by_display, claimed)
                if match is not None:
                    name, node = match
                    claimed.add(id(node))
                    self.by_name[name] = node
                    pending.append(name)

    def _is_workflow(self, node: ArgoNode) -> bool:
        return argo_node_id(self.workflow, f"{self.workflow}.{ROOT}") in node.children

    def _child(
        self,
        parent: str,
        child_id: str,
        by_display: Mapping[str, list[ArgoNode]],
        claimed: set[int],
    ) -> tuple[str, ArgoNode] | None:
        last = parent.rsplit(".", 1)[-1]
        for display, candidates in by_display.items():
            # Argo's retry attempts are "<node>(<n>)", beside the node rather than in it.
            attempt = display.removeprefix(last) if display.startswith(last + "(") else ""
            name = f"{parent}{attempt}" if _ATTEMPT.match(attempt) else f"{parent}.{display}"
            if argo_node_id(self.workflow, name) != child_id:
                continue
            free = [n for n in candidates if id(n) not in claimed]
            # Several nodes share a display name (a task in every loop iteration): the one
            # whose own children hang under `name` is it; one not started yet has none.
            for node in free:
                if any(self._hangs_under(name, c, by_display) for c in node.children):
                    return name, node
            childless = [n for n in free if not n.children]
            if childless:
                return name, childless[0]
        return None

    def _hangs_under(self, name: str, child_id: str, by_display: Mapping[str, Any]) -> bool:
        last = name.rsplit(".", 1)[-1]
        for display in by_display:
            if argo_node_id(self.workflow, f"{name}.{display}") == child_id:
                return True
            attempt = display.removeprefix(last)
            if _ATTEMPT.match(attempt) and argo_node_id(self.workflow, name + attempt) == child_id:
                return True
        return False

    def scope(self, name: str) -> _Scope:
        """The children of node `name`, looking through retry attempts (the last one)."""
        attempts = [
            int(m.group(1))
            for other in self.by_name
            if other.startswith(name + "(")
            and (m := _ATTEMPT.match(other.removeprefix(name))) is not None
        ]
        if attempts:
            name = f"{name}({max(attempts)})"
        prefix = name + "."
        children = {
            other.removeprefix(prefix): node
            for other, node in self.by_name.items()
            if other.startswith(prefix) and "." not in other.removeprefix(prefix)
        }
        return _Scope(children, self, name)

    def attempts(self, name: str) -> list[str]:
        """Full names of the attempts of node `name` (itself when it was not retried)."""
        found = sorted(
            (int(m.group(1)), other)
            for other in self.by_name
            if other.startswith(name + "(")
            and (m := _ATTEMPT.match(other.removeprefix(name))) is not None
        )
        return [other for _, other in found] or ([name] if name in self.by_name else [])


def _find_workflow(nodes: tuple[ArgoNode, ...]) -> str:
    for node in nodes:
        if argo_node_id(node.display_name, f"{node.display_name}.{ROOT}") in node.children:
            return node.display_name
    return ""


class _Flat:
    """Display-name matching when the child ids do not rebuild the tree: a loop's
    iterations are numbered in task-id order, which KFP keeps from poll to poll."""

    def __init__(self, nodes: tuple[ArgoNode, ...]) -> None:
        self.by_display: dict[str, list[ArgoNode]] = defaultdict(list)
        for node in sorted(nodes, key=lambda n: n.task_id):
            self.by_display[node.display_name].append(node)

    def scope(self, index: int) -> _Scope:
        """The nodes of one loop iteration (0 outside loops). Nested loops cannot be
        told apart by display names: only the innermost index counts."""
        children = {d: ns[index] for d, ns in self.by_display.items() if index < len(ns)}
        return _Scope(children, None, "")

    def iterations(self, body: _Dag) -> int:
        return max((len(self.by_display.get(key, ())) for key in _keys(body)), default=0)


def _keys(dag: _Dag) -> Iterator[str]:
    for task in dag.containers:
        yield task.key
    for _, _, body in (*dag.groups, *dag.loops):
        yield from _keys(body)


def _unfinished(dag: _Dag, prefix: str, state: StepState) -> Iterator[MappedStep]:
    for task in dag.containers:
        yield MappedStep(_step(prefix + task.name, task, state), task)
    for _, name, body in (*dag.groups, *dag.loops):
        yield from _unfinished(body, f"{prefix}{name}/", state)


def map_steps(
    shape: IrShape, nodes: tuple[ArgoNode, ...], *, ended_as: StepState | None = None
) -> RunTasks:
    """The run's steps from its task details.

    A step appears once the DAG holding it has started (the local executor reports a
    DAG's container steps PENDING as it enters it); a false condition's steps are
    SKIPPED, loops un-expanded, as locally. `ended_as` (the run has ended): what a step
    that never finished becomes, SKIPPED after a failure or CANCELLED after a cancel,
    as the local executor reports them; after a cancel, steps Argo failed while
    terminating them are CANCELLED too.
    """
    workflow = _find_workflow(nodes)
    tree = _Tree(workflow, nodes) if workflow else None
    flat = None if tree is not None else _Flat(nodes)
    steps: list[MappedStep] = []
    top: _Scope | None = None
    if tree is not None:
        root = tree.scope(workflow).child(ROOT)
        top = root[1] if root is not None else None
    elif flat is not None and ROOT in flat.by_display:
        top = flat.scope(0)

    def iterations(scope: _Scope, body: _Dag) -> Iterator[tuple[int, _Scope]]:
        if flat is not None:
            for index in range(flat.iterations(body)):
                yield index, flat.scope(index)
            return
        found = sorted(
            (int(m.group(1)), display)
            for display in scope.children
            if (m := _ITERATION.match(display)) is not None
        )
        for index, display in found:
            iteration = scope.child(display)
            item = iteration[1].child(ITERATION_ITEM) if iteration is not None else None
            if item is not None:
                yield index, item[1]

    def walk(dag: _Dag, scope: _Scope, prefix: str) -> None:
        for task in dag.containers:
            found = scope.child(task.key)
            if found is None:
                state = StepState.PENDING if ended_as is None else ended_as
                steps.append(MappedStep(_step(prefix + task.name, task, state), task))
            else:
                steps.append(_container_step(prefix + task.name, task, *found, tree, ended_as))
        for key, name, body in (*dag.groups, *dag.loops):
            found = scope.child(key)
            if found is None or found[0].state == "SKIPPED":
                # A false condition, or (the run failed) never reached: SKIPPED steps.
                # A cancelled run's never-entered DAGs have no steps, as locally.
                if found is not None or ended_as is StepState.SKIPPED:
                    steps.extend(_unfinished(body, f"{prefix}{name}/", StepState.SKIPPED))
            elif (key, name, body) in dag.groups:
                walk(body, found[1], f"{prefix}{name}/")
            else:
                for index, item in iterations(found[1], body):
                    walk(body, item, f"{prefix}{name}[{index}]/")

    if top is not None:
        walk(shape.root, top, "")
    elif ended_as is StepState.SKIPPED:
        steps.extend(_unfinished(shape.root, "", ended_as))
    elif ended_as is not None:
        steps.extend(MappedStep(_step(t.name, t, ended_as), t) for t in shape.root.containers)
    return RunTasks(workflow, tuple(steps))


def _step(name: str, task: IrTask, state: StepState) -> Step:
    return Step(name=name, component=task.component, image=task.image, state=state)


def _container_step(
    name: str,
    task: IrTask,
    node: ArgoNode,
    inner: _Scope,
    tree: _Tree | None,
    ended_as: StepState | None,
) -> MappedStep:
    state = STEP_STATES.get(node.state)
    if state is None:
        # Omitted (a dependency failed) or not reported yet.
        state = StepState.PENDING
    if ended_as is not None and not state.terminal:
        state = ended_as
    elif ended_as is StepState.CANCELLED and state is StepState.FAILED:
        state = StepState.CANCELLED
    executor = inner.child(EXECUTOR)
    executor_node, attempt, cached = "", 1, False
    if executor is not None and tree is not None:
        attempts = tree.attempts(f"{inner.path}.{EXECUTOR}")
        attempt = max(len(attempts), 1)
        executor_node = argo_node_id(tree.workflow, attempts[-1]) if attempts else ""
    if executor is not None and executor[0].state == "SKIPPED" and state is StepState.SUCCEEDED:
        # container.go: a cache hit skips the executor pod; its task still succeeds.
        state, cached, executor_node = StepState.CACHED, True, ""
    error = None
    if state is StepState.FAILED:
        # KFP task details carry no error of their own: the run's error names it.
        error = ErrorInfo(code=Code.UNKNOWN, message=f"{name} failed", reason="STEP_FAILED")
    step = Step(
        name=name,
        component=task.component,
        image=task.image,
        state=state,
        attempt=attempt,
        cached=cached,
        start_time=node.start_time,
        end_time=node.end_time if state.terminal else None,
        error=error,
    )
    template = ("retry-" if task.retries else "") + "system-container-impl"
    return MappedStep(step, task, executor_node, template)
