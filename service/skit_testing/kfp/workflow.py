"""A pipeline spec compiled to Argo templates as KFP 2.17 does, and run as Argo would.

Compilation (kubeflow/pipelines at 2.17.0, 020857a4, backend/src/v2/compiler/argocompiler):

- dag.go `DAG`: the workflow's entrypoint template runs `root-driver` (template
  system-dag-driver) and then `root` (the root DAG's template, depends on root-driver).
  A DAG's tasks are compiled in sorted order. Exit tasks (triggerPolicy.strategy
  ALL_UPSTREAM_TASKS_COMPLETED) become Argo lifecycle hooks, which the stand-in does not
  simulate: they are refused when the run is created.
- dag.go `task`: a task of a DAG component is `<task>-driver` (system-dag-driver, depends
  on the task's dependentTasks plus the producers of its task-output inputs,
  `addImplicitDependencies`, all as "<dep>.Succeeded") and `<task>` (the component's DAG
  template, depends on the driver, with `when: <driver condition> != false` when the task
  has a triggerPolicy.condition). A container task is `<task>-driver`
  (system-container-driver) and `<task>` (container.go `containerExecutorTask`: template
  system-container-executor, a DAG whose single task `executor` runs the pod template
  system-container-impl; "retry-" prefixes both when the task has a retryPolicy, and the
  executor then has a retryStrategy; "metadata-<annotations>-<labels>-" prefixes them when
  the kfp-kubernetes config sets podMetadata). A task whose image is a kfp-kubernetes stub
  (argostub/createpvc, argostub/deletepvc) is only its driver, named `<task>`. An importer
  is one pod `<task>` (importer.go, system-importer).
- dag.go `iteratorTask`/`iterationItemTask`: a ParallelFor task `<task>` runs the template
  <component>-<task>-iterator: `iteration-driver` (system-dag-driver), then
  `iteration-iterations` (depends on the driver, Argo withSequence over the driver's
  iteration count, the loop's condition as `when`) whose template
  <component>-iteration compiles the loop body as a task named `iteration-item`:
  `iteration-item-driver` and `iteration-item`.

Execution (Argo Workflows v4.0.5, the version KFP 2.17 installs; workflow/controller):

- operator.go `initializeNode`: node IDs are <workflow>-<fnv32a(node name)> (the workflow's
  own node is just <workflow>, pkg/apis/workflow/v1alpha1 Workflow.NodeID); a DAG task's
  node is named <boundary node name>.<task name> (dag.go `taskNodeName`) and its display
  name is that name with the boundary's name and the leading "." cut off; pods start
  Pending, DAGs Running; fulfilled nodes get FinishedAt = StartedAt when created so.
- dag.go `executeDAGTask`: a task is considered when its dependencies are fulfilled; if a
  dependency did not succeed, the task's node is created Omitted (type Skipped,
  "omitted: depends condition not met"); a false `when` makes a Skipped node ("when '...'
  evaluated false"); withSequence makes a TaskGroup node <task> and one node per item,
  <task>(<i>:<i>) (operator.go `generateNodeName`), an empty sequence a Skipped node
  ("Skipped, empty params"). `connectDependencies`: a task with no dependencies is a child
  of its DAG's node (or of its TaskGroup); otherwise a child of every outbound node of
  every dependency (operator.go `getOutboundNodes`: a pod or Skipped node is its own
  outbound node, a TaskGroup those of its children, a Retry node its last child, a DAG the
  outbound nodes of its leaf ("target") tasks, set when it completes).
- dag.go `assessDAGPhase`: a DAG completes once every reachable node is fulfilled: Failed
  (or Error) when a branch failed, else Succeeded. Argo v4 keeps scheduling independent
  tasks after a failure (failFast only decides the DAG's phase).
- operator.go `executeTemplate`: a template with a retryStrategy runs as a Retry node
  <name> with children <name>(0), <name>(1), ... KFP 2.17's manifests set
  workflowDefaults.spec.templateDefaults.retryStrategy (limit 2, retryPolicy OnError) in
  the workflow-controller ConfigMap, which wraps *every* node that way, the workflow's own
  included (`retry_wrappers=True`). OnError retries Error, not Failed, phases, so a failed
  executor is not retried.
- Terminating (KFP's TerminateRun patches spec.activeDeadlineSeconds to 0): no new node
  starts; Pending pods fail with "Step exceeded its deadline"
  (`failNodesWithoutCreatedPodsAfterDeadlineOrShutdown`), running pods are killed and fail;
  the workflow ends Failed.

Conditions and loop counts are decided by the drivers from runtime values the stand-in
does not have: a condition is taken from `RunControls.conditions` (by IR task path, e.g.
"for-loop-2/condition-3", or task name), else evaluated when it is a simple KFP condition
over known inputs (pipeline parameters and constants), else true. A loop's count is taken
from `RunControls.iterations`, else from its raw items or a pipeline parameter list, else
DEFAULT_ITERATIONS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from skit_testing.kfp.errors import ApiError, plain
from skit_testing.kfp.validation import PipelineTemplate

DEFAULT_ITERATIONS = 2
"""Iterations of a loop whose items the stand-in cannot know (e.g. a task's output)."""
ENTRYPOINT = "entrypoint"
DAG_DRIVER = "system-dag-driver"
CONTAINER_DRIVER = "system-container-driver"
CONTAINER_EXECUTOR = "system-container-executor"
CONTAINER_IMPL = "system-container-impl"
IMPORTER = "system-importer"
ROOT = "root"
EXECUTOR_TASK = "executor"
ITERATION = "iteration"
DUMMY_IMAGES = frozenset({"argostub/createpvc", "argostub/deletepvc"})
EXIT_STRATEGY = "ALL_UPSTREAM_TASKS_COMPLETED"
POD_NAME_PREFIX_MAX = 253 - 10 - 1
"""workflow/util/pod_name.go: maxK8sResourceNameLength - k8sNamingHashLength, minus one."""
OMITTED_MESSAGE = "omitted: depends condition not met"
EMPTY_SEQUENCE_MESSAGE = "Skipped, empty params"
DEADLINE_PENDING_MESSAGE = "Step exceeded its deadline"
DEADLINE_RUNNING_MESSAGE = "Pod was active on the node longer than the specified deadline"
FALSE_CONDITION = "false != false"
"""A compiled `when: {{tasks.<driver>.outputs.parameters.condition}} != false` once the
driver wrote "false"."""
DEFAULT_FAILURE_MESSAGE = "Error (exit code 1)"
"""Argo's message for a pod whose main container exited with code 1."""
_DISPLAY_SEPARATOR = re.compile(r"^(\[(\d+)\])?\.")


class NodeType(StrEnum):
    POD = "Pod"
    DAG = "DAG"
    TASK_GROUP = "TaskGroup"
    SKIPPED = "Skipped"
    RETRY = "Retry"


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    ERROR = "Error"
    OMITTED = "Omitted"

    @property
    def fulfilled(self) -> bool:
        return self not in (Phase.PENDING, Phase.RUNNING)

    @property
    def failed(self) -> bool:
        return self in (Phase.FAILED, Phase.ERROR)


class PodKind(StrEnum):
    ROOT_DRIVER = "root-driver"
    DAG_DRIVER = "dag-driver"
    CONTAINER_DRIVER = "container-driver"
    EXECUTOR = "executor"
    IMPORTER = "importer"
    KUBERNETES_OP = "kubernetes-op"


@dataclass(frozen=True)
class PodRole:
    """What a pod does for KFP."""

    kind: PodKind
    ir_path: str
    """The IR task it serves, as a path through DAG components ("for-loop-2/square")."""
    task_name: str
    """The driver's --task_name: the IR task key, used in output URIs."""
    executor_label: str = ""
    outputs: tuple[str, ...] = ()
    """The component's output artifacts (executors only)."""
    failure_point: bool = False
    """This pod fails when the test fails its IR task: the executor of a container task,
    the importer or kubernetes-op pod, the first driver of a DAG component or loop."""


@dataclass(frozen=True)
class IrTask:
    path: str
    name: str
    spec: Mapping[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Template:
    """An Argo template: a pod (`pod` set) or a DAG of tasks."""

    name: str
    tasks: tuple[DagTask, ...] = ()
    pod: PodRole | None = None
    retry: bool = False
    """It has a retryStrategy of its own (the executor of a task with a retryPolicy)."""


@dataclass(frozen=True)
class DagTask:
    name: str
    template: Template
    depends: tuple[str, ...] = ()
    when: IrTask | None = None
    """`when: <driver condition> != false`, the condition of this IR task."""
    loop: IrTask | None = None
    """withSequence over this IR task's iterations."""
    enters: IrTask | None = None
    """The DAG of this IR task's component: a new parameter scope inside."""


class UnsupportedPipeline(Exception):
    """A pipeline the stand-in cannot simulate (the real server could run it)."""


def _compile_error(message: str) -> ApiError:
    # The compiler's errors are plain Go errors: INTERNAL after util.ToGRPCError.
    return plain(f"Failed to create a new run: Failed to generate the ExecutionSpec: {message}")


class _Compiler:
    def __init__(self, template: PipelineTemplate) -> None:
        self._template = template
        self._components: Mapping[str, Any] = template.spec.get("components", {})
        self._executors: Mapping[str, Any] = template.spec.get("deploymentSpec", {}).get(
            "executors", {}
        )

    def entrypoint(self) -> Template:
        root = self._dag(ROOT, self._template.spec.get("root", {}).get("dag", {}), "")
        driver = Template(DAG_DRIVER, pod=PodRole(PodKind.ROOT_DRIVER, "", ""))
        tasks = (
            DagTask(f"{ROOT}-driver", driver),
            DagTask(ROOT, root, depends=(f"{ROOT}-driver",)),
        )
        return Template(ENTRYPOINT, tasks=tasks)

    def _dag(self, name: str, dag: Mapping[str, Any], prefix: str) -> Template:
        specs: Mapping[str, Any] = dag.get("tasks", {})
        tasks: list[DagTask] = []
        for task_name in sorted(specs):
            spec = specs[task_name]
            if spec.get("triggerPolicy", {}).get("strategy") == EXIT_STRATEGY:
                raise UnsupportedPipeline(
                    f"task {prefix}{task_name} is an exit handler task; the KFP stand-in"
                    " does not simulate Argo lifecycle hooks"
                )
            ir = IrTask(prefix + task_name, task_name, spec)
            tasks.extend(self._task(task_name, ir, self._depends(ir, specs), in_iteration=False))
        if not tasks:
            raise _compile_error(f"DAG {name} must contain one or more non-exit tasks")
        return Template(name, tasks=tuple(tasks))

    @staticmethod
    def _depends(ir: IrTask, siblings: Mapping[str, Any]) -> tuple[str, ...]:
        depends = list(ir.spec.get("dependentTasks", []))
        inputs = ir.spec.get("inputs", {})
        producers = [
            source.get(kind, {}).get("producerTask")
            for group, kind in (
                ("parameters", "taskOutputParameter"),
                ("artifacts", "taskOutputArtifact"),
            )
            for source in inputs.get(group, {}).values()
            if kind in source
        ]
        for producer in producers:
            if producer not in siblings:
                raise _compile_error(
                    f"compiling DAG: failed to add implicit deps: unknown producer task"
                    f' "{producer}" in DAG'
                )
            if producer not in depends:
                depends.append(producer)
        return tuple(depends)

    def _component(self, ir: IrTask) -> tuple[str, Mapping[str, Any]]:
        name = str(ir.spec.get("componentRef", {}).get("name", ""))
        component = self._components.get(name)
        if component is None:
            raise _compile_error(
                f'compiling task "{ir.name}": component spec for "{name}" not found'
            )
        return name, component

    def _task(
        self, argo_name: str, ir: IrTask, depends: tuple[str, ...], *, in_iteration: bool
    ) -> list[DagTask]:
        component_name, component = self._component(ir)
        if not in_iteration and ("parameterIterator" in ir.spec or "artifactIterator" in ir.spec):
            return self._iterator(argo_name, ir, component_name, depends)
        conditional = ir if ir.spec.get("triggerPolicy", {}).get("condition") else None
        # Iterations belong to a sub-DAG: their drivers depend on nothing.
        driver_depends = () if in_iteration else depends
        if "dag" in component:
            driver = Template(
                DAG_DRIVER,
                pod=PodRole(PodKind.DAG_DRIVER, ir.path, ir.name, failure_point=not in_iteration),
            )
            body = self._dag(component_name, component["dag"], ir.path + "/")
            return [
                DagTask(f"{argo_name}-driver", driver, depends=driver_depends),
                DagTask(
                    argo_name,
                    body,
                    depends=(f"{argo_name}-driver",),
                    when=conditional,
                    enters=ir,
                ),
            ]
        label = str(component.get("executorLabel", ""))
        executor = self._executors.get(label)
        if executor is None:
            raise _compile_error(
                f'compiling task "{ir.name}": executor with label "{label}" not found'
            )
        if "container" in executor:
            return self._container(argo_name, ir, component, label, executor, driver_depends)
        if "importer" in executor:
            if conditional is not None:
                raise _compile_error("triggerPolicy.condition on importer task is not supported")
            role = PodRole(PodKind.IMPORTER, ir.path, ir.name, label, failure_point=True)
            return [DagTask(argo_name, Template(IMPORTER, pod=role), depends=driver_depends)]
        if "resolver" in executor:
            raise _compile_error("resolver executors not implemented")
        raise _compile_error("custom job executors is Google Cloud only, it's not supported")

    def _container(
        self,
        argo_name: str,
        ir: IrTask,
        component: Mapping[str, Any],
        label: str,
        executor: Mapping[str, Any],
        depends: tuple[str, ...],
    ) -> list[DagTask]:
        conditional = ir if ir.spec.get("triggerPolicy", {}).get("condition") else None
        image = str(executor["container"].get("image", ""))
        if image in DUMMY_IMAGES:
            role = PodRole(PodKind.KUBERNETES_OP, ir.path, ir.name, label, failure_point=True)
            return [DagTask(argo_name, Template(CONTAINER_DRIVER, pod=role), depends=depends)]
        driver = Template(CONTAINER_DRIVER, pod=PodRole(PodKind.CONTAINER_DRIVER, ir.path, ir.name))
        prefix = ""
        if "retryPolicy" in ir.spec:
            prefix = "retry-"
        metadata = self._template.kubernetes_executor(label).get("podMetadata")
        if metadata is not None:
            annotations = len(metadata.get("annotations") or {})
            labels = len(metadata.get("labels") or {})
            prefix = f"metadata-{annotations}-{labels}-{prefix}"
        outputs = tuple(sorted(component.get("outputDefinitions", {}).get("artifacts", {})))
        role = PodRole(PodKind.EXECUTOR, ir.path, ir.name, label, outputs, failure_point=True)
        impl = Template(prefix + CONTAINER_IMPL, pod=role, retry="retryPolicy" in ir.spec)
        executor_dag = Template(prefix + CONTAINER_EXECUTOR, tasks=(DagTask(EXECUTOR_TASK, impl),))
        return [
            DagTask(f"{argo_name}-driver", driver, depends=depends),
            DagTask(argo_name, executor_dag, depends=(f"{argo_name}-driver",), when=conditional),
        ]

    def _iterator(
        self, argo_name: str, ir: IrTask, component_name: str, depends: tuple[str, ...]
    ) -> list[DagTask]:
        if "artifactIterator" in ir.spec:
            raise _compile_error("artifact iterator not implemented yet")
        conditional = ir if ir.spec.get("triggerPolicy", {}).get("condition") else None
        driver = Template(
            DAG_DRIVER, pod=PodRole(PodKind.DAG_DRIVER, ir.path, ir.name, failure_point=True)
        )
        items = self._task(f"{ITERATION}-item", ir, (), in_iteration=True)
        iterations = Template(f"{component_name}-{ITERATION}", tasks=tuple(items))
        loop = Template(
            f"{component_name}-{argo_name}-iterator",
            tasks=(
                DagTask(f"{ITERATION}-driver", driver),
                DagTask(
                    f"{ITERATION}-iterations",
                    iterations,
                    depends=(f"{ITERATION}-driver",),
                    when=conditional,
                    loop=ir,
                ),
            ),
        )
        return [DagTask(argo_name, loop, depends=depends)]


def compile_pipeline(template: PipelineTemplate) -> Template:
    """The entrypoint template of the Argo workflow KFP compiles for this spec.

    Raises:
        ApiError: what the Argo compiler refuses (INTERNAL, as on the real server).
        UnsupportedPipeline: what the stand-in does not simulate.
    """
    return _Compiler(template).entrypoint()


# Parameter values, for conditions and loop counts.


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""A parameter value only a running pipeline would know."""


@dataclass(frozen=True)
class Scope:
    """The input parameters of the component a DAG node runs, as far as they are known."""

    values: Mapping[str, Any]
    iteration: int | None = None


def root_scope(spec: Mapping[str, Any], parameters: Mapping[str, Any]) -> Scope:
    definitions = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    values = {name: d["defaultValue"] for name, d in definitions.items() if "defaultValue" in d}
    values.update(parameters)
    return Scope(values)


def _inputs(ir: IrTask, scope: Scope) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, source in ir.spec.get("inputs", {}).get("parameters", {}).items():
        value: Any = UNKNOWN
        if "componentInputParameter" in source:
            value = scope.values.get(source["componentInputParameter"], UNKNOWN)
        elif "runtimeValue" in source:
            value = source["runtimeValue"].get("constant", UNKNOWN)
        if source.get("parameterExpressionSelector"):
            value = UNKNOWN
        values[name] = value
    return values


def _loop_items(ir: IrTask, scope: Scope) -> list[Any] | None:
    items = ir.spec.get("parameterIterator", {}).get("items", {})
    value: Any = UNKNOWN
    if "raw" in items:
        value = items["raw"]
    elif "inputParameter" in items:
        value = _inputs(ir, scope).get(items["inputParameter"], UNKNOWN)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return list(value) if isinstance(value, list) else None


def _enter(ir: IrTask, scope: Scope) -> Scope:
    values = _inputs(ir, scope)
    if scope.iteration is not None and "parameterIterator" in ir.spec:
        items = _loop_items(ir, scope)
        item_input = ir.spec["parameterIterator"].get("itemInput", "")
        values[item_input] = (
            items[scope.iteration]
            if items is not None and scope.iteration < len(items)
            else UNKNOWN
        )
    return Scope(values)


# KFP trigger conditions are CEL; the SDK writes them as comparisons of
# inputs.parameter_values['...'] (optionally through int()/double()/string()) with
# literals, joined by &&, || and !(...). Anything else is left to the test.

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],.])
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class _ConditionError(Exception):
    pass


class _Condition:
    def __init__(self, text: str, inputs: Mapping[str, Any]) -> None:
        self._tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise _ConditionError(text[position:])
            kind = cast(str, match.lastgroup)
            self._tokens.append((kind, match.group(kind)))
            position = match.end()
        self._inputs = inputs
        self._index = 0

    def _peek(self) -> str:
        return self._tokens[self._index][1] if self._index < len(self._tokens) else ""

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self._index >= len(self._tokens):
            raise _ConditionError("end of condition")
        token = self._tokens[self._index]
        if expected is not None and token[1] != expected:
            raise _ConditionError(f"expected {expected}, got {token[1]}")
        self._index += 1
        return token

    def evaluate(self) -> Any:
        value = self._or()
        if self._index != len(self._tokens):
            raise _ConditionError("trailing tokens")
        return value

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            value = _truth(value) or _truth(right)
        return value

    def _and(self) -> Any:
        value = self._not()
        while self._peek() == "&&":
            self._take()
            right = self._not()
            value = _truth(value) and _truth(right)
        return value

    def _not(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not _truth(self._not())
        return self._compare()

    def _compare(self) -> Any:
        left = self._operand()
        operator = self._peek()
        if operator not in ("==", "!=", "<", "<=", ">", ">="):
            return left
        self._take()
        right = self._operand()
        if left is UNKNOWN or right is UNKNOWN:
            raise _ConditionError("unknown value")
        comparisons: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: bool(a == b),
            "!=": lambda a, b: bool(a != b),
            "<": lambda a, b: bool(a < b),
            "<=": lambda a, b: bool(a <= b),
            ">": lambda a, b: bool(a > b),
            ">=": lambda a, b: bool(a >= b),
        }
        try:
            return comparisons[operator](left, right)
        except TypeError as exc:
            raise _ConditionError(str(exc)) from None

    def _operand(self) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or()
            self._take(")")
            return value
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return cast(str, json.loads('"' + text[1:-1].replace('"', '\\"') + '"'))
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if text in ("int", "double", "string") and self._peek() == "(":
                self._take("(")
                value = self._or()
                self._take(")")
                return _convert(text, value)
            if text == "inputs":
                self._take(".")
                self._take("parameter_values")
                self._take("[")
                _, key = self._take()
                self._take("]")
                return self._inputs.get(cast(str, json.loads('"' + key[1:-1] + '"')), UNKNOWN)
        raise _ConditionError(f"unexpected {text}")


def _truth(value: Any) -> bool:
    if value is UNKNOWN:
        raise _ConditionError("unknown value")
    return bool(value)


def _convert(function: str, value: Any) -> Any:
    if value is UNKNOWN:
        return UNKNOWN
    try:
        if function == "int":
            return int(float(value)) if isinstance(value, str) else int(value)
        if function == "double":
            return float(value)
        return value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise _ConditionError(str(exc)) from None


def evaluate_condition(text: str, inputs: Mapping[str, Any]) -> bool | None:
    """A KFP trigger condition over known inputs; None when it cannot be decided."""
    try:
        return bool(_Condition(text, inputs).evaluate())
    except (_ConditionError, IndexError, ValueError):
        return None


# Running the workflow.


@dataclass
class RunControls:
    """What the test decides for one run (keys: IR task path or task name)."""

    conditions: dict[str, bool] = field(default_factory=dict)
    iterations: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    """IR task -> the message its failing pod logs."""


def _lookup(table: Mapping[str, Any], ir_path: str) -> Any:
    if ir_path in table:
        return table[ir_path]
    return table.get(ir_path.rsplit("/", 1)[-1])


def fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def node_id(workflow: str, name: str) -> str:
    """Workflow.NodeID."""
    return workflow if name == workflow else f"{workflow}-{fnv32a(name)}"


def pod_name(workflow: str, node_name: str, template: str) -> str:
    """workflow/util GeneratePodName (POD_NAMES=v2)."""
    if node_name == workflow:
        return workflow
    prefix = f"{workflow}-{template}" if template else workflow
    return f"{prefix[:POD_NAME_PREFIX_MAX]}-{fnv32a(node_name)}"


@dataclass(frozen=True)
class ArgoNode:
    """A node of the workflow's status, as Argo reports it."""

    id: str
    name: str
    display_name: str
    type: NodeType
    template_name: str
    phase: Phase
    boundary_id: str
    children: tuple[str, ...]
    started_at: datetime
    finished_at: datetime | None
    message: str
    role: PodRole | None
    """For pods: what the pod does."""


@dataclass
class _Node:
    id: str
    name: str
    display_name: str
    type: NodeType
    template_name: str
    phase: Phase
    boundary_id: str
    started_at: datetime
    finished_at: datetime | None = None
    message: str = ""
    children: list[str] = field(default_factory=list)
    outbound: list[str] = field(default_factory=list)
    template: Template | None = None
    """The template this node executes (Pod, DAG and Retry nodes)."""
    scope: Scope | None = None
    """DAG nodes: the scope of their tasks."""
    expansions: int = 0
    """TaskGroup nodes: how many items."""

    def snapshot(self) -> ArgoNode:
        role = (
            self.template.pod if self.template is not None and self.type is NodeType.POD else None
        )
        return ArgoNode(
            id=self.id,
            name=self.name,
            display_name=self.display_name,
            type=self.type,
            template_name=self.template_name,
            phase=self.phase,
            boundary_id=self.boundary_id,
            children=tuple(self.children),
            started_at=self.started_at,
            finished_at=self.finished_at,
            message=self.message,
            role=role,
        )


PodDone = Callable[[ArgoNode, Scope, str], None]
"""Called when a pod ends on its own (not killed): (node, its scope, failure message or "")."""


class WorkflowPhase(StrEnum):
    UNSTARTED = ""
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"


class Workflow:
    """One run's Argo workflow. Not thread-safe: the server holds its lock around it."""

    def __init__(
        self,
        *,
        name: str,
        entrypoint: Template,
        scope: Scope,
        controls: RunControls,
        clock: Callable[[], datetime],
        retry_wrappers: bool = False,
        on_pod_done: PodDone | None = None,
    ) -> None:
        self.name = name
        self.phase = WorkflowPhase.UNSTARTED
        self.terminating = False
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self._entrypoint = entrypoint
        self._scope = scope
        self._controls = controls
        self._clock = clock
        self._retry_wrappers = retry_wrappers
        self._on_pod_done = on_pod_done
        self._nodes: dict[str, _Node] = {}
        self._scopes: dict[str, Scope] = {}
        """Pod node id -> the scope it runs in."""

    @property
    def finished(self) -> bool:
        return self.phase in (WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED, WorkflowPhase.ERROR)

    def nodes(self) -> list[ArgoNode]:
        return [node.snapshot() for node in self._nodes.values()]

    def terminate(self) -> None:
        if not self.finished:
            self.terminating = True

    def step(self) -> bool:
        """One node transition; False when the workflow has ended."""
        if self.finished:
            return False
        now = self._clock()
        if self.phase is WorkflowPhase.UNSTARTED:
            self.started_at = now
            if self.terminating:
                # activeDeadlineSeconds 0 before the controller ran it: no node ever starts.
                self._end(WorkflowPhase.FAILED, now)
                return True
            self.phase = WorkflowPhase.RUNNING
            self._execute(self.name, self._entrypoint, None, self._scope, now)
            return True
        for action in (self._next_creation(), self._next_pod(), self._next_completion()):
            if action is not None:
                action(now)
                return True
        # Every running node can always move on; reaching this is a bug of the stand-in.
        stuck = [f"{n.name} ({n.type}, {n.phase})" for n in self._nodes.values()]
        raise RuntimeError(f"the KFP stand-in's workflow {self.name} is stuck: {stuck}")

    # Node creation.

    def _display_name(self, name: str, boundary: _Node | None) -> str:
        if boundary is None:
            return name
        return _DISPLAY_SEPARATOR.sub("", name.removeprefix(boundary.name), count=1)

    def _init(
        self,
        name: str,
        node_type: NodeType,
        template_name: str,
        phase: Phase,
        boundary: _Node | None,
        now: datetime,
        **extra: Any,
    ) -> _Node:
        node = _Node(
            id=node_id(self.name, name),
            name=name,
            display_name=self._display_name(name, boundary),
            type=node_type,
            template_name=template_name,
            phase=phase,
            boundary_id=boundary.id if boundary is not None else "",
            started_at=now,
            **extra,
        )
        if phase.fulfilled:
            node.finished_at = now
        self._nodes[node.id] = node
        return node

    def _execute(
        self, name: str, template: Template, boundary: _Node | None, scope: Scope, now: datetime
    ) -> _Node:
        """operator.go executeTemplate: the node of one template run, Retry-wrapped when
        the template has a retryStrategy."""
        wrapped = self._retry_wrappers or (template.pod is not None and template.retry)
        if wrapped:
            retry = self._init(
                name, NodeType.RETRY, template.name, Phase.RUNNING, boundary, now, template=template
            )
            name = f"{name}(0)"
        if template.pod is not None:
            node = self._init(
                name, NodeType.POD, template.name, Phase.PENDING, boundary, now, template=template
            )
            self._scopes[node.id] = scope
        else:
            node = self._init(
                name,
                NodeType.DAG,
                template.name,
                Phase.RUNNING,
                boundary,
                now,
                template=template,
                scope=scope,
            )
        if wrapped:
            retry.children.append(node.id)
            return retry
        return node

    def _by_name(self, name: str) -> _Node | None:
        return self._nodes.get(node_id(self.name, name))

    def _running_dags(self) -> list[_Node]:
        return [
            n
            for n in self._nodes.values()
            if n.type is NodeType.DAG and n.phase is Phase.RUNNING and n.template is not None
        ]

    def _next_creation(self) -> Callable[[datetime], None] | None:
        if self.terminating:
            return None
        for dag in self._running_dags():
            assert dag.template is not None
            for task in dag.template.tasks:
                existing = self._by_name(f"{dag.name}.{task.name}")
                if existing is not None:
                    if (
                        existing.type is NodeType.TASK_GROUP
                        and existing.phase is Phase.RUNNING
                        and len(existing.children) < existing.expansions
                    ):
                        return _bind(self._create_expansion, dag, existing, task)
                    continue
                depends = [self._by_name(f"{dag.name}.{d}") for d in task.depends]
                if all(d is not None and d.phase.fulfilled for d in depends):
                    return _bind(self._create_task, dag, task, cast(list[_Node], depends))
        return None

    def _connect(self, dag: _Node, node: _Node, depends: Sequence[_Node]) -> None:
        """dag.go connectDependencies."""
        if not depends:
            _add_child(dag, node.id)
            return
        for dependency in depends:
            for outbound in self._outbound(dependency):
                _add_child(self._nodes[outbound], node.id)

    def _create_task(self, dag: _Node, task: DagTask, depends: list[_Node], now: datetime) -> None:
        name = f"{dag.name}.{task.name}"
        scope = dag.scope or self._scope
        if any(d.phase is not Phase.SUCCEEDED for d in depends):
            node = self._init(
                name, NodeType.SKIPPED, task.template.name, Phase.OMITTED, dag, now,
                message=OMITTED_MESSAGE,
            )  # fmt: skip
        elif task.loop is not None:
            count = self._iterations(task.loop, scope)
            if count == 0:
                node = self._init(
                    name, NodeType.SKIPPED, task.template.name, Phase.SKIPPED, dag, now,
                    message=EMPTY_SEQUENCE_MESSAGE,
                )  # fmt: skip
            else:
                node = self._init(
                    name, NodeType.TASK_GROUP, task.template.name, Phase.RUNNING, dag, now,
                    expansions=count,
                )  # fmt: skip
        elif task.when is not None and not self._condition(task.when, scope):
            node = self._skipped(name, task, dag, now)
        else:
            inner = _enter(task.enters, scope) if task.enters is not None else scope
            node = self._execute(name, task.template, dag, inner, now)
        self._connect(dag, node, depends)

    def _skipped(self, name: str, task: DagTask, dag: _Node, now: datetime) -> _Node:
        # The when clause after Argo substituted the driver's condition output.
        return self._init(
            name, NodeType.SKIPPED, task.template.name, Phase.SKIPPED, dag, now,
            message=f"when '{FALSE_CONDITION}' evaluated false",
        )  # fmt: skip

    def _create_expansion(self, dag: _Node, group: _Node, task: DagTask, now: datetime) -> None:
        index = len(group.children)
        name = f"{dag.name}.{task.name}({index}:{index})"
        scope = replace(dag.scope or self._scope, iteration=index)
        if task.when is not None and not self._condition(task.when, scope):
            node = self._skipped(name, task, dag, now)
        else:
            node = self._execute(name, task.template, dag, scope, now)
        _add_child(group, node.id)

    def _condition(self, ir: IrTask, scope: Scope) -> bool:
        decided = _lookup(self._controls.conditions, ir.path)
        if decided is not None:
            return bool(decided)
        text = str(ir.spec.get("triggerPolicy", {}).get("condition", ""))
        evaluated = evaluate_condition(text, _inputs(ir, scope))
        return True if evaluated is None else evaluated

    def _iterations(self, ir: IrTask, scope: Scope) -> int:
        decided = _lookup(self._controls.iterations, ir.path)
        if decided is not None:
            return int(decided)
        items = _loop_items(ir, scope)
        return DEFAULT_ITERATIONS if items is None else len(items)

    # Pods.

    def _next_pod(self) -> Callable[[datetime], None] | None:
        for node in self._nodes.values():
            if node.type is NodeType.POD and not node.phase.fulfilled:
                return _bind(self._advance_pod, node)
        return None

    def _advance_pod(self, node: _Node, now: datetime) -> None:
        if self.terminating:
            message = (
                DEADLINE_PENDING_MESSAGE
                if node.phase is Phase.PENDING
                else DEADLINE_RUNNING_MESSAGE
            )
            self._finish_node(node, Phase.FAILED, now, message)
            return
        if node.phase is Phase.PENDING:
            node.phase = Phase.RUNNING
            return
        role = node.template.pod if node.template is not None else None
        failure = None
        if role is not None and role.failure_point:
            failure = _lookup(self._controls.failures, role.ir_path)
        if failure is not None:
            self._finish_node(node, Phase.FAILED, now, DEFAULT_FAILURE_MESSAGE)
        else:
            self._finish_node(node, Phase.SUCCEEDED, now, "")
        if self._on_pod_done is not None:
            self._on_pod_done(node.snapshot(), self._scopes[node.id], failure or "")

    def _finish_node(self, node: _Node, phase: Phase, now: datetime, message: str) -> None:
        node.phase = phase
        node.finished_at = now
        node.message = message

    # Completion.

    def _next_completion(self) -> Callable[[datetime], None] | None:
        for node in reversed(self._nodes.values()):
            if node.phase is not Phase.RUNNING:
                continue
            phase = self._completed_phase(node)
            if phase is not None:
                return _bind(self._complete, node, phase)
        return None

    def _completed_phase(self, node: _Node) -> Phase | None:
        if node.type is NodeType.RETRY:
            last = self._nodes[node.children[-1]]
            return last.phase if last.phase.fulfilled else None
        if node.type is NodeType.TASK_GROUP:
            children = [self._nodes[c] for c in node.children]
            if not all(c.phase.fulfilled for c in children):
                return None
            if len(children) < node.expansions and not self.terminating:
                return None
            failed = [c.phase for c in children if c.phase.failed]
            if len(children) < node.expansions:
                return Phase.FAILED
            return failed[-1] if failed else Phase.SUCCEEDED
        if node.type is NodeType.DAG and node.template is not None:
            tasks = [self._by_name(f"{node.name}.{t.name}") for t in node.template.tasks]
            present = [t for t in tasks if t is not None]
            if not all(t.phase.fulfilled for t in present):
                return None
            missing = len(present) < len(tasks)
            if missing and not self.terminating:
                return None
            failed = [t.phase for t in present if t.phase.failed]
            if failed:
                return failed[0]
            return Phase.FAILED if missing else Phase.SUCCEEDED
        return None

    def _complete(self, node: _Node, phase: Phase, now: datetime) -> None:
        if node.type is NodeType.DAG and node.template is not None:
            depended = {d for t in node.template.tasks for d in t.depends}
            targets = [t.name for t in node.template.tasks if t.name not in depended]
            outbound: list[str] = []
            for target in targets:
                target_node = self._by_name(f"{node.name}.{target}")
                if target_node is not None:
                    outbound.extend(self._outbound(target_node))
            node.outbound = outbound
        message = ""
        if node.type is NodeType.RETRY:
            message = self._nodes[node.children[-1]].message
        self._finish_node(node, phase, now, message)
        if node.name == self.name:
            self._end(_WORKFLOW_PHASES[phase], now)

    def _outbound(self, node: _Node) -> list[str]:
        """operator.go getOutboundNodes."""
        if node.type in (NodeType.POD, NodeType.SKIPPED):
            return [node.id]
        if node.type is NodeType.TASK_GROUP:
            if not node.children:
                return [node.id]
            return [o for child in node.children for o in self._outbound(self._nodes[child])]
        if node.type is NodeType.RETRY and node.children:
            return [node.children[-1]]
        return [o for out in node.outbound for o in self._outbound(self._nodes[out])]

    def _end(self, phase: WorkflowPhase, now: datetime) -> None:
        self.phase = phase
        self.finished_at = now


_WORKFLOW_PHASES = {
    Phase.SUCCEEDED: WorkflowPhase.SUCCEEDED,
    Phase.SKIPPED: WorkflowPhase.SUCCEEDED,
    Phase.FAILED: WorkflowPhase.FAILED,
    Phase.ERROR: WorkflowPhase.ERROR,
    Phase.OMITTED: WorkflowPhase.FAILED,
}


def _add_child(parent: _Node, child_id: str) -> None:
    # operator.go addChildNode: each child once.
    if child_id not in parent.children:
        parent.children.append(child_id)


def _bind(function: Callable[..., None], *args: Any) -> Callable[[datetime], None]:
    def action(now: datetime) -> None:
        function(*args, now)

    return action
