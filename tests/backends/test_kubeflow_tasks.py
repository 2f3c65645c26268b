"""KFP task details (one per Argo node, as a KFP 2.17 server lists them) back to the IR's
steps, named as the local executor names them: details from the KFP stand-in
(skit_testing.kfp, the Argo compiler's and controller's node layout), plus hand-built
details for what the stand-in does not simulate (cache hits, retried executors)."""

# No `from __future__ import annotations`: kfp reads the components' real types.

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from skit_pipelines.backends.kubeflow_tasks import (
    ArgoNode,
    IrShape,
    argo_node_id,
    map_steps,
    nodes_from_details,
)
from skit_pipelines.domain import StepState
from skit_testing.kfp import KfpServer

IMAGE = "skit-pipelines/echo:0.1.0"
WF = "branchy-x7k2p"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dsl.container_component
def echo(text: str, out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=["sh", "-c", "echo"], args=[text, out.path])


@dsl.container_component
def count(text: str, n: dsl.OutputPath(int)):
    return dsl.ContainerSpec(image=IMAGE, command=["sh", "-c", "echo"], args=[text, n])


@dsl.pipeline(name="branchy")
def branchy(greeting: str = "hi", loud: bool = True):
    echo(text=greeting)
    with dsl.If(loud == True):  # noqa: E712 - a KFP condition, not a Python comparison
        echo(text="LOUD")
    with dsl.ParallelFor(["a", "b", "c"]) as item:
        count(text=item)


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> IrShape:
    path = tmp_path_factory.mktemp("ir") / "branchy.yaml"
    compiler.Compiler().compile(branchy, str(path))
    return IrShape.of(yaml.safe_load(path.read_text()))


class Workflow:
    """Argo nodes as the KFP 2.17 Argo compiler lays them out (dag.go, container.go)."""

    def __init__(self, name: str = WF) -> None:
        self.name = name
        self.nodes: dict[str, tuple[str, str]] = {}  # full name -> (display, state)
        self.add(name, name, "RUNNING")

    def add(self, full: str, display: str, state: str) -> str:
        self.nodes[full] = (display, state)
        return full

    def dag(self, parent: str, key: str, state: str = "RUNNING") -> str:
        self.add(f"{parent}.{key}-driver", f"{key}-driver", "SUCCEEDED")
        return self.add(f"{parent}.{key}", key, state)

    def container(
        self, parent: str, key: str, state: str, executor: str | None = None, attempts: int = 0
    ) -> str:
        self.add(f"{parent}.{key}-driver", f"{key}-driver", "SUCCEEDED")
        node = self.add(f"{parent}.{key}", key, state)
        executor_node = self.add(f"{node}.executor", "executor", executor or state)
        for attempt in range(attempts):
            self.add(f"{executor_node}({attempt})", f"executor({attempt})", executor or state)
        return node

    def loop(self, parent: str, key: str, items: int) -> list[str]:
        node = self.add(f"{parent}.{key}", key, "RUNNING")
        self.add(f"{node}.iteration-driver", "iteration-driver", "SUCCEEDED")
        bodies = []
        for index in range(items):
            iteration = self.add(
                f"{node}.iteration-iterations({index}:{index})",
                f"iteration-iterations({index}:{index})",
                "RUNNING",
            )
            self.add(f"{iteration}.iteration-item-driver", "iteration-item-driver", "SUCCEEDED")
            bodies.append(self.add(f"{iteration}.iteration-item", "iteration-item", "RUNNING"))
        return bodies

    def root(self) -> str:
        self.add(f"{self.name}.root-driver", "root-driver", "SUCCEEDED")
        return self.add(f"{self.name}.root", "root", "RUNNING")

    def argo(self, shuffle: int | None = None) -> tuple[ArgoNode, ...]:
        """Task details: no parent, children by node id, task ids that do not follow
        the tree (random UUIDs on a real server)."""
        ids = {full: argo_node_id(self.name, full) for full in self.nodes}
        nodes = []
        for full, (display, state) in self.nodes.items():
            children = tuple(
                ids[other]
                for other in self.nodes
                if other != full
                and (
                    (other.startswith(full + ".") and "." not in other[len(full) + 1 :])
                    or (other.startswith(full + "(") and "." not in other[len(full) :])
                )
            )
            nodes.append(
                ArgoNode(
                    task_id=f"{abs(hash((full, 'salt'))):x}",
                    display_name=display,
                    state=state,
                    start_time=T0,
                    end_time=T0 if state in ("SUCCEEDED", "FAILED", "SKIPPED") else None,
                    children=children,
                )
            )
        if shuffle is not None:
            random.Random(shuffle).shuffle(nodes)
        return tuple(nodes)


def branchy_run(condition: str = "RUNNING", items: int = 3, state: str = "SUCCEEDED") -> Workflow:
    wf = Workflow()
    root = wf.root()
    wf.container(root, "echo", state)
    branch = wf.dag(root, "condition-1", condition)
    if condition != "SKIPPED":
        wf.container(branch, "echo-2", state)
    for body in wf.loop(root, "for-loop-3", items):
        wf.container(body, "count", state)
    return wf


def by_name(result: Any) -> dict[str, Any]:
    return {m.step.name: m.step for m in result.steps}


def test_a_false_condition_skips_its_steps(shape: IrShape) -> None:
    steps = by_name(map_steps(shape, branchy_run(condition="SKIPPED").argo()))
    assert steps["condition-1/echo-2"].state is StepState.SKIPPED


def test_steps_appear_as_their_dag_starts_and_end_with_the_run(shape: IrShape) -> None:
    wf = Workflow()
    wf.root()
    assert [(m.step.name, m.step.state) for m in map_steps(shape, wf.argo()).steps] == [
        ("echo", StepState.PENDING)
    ]
    cancelled = map_steps(shape, wf.argo(), ended_as=StepState.CANCELLED)
    assert [(m.step.name, m.step.state) for m in cancelled.steps] == [("echo", StepState.CANCELLED)]
    failed = by_name(map_steps(shape, wf.argo(), ended_as=StepState.SKIPPED))
    assert set(failed) == {"echo", "condition-1/echo-2", "for-loop-3/count"}
    assert {s.state for s in failed.values()} == {StepState.SKIPPED}
    # Nothing from Argo yet.
    assert map_steps(shape, ()).steps == ()


def test_a_terminated_step_is_cancelled_when_the_run_was(shape: IrShape) -> None:
    wf = Workflow()
    root = wf.root()
    wf.container(root, "echo", "FAILED")
    steps = by_name(map_steps(shape, wf.argo(), ended_as=StepState.CANCELLED))
    assert steps["echo"].state is StepState.CANCELLED


def test_a_cache_hit_is_cached(shape: IrShape) -> None:
    wf = Workflow()
    root = wf.root()
    wf.container(root, "echo", "SUCCEEDED", executor="SKIPPED")
    result = map_steps(shape, wf.argo())
    [echo] = [m for m in result.steps if m.step.name == "echo"]
    assert (echo.step.state, echo.step.cached) == (StepState.CACHED, True)
    assert result.pod_name(echo) == ""


def test_the_executor_pod_is_named_as_argo_names_it(shape: IrShape) -> None:
    wf = Workflow()
    root = wf.root()
    node = wf.container(root, "echo", "SUCCEEDED")
    result = map_steps(shape, wf.argo())
    [echo] = [m for m in result.steps if m.step.name == "echo"]
    digest = argo_node_id(WF, f"{node}.executor").rsplit("-", 1)[1]
    assert result.pod_name(echo) == f"{WF}-system-container-impl-{digest}"


def test_retried_executors_count_as_attempts(shape: IrShape) -> None:
    wf = Workflow()
    root = wf.root()
    node = wf.container(root, "echo", "SUCCEEDED", attempts=2)
    result = map_steps(shape, wf.argo())
    [echo] = [m for m in result.steps if m.step.name == "echo"]
    assert echo.step.attempt == 2
    assert echo.executor_node == argo_node_id(WF, f"{node}.executor(1)")


def test_details_from_the_kfp_client_models() -> None:
    import kfp_server_api as api

    detail = api.V2beta1PipelineTaskDetail(
        task_id="t1",
        display_name="echo",
        state="RUNNING",
        start_time=T0,
        end_time=datetime(1970, 1, 1, tzinfo=UTC),
        child_tasks=[api.PipelineTaskDetailChildTask(pod_name=f"{WF}-1")],
    )
    [node] = nodes_from_details([detail])
    assert node == ArgoNode("t1", "echo", "RUNNING", T0, None, (f"{WF}-1",))


def test_argo_node_ids_match_argo() -> None:
    # fnv-1a 32 of "wf.root", as Go's hash/fnv New32a gives it.
    assert argo_node_id("wf", "wf") == "wf"
    assert argo_node_id("wf", "wf.root") == "wf-" + str(_fnv1a(b"wf.root"))


def _fnv1a(data: bytes) -> int:
    value = 2166136261
    for byte in data:
        value = ((value ^ byte) * 16777619) % 2**32
    return value


def test_the_official_pipelines_map(tmp_path: Path) -> None:
    # Every official pipeline's IR gives a shape whose tasks are its container tasks.
    from skit_pipelines.catalog import compile_module

    root = Path(__file__).resolve().parents[2] / "pipelines"
    for module in sorted(root.glob("[!_]*.py")):
        spec = compile_module(module)
        tasks = IrShape.of(spec).tasks()
        assert tasks, module
        assert all(t.image for t in tasks.values()), module


# Against the stand-in's Argo nodes.


@pytest.fixture(scope="module")
def branchy_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ir") / "branchy.yaml"
    compiler.Compiler().compile(branchy, str(path))
    return path


class StandIn:
    """A run of branchy on the stand-in, read as GetRun answers it."""

    def __init__(self, server: KfpServer, package: Path) -> None:
        import warnings

        import kfp
        import kfp_server_api as api

        self.server = server
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=server.url)
        pipeline = client.upload_pipeline(str(package), pipeline_name=f"branchy-{id(self)}")
        versions = client.pipelines.pipeline_service_list_pipeline_versions(pipeline.pipeline_id)
        reference = api.V2beta1PipelineVersionReference(
            pipeline_id=pipeline.pipeline_id,
            pipeline_version_id=versions.pipeline_versions[0].pipeline_version_id,
        )
        self.run_id = client.runs.run_service_create_run(
            api.V2beta1Run(display_name="r", pipeline_version_reference=reference)
        ).run_id

    def nodes(self) -> tuple[ArgoNode, ...]:
        return nodes_from_details(self.server.run(self.run_id).run_details.task_details)


WRAPPERS = pytest.mark.parametrize("wrappers", [False, True], ids=["plain", "retry-wrapped"])


@pytest.fixture
def stand_in(wrappers: bool, branchy_yaml: Path) -> Iterator[StandIn]:
    with KfpServer(retry_wrappers=wrappers) as server:
        yield StandIn(server, branchy_yaml)


@WRAPPERS
def test_one_step_per_ir_task_named_as_locally(shape: IrShape, stand_in: StandIn) -> None:
    assert stand_in.server.finish(stand_in.run_id) == "SUCCEEDED"
    result = map_steps(shape, stand_in.nodes())

    steps = by_name(result)
    assert sorted(steps) == [
        "condition-1/echo-2",
        "echo",
        "for-loop-3[0]/count",
        "for-loop-3[1]/count",
        "for-loop-3[2]/count",
    ]
    assert {s.state for s in steps.values()} == {StepState.SUCCEEDED}
    assert (steps["echo"].component, steps["echo"].image) == ("echo", IMAGE)
    assert steps["for-loop-3[1]/count"].component == "count"
    assert all(s.start_time and s.end_time for s in steps.values())
    assert result.workflow == stand_in.server.workflow_name(stand_in.run_id)


@WRAPPERS
def test_every_step_maps_to_its_own_nodes_all_along(shape: IrShape, stand_in: StandIn) -> None:
    """At every Argo transition, each step is the state of its own node, and its pod is
    the one Argo named (the order of the details changes nothing)."""
    server, run_id = stand_in.server, stand_in.run_id
    phases = {"Running": StepState.RUNNING, "Succeeded": StepState.SUCCEEDED}
    while server.advance(run_id) == "RUNNING":
        nodes = stand_in.nodes()
        result = map_steps(shape, nodes)
        assert map_steps(shape, tuple(random.Random(7).sample(nodes, len(nodes)))) == result
        truth = {n.id: n for n in server.nodes(run_id)}
        for mapped in result.steps:
            if mapped.executor_node:
                pod = truth[mapped.executor_node]
                assert pod.role is not None and pod.role.kind == "executor"
                assert pod.role.ir_path.rsplit("/", 1)[-1] == mapped.task.key
                assert result.pod_name(mapped) == (
                    f"{result.workflow}-{pod.template_name}-{pod.id.rsplit('-', 1)[1]}"
                )
        by_node_name = {n.name: n for n in truth.values()}
        for mapped in result.steps:
            node = next(
                (
                    n
                    for name, n in by_node_name.items()
                    if re.search(_TASK_NODE[mapped.step.name], name)
                ),
                None,
            )
            if node is not None:
                assert mapped.step.state is phases[node.phase.value], mapped.step.name


_TASK_NODE = {
    # The Argo node of each step's IR task (Retry-wrapped or not).
    "echo": r"\.root(\(0\))?\.echo$",
    "condition-1/echo-2": r"\.condition-1(\(0\))?\.echo-2$",
    **{
        f"for-loop-3[{i}]/count": (
            rf"\.iteration-iterations\({i}:{i}\)(\(0\))?\.iteration-item(\(0\))?\.count$"
        )
        for i in range(3)
    },
}


@WRAPPERS
def test_a_false_condition_skips_its_steps_on_the_stand_in(
    shape: IrShape, stand_in: StandIn
) -> None:
    stand_in.server.set_condition("condition-1", False, run_id=stand_in.run_id)
    assert stand_in.server.finish(stand_in.run_id) == "SUCCEEDED"
    steps = by_name(map_steps(shape, stand_in.nodes()))
    assert steps["condition-1/echo-2"].state is StepState.SKIPPED
    assert steps["echo"].state is StepState.SUCCEEDED


@WRAPPERS
def test_a_failed_step_and_what_never_ran(shape: IrShape, stand_in: StandIn) -> None:
    assert stand_in.server.finish(stand_in.run_id, fail_task="echo") == "FAILED"
    steps = by_name(map_steps(shape, stand_in.nodes(), ended_as=StepState.SKIPPED))
    assert steps["echo"].state is StepState.FAILED
    assert all(s.state.terminal for s in steps.values())
