"""Kubeflow task details back to the IR's steps.

A KFP 2.17 server answers GetRun with one task detail per Argo node of the run's workflow
(`backend/src/apiserver/server/api_converter.go` toModelTasks, `backend/src/common/util/
workflow.go` NodeStatuses): the workflow itself, `root-driver`, `root`, and for every IR
task a `<task>-driver` pod plus a `<task>` node, which for a container task is a DAG
holding one `executor` pod (`backend/src/v2/compiler/argocompiler/dag.go` task,
`container.go` addContainerExecutorTemplate). A loop `<task>` holds `iteration-driver`
and `iteration-iterations`, whose items `iteration-iterations(<i>:<i>)` each hold
`iteration-item-driver` and `iteration-item`, the loop body (dag.go iteratorTask,
iterationItemTask). KFP 2.17's default install wraps every node in an Argo Retry node
(`root` holding `root(0)`, `executor` holding `executor(0)`; argo-workflows operator.go
executeTemplate). Details carry no parent and no node id of their own, no error, no state
when Omitted, and come in no particular order; `child_tasks[].pod_name` lists the
children's Argo node ids, and children follow dependencies, not DAG nesting (dag.go
connectDependencies). `_Graph` rebuilds the names from those ids.

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

from skit_pipelines.domain import STEP_FAILED_CODE, ErrorInfo, Step, StepState

ROOT = "root"
"""The Argo task running the pipeline's root DAG."""
EXECUTOR = "executor"
"""The Argo task, inside a container task's node, whose pod runs the component."""
ITERATION_ITEM = "iteration-item"
"""The Argo task, inside one loop iteration, running the loop body."""
ITERATIONS = "iteration-iterations"
"""The Argo task, inside a loop's node, whose items are the loop's iterations."""
_POD_NAME_PREFIX_MAX = 253 - 10 - 1
"""argo-workflows pod_name.go: maxK8sResourceNameLength - k8sNamingHashLength - 1."""
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
        """The Kubernetes pod that ran `mapped` (argo-workflows workflow/util/pod_name.go
        GeneratePodName, POD_NAMES=v2; KFP's common/util/workflow.go RetrievePodName):
        "<workflow>-<template>-<hash of the node name>", the prefix cut to 242 characters."""
        if not mapped.executor_node or not self.workflow:
            return ""
        digest = mapped.executor_node.rsplit("-", 1)[-1]
        prefix = f"{self.workflow}-{mapped.executor_template}"[:_POD_NAME_PREFIX_MAX]
        return f"{prefix}-{digest}"


def _fnv_state(data: str, state: int = _FNV_OFFSET) -> int:
    for byte in data.encode():
        state = ((state ^ byte) * _FNV_PRIME) & _UINT32
    return state


def _natural(name: str) -> list[Any]:
    """Sorts "x(10:10)" after "x(2:2)"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class _Graph:
    """The workflow's Argo nodes by their full names.

    Details carry no node id of their own, only their children's. Every node but the
    workflow's is some node's child, and Argo names a node "<its DAG's node
    name>.<display name>" ("<name>(<n>)" for a retry attempt, "<name>(<i>:<i>)" for a
    loop item, both beside their node), so the names are found from the workflow's down by
    hashing candidates against the child ids. A detail is then the node whose name one of
    its children names as its parent: a DAG's tasks, a retry's attempts, a loop's items,
    a dependent in the same DAG. Details this leaves over (nodes with no children yet,
    pods whose dependents sit higher up) take the remaining names of their display name in
    a fixed order, so a poll maps them as the previous one did.
    """

    def __init__(self, workflow: str, nodes: tuple[ArgoNode, ...], ids: set[str]) -> None:
        self.workflow = workflow
        self._ids = ids
        self._prefix = f"{workflow}-"
        self.display: dict[str, str] = {}
        """Full name -> display name."""
        self._boundary: dict[str, str] = {}
        self._enumerate(nodes)
        self.node: dict[str, ArgoNode] = {}
        self._identify(nodes)

    def _exists(self, name: str) -> bool:
        return f"{self._prefix}{_fnv_state(name)}" in self._ids

    def _add(self, name: str, display: str, boundary: str, found: list[str]) -> None:
        """Adds `name` with its retry attempts and loop items."""
        self.display[name] = display
        self._boundary[name] = boundary
        found.append(name)
        for suffix in ("({})", "({0}:{0})"):
            index = 0
            while self._exists(beside := name + suffix.format(index)):
                self._add(beside, display + suffix.format(index), boundary, found)
                index += 1

    def _enumerate(self, nodes: tuple[ArgoNode, ...]) -> None:
        bases = sorted({re.sub(r"\(.*$", "", n.display_name) for n in nodes} - {""})
        pending: list[str] = []
        self._add(self.workflow, self.workflow, "", pending)
        while pending:
            parent = pending.pop()
            state = _fnv_state(parent + ".")
            for base in bases:
                if f"{self._prefix}{_fnv_state(base, state)}" in self._ids:
                    self._add(f"{parent}.{base}", base, parent, pending)

    def _parents(self, child: str, display: str) -> Iterator[str]:
        """Names a node with this display name has if it lists `child` as a child."""
        boundary = self._boundary.get(child, "")
        beside = re.sub(r"\((\d+|\d+:\d+)\)$", "", child)
        yield from (beside, boundary, f"{boundary}.{display}")

    def _identify(self, nodes: tuple[ArgoNode, ...]) -> None:
        by_id = {argo_node_id(self.workflow, name): name for name in self.display}
        left: list[ArgoNode] = []
        for node in sorted(nodes, key=lambda n: n.task_id):
            named = {
                parent
                for child in node.children
                if child in by_id
                for parent in self._parents(by_id[child], node.display_name)
                if parent != by_id[child]
                and self.display.get(parent) == node.display_name
                and parent not in self.node
            }
            if len(named) == 1:
                self.node[named.pop()] = node
            else:
                left.append(node)
        free: dict[str, list[str]] = defaultdict(list)
        for name in sorted(set(self.display) - set(self.node), key=_natural):
            free[self.display[name]].append(name)
        for node in left:
            names = free.get(node.display_name)
            if names:
                self.node[names.pop(0)] = node

    def has(self, name: str) -> bool:
        return name in self.display

    def state(self, name: str) -> str:
        node = self.node.get(name)
        return (node.state if node is not None else "") or "RUNTIME_STATE_UNSPECIFIED"

    def attempts(self, name: str) -> list[str]:
        """The attempts of node `name` (itself when it is no retry node), oldest first."""
        found: list[str] = []
        while self.has(attempt := f"{name}({len(found)})"):
            found.append(attempt)
        return found or ([name] if self.has(name) else [])

    def inner(self, name: str) -> str:
        """The node doing the work of `name`: its last attempt when it is a retry node
        (KFP's default install wraps every node in one)."""
        return self.attempts(name)[-1] if self.has(name) else name


def _find_workflow(nodes: tuple[ArgoNode, ...], ids: set[str]) -> str:
    """The workflow's name: its node's display name, whose root-driver is a child
    (through the retry node wrapping the workflow, with KFP's default install)."""
    for node in nodes:
        name = node.display_name
        for entry in (name, f"{name}(0)"):
            if argo_node_id(name, f"{entry}.{ROOT}-driver") in ids:
                return name
    return ""


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
    ids = {child for node in nodes for child in node.children}
    workflow = _find_workflow(nodes, ids)
    graph = _Graph(workflow, nodes, ids) if workflow else None
    steps: list[MappedStep] = []

    def not_reached(body: _Dag, prefix: str) -> None:
        # A cancelled run's never-entered DAGs have no steps, as locally.
        if ended_as is StepState.SKIPPED:
            steps.extend(_unfinished(body, prefix, StepState.SKIPPED))

    def walk(dag: _Dag, boundary: str, prefix: str) -> None:
        assert graph is not None
        for task in dag.containers:
            name = f"{boundary}.{task.key}"
            if not graph.has(name):
                state = StepState.PENDING if ended_as is None else ended_as
                steps.append(MappedStep(_step(prefix + task.name, task, state), task))
            else:
                steps.append(_container_step(prefix + task.name, task, name, graph, ended_as))
        for key, name, body in dag.groups:
            node = f"{boundary}.{key}"
            reported = graph.state(node) if graph.has(node) else ""
            if reported == "SKIPPED":
                steps.extend(_unfinished(body, f"{prefix}{name}/", StepState.SKIPPED))
            elif reported in ("", "RUNTIME_STATE_UNSPECIFIED"):
                # Not created yet, or Omitted (a task it depends on failed).
                not_reached(body, f"{prefix}{name}/")
            else:
                walk(body, graph.inner(node), f"{prefix}{name}/")
        for key, name, body in dag.loops:
            items = f"{graph.inner(f'{boundary}.{key}')}.{ITERATIONS}"
            if not graph.has(items) or graph.state(items) == "RUNTIME_STATE_UNSPECIFIED":
                not_reached(body, f"{prefix}{name}/")
                continue
            if graph.state(items) == "SKIPPED":
                # The loop's condition was false, or it had no items.
                steps.extend(_unfinished(body, f"{prefix}{name}/", StepState.SKIPPED))
                continue
            index = 0
            while graph.has(iteration := f"{items}({index}:{index})"):
                here = f"{prefix}{name}[{index}]/"
                item = f"{graph.inner(iteration)}.{ITERATION_ITEM}"
                if graph.state(iteration) == "SKIPPED":
                    steps.extend(_unfinished(body, here, StepState.SKIPPED))
                elif graph.has(item):
                    walk(body, graph.inner(item), here)
                else:
                    not_reached(body, here)
                index += 1

    root = f"{graph.inner(workflow)}.{ROOT}" if graph is not None else ""
    if graph is not None and graph.has(root):
        walk(shape.root, graph.inner(root), "")
    elif ended_as is StepState.SKIPPED:
        steps.extend(_unfinished(shape.root, "", ended_as))
    elif ended_as is not None:
        steps.extend(MappedStep(_step(t.name, t, ended_as), t) for t in shape.root.containers)
    return RunTasks(workflow, tuple(steps))


def _step(name: str, task: IrTask, state: StepState) -> Step:
    return Step(name=name, component=task.component, image=task.image, state=state)


def _container_step(
    name: str, task: IrTask, node_name: str, graph: _Graph, ended_as: StepState | None
) -> MappedStep:
    node = graph.node.get(node_name)
    # Omitted (a dependency failed) or not reported yet: not started.
    state = STEP_STATES.get(graph.state(node_name), StepState.PENDING)
    if ended_as is not None and not state.terminal:
        state = ended_as
    elif ended_as is StepState.CANCELLED and state is StepState.FAILED:
        state = StepState.CANCELLED
    attempts = graph.attempts(f"{graph.inner(node_name)}.{EXECUTOR}")
    executor_node = argo_node_id(graph.workflow, attempts[-1]) if attempts else ""
    cached = False
    if attempts and graph.state(attempts[-1]) == "SKIPPED" and state is StepState.SUCCEEDED:
        # container.go: a cache hit skips the executor pod; its task still succeeds.
        state, cached, executor_node = StepState.CACHED, True, ""
    error = None
    if state is StepState.FAILED:
        # KFP task details carry no error of their own: the run's error names it. The
        # code is the local executor's for a failed step (domain.STEP_FAILED_CODE).
        error = ErrorInfo(code=STEP_FAILED_CODE, message=f"{name} failed", reason="STEP_FAILED")
    step = Step(
        name=name,
        component=task.component,
        image=task.image,
        state=state,
        attempt=max(len(attempts), 1),
        cached=cached,
        start_time=node.start_time if node is not None else None,
        end_time=node.end_time if node is not None and state.terminal else None,
        error=error,
    )
    template = ("retry-" if task.retries else "") + "system-container-impl"
    return MappedStep(step, task, executor_node, template)
