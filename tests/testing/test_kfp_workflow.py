"""The stand-in's Argo node graph, its progression, and where outputs and logs land."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from skit_testing.kfp import (
    KFP_ARCHIVE_KEY_FORMAT,
    KfpServer,
    LocalObjectStore,
    NodeType,
    Phase,
    S3ObjectStore,
)
from skit_testing.kfp.workflow import evaluate_condition, fnv32a, node_id, pod_name

Submit = Callable[..., str]
Http = Callable[..., Any]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _tasks(server: KfpServer, run_id: str) -> list[Any]:
    run = server.run(run_id)
    return list(run.run_details.task_details) if run.run_details else []


def _by_display(server: KfpServer, run_id: str) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for task in _tasks(server, run_id):
        grouped.setdefault(task.display_name, []).append(task)
    return grouped


def _node(server: KfpServer, run_id: str, name: str) -> Any:
    (node,) = [n for n in server.nodes(run_id) if n.name == name]
    return node


def test_fnv_node_ids_and_pod_names_follow_argo() -> None:
    assert fnv32a("") == 0x811C9DC5
    assert fnv32a("a") == 0xE40C292C
    assert node_id("wf-abcde", "wf-abcde") == "wf-abcde"
    assert node_id("wf-abcde", "wf-abcde.root") == f"wf-abcde-{fnv32a('wf-abcde.root')}"
    assert pod_name("wf", "wf.root.a.executor", "system-container-impl") == (
        f"wf-system-container-impl-{fnv32a('wf.root.a.executor')}"
    )
    long = pod_name("w" * 300, "node", "t")
    assert len(long) == 242 + 1 + len(str(fnv32a("node")))


def test_task_details_are_the_argo_nodes(server: KfpServer, submit: Submit) -> None:
    run_id = submit(server, "chain")
    assert server.finish(run_id) == "SUCCEEDED"
    workflow = server.workflow_name(run_id)
    assert re.fullmatch(r"chain-[bcdfghjklmnpqrstvwxz2456789]{5}", workflow)
    tasks = _tasks(server, run_id)
    assert Counter(t.display_name for t in tasks) == Counter(
        {
            workflow: 1,
            "root-driver": 1,
            "root": 1,
            "produce-driver": 1,
            "produce": 1,
            "consume-driver": 1,
            "consume": 1,
            "executor": 2,
        }
    )
    run = server.run(run_id)
    for task in tasks:
        assert task.state == "SUCCEEDED"
        assert task.parent_task_id is None and task.error is None
        assert task.run_id == run_id and re.fullmatch(UUID, task.task_id)
        assert task.create_time == run.created_at
        assert [s.state for s in task.state_history][-1] == "SUCCEEDED"
    assert [t.task_id for t in tasks] == sorted(t.task_id for t in tasks)

    # child_tasks hold the Argo *node IDs* of the children, under the pod_name key.
    def children(name: str) -> list[str]:
        return [c.pod_name for c in (_node_task(tasks, server, run_id, name).child_tasks or [])]

    def nid(name: str) -> str:
        return node_id(workflow, name)

    assert children(workflow) == [nid(f"{workflow}.root-driver")]
    assert children(f"{workflow}.root-driver") == [nid(f"{workflow}.root")]
    assert children(f"{workflow}.root") == [nid(f"{workflow}.root.produce-driver")]
    assert children(f"{workflow}.root.produce-driver") == [nid(f"{workflow}.root.produce")]
    assert children(f"{workflow}.root.produce") == [nid(f"{workflow}.root.produce.executor")]
    # A dependent hangs off its dependency's outbound node: the leaf executor pod.
    assert children(f"{workflow}.root.produce.executor") == [nid(f"{workflow}.root.consume-driver")]
    assert children(f"{workflow}.root.consume.executor") == []
    types = {n.name.rsplit(".", 1)[-1]: n.type for n in server.nodes(run_id)}
    assert types["executor"] is NodeType.POD and types["produce"] is NodeType.DAG


def _node_task(tasks: list[Any], server: KfpServer, run_id: str, name: str) -> Any:
    """The task detail of the node named `name` (matched through its children)."""
    node = _node(server, run_id, name)
    candidates = [t for t in tasks if t.display_name == node.display_name]
    for task in candidates:
        if [c.pod_name for c in (task.child_tasks or [])] == list(node.children):
            return task
    raise AssertionError(f"no task for {name}")


def test_running_tasks_report_go_zero_end_time(
    server: KfpServer, submit: Submit, http: Http
) -> None:
    run_id = submit(server, "chain")
    assert server.advance(run_id, 3) == "RUNNING"
    first = {t.task_id: t for t in _tasks(server, run_id)}
    raw = http(f"{server.url}/apis/v2beta1/runs/{run_id}").json()
    running = [t for t in raw["run_details"]["task_details"] if t.get("state") == "RUNNING"]
    assert running and all(t["end_time"] == "0001-01-01T00:00:00Z" for t in running)
    assert all("parent_task_id" not in t and "error" not in t for t in running)
    server.finish(run_id)
    again = {t.task_id: t for t in _tasks(server, run_id)}
    # Task ids stay: the store finds each task again by its pod name.
    assert set(first) <= set(again)
    (driver,) = [t for t in again.values() if t.display_name == "root-driver"]
    assert [s.state for s in driver.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]


def test_each_advance_is_one_node_transition(server: KfpServer, submit: Submit) -> None:
    run_id = submit(server, "chain")
    snapshots = []
    while server.run(run_id).state != "SUCCEEDED":
        server.advance(run_id)
        snapshots.append({n.id: n.phase for n in server.nodes(run_id)})
    for before, after in itertools.pairwise(snapshots):
        created = set(after) - set(before)
        changed = {i for i in before if before[i] != after[i]}
        assert len(created) + len(changed) <= 2  # a completion also ends the workflow
    # Start; per pod: created, Running, Succeeded (5 pods); per DAG: created, completed
    # (root, produce, consume; the workflow's completion ends it): 1 + 15 + 7.
    assert len(snapshots) == 23


def test_condition_from_parameters_skips_the_branch(server: KfpServer, submit: Submit) -> None:
    run_id = submit(server, "branches", {"flag": False})
    assert server.finish(run_id) == "SUCCEEDED"
    tasks = _by_display(server, run_id)
    (condition,) = tasks["condition-1"]
    assert condition.state == "SKIPPED"
    assert "consume" not in tasks and "consume-driver" not in tasks
    (node,) = [n for n in server.nodes(run_id) if n.display_name == "condition-1"]
    assert (node.type, node.message) == (NodeType.SKIPPED, "when 'false != false' evaluated false")


def test_set_condition_decides_what_the_driver_would(server: KfpServer, submit: Submit) -> None:
    run_id = submit(server, "branches", {"flag": True})
    server.set_condition("condition-1", False, run_id=run_id)
    server.finish(run_id)
    assert _by_display(server, run_id)["condition-1"][0].state == "SKIPPED"
    other = submit(server, "branches", {"flag": True})
    server.finish(other)
    tasks = _by_display(server, other)
    assert tasks["condition-1"][0].state == "SUCCEEDED"
    assert tasks["consume"][0].state == "SUCCEEDED"


def test_failure_omits_dependents_and_independent_tasks_go_on(
    server: KfpServer, submit: Submit
) -> None:
    run_id = submit(server, "branches")
    assert server.finish(run_id, fail_task="produce", message="OOMKilled") == "FAILED"
    tasks = _by_display(server, run_id)
    assert tasks["produce"][0].state == "FAILED"
    assert sorted(t.state for t in tasks["executor"]) == ["FAILED", "SUCCEEDED"]
    assert tasks["produce-2"][0].state == "SUCCEEDED"
    # Omitted nodes: RuntimeState.ToV2("Omitted") is unspecified, which protojson leaves out.
    assert tasks["condition-1-driver"][0].state is None
    assert tasks["condition-1"][0].state is None
    assert tasks["root"][0].state == "FAILED"
    run = server.run(run_id)
    assert run.error is None and all(t.error is None for t in run.run_details.task_details)
    omitted = [n for n in server.nodes(run_id) if n.phase is Phase.OMITTED]
    assert {n.message for n in omitted} == {"omitted: depends condition not met"}


def test_parallel_for_iterations(server: KfpServer, submit: Submit) -> None:
    run_id = submit(server, "loops")
    server.finish(run_id)
    groups = [n for n in server.nodes(run_id) if n.type is NodeType.TASK_GROUP]
    assert [g.display_name for g in groups] == ["iteration-iterations"] * 2
    # Raw items [1, 2, 3] and the parameter's default [1, 2, 3, 4].
    assert sorted(len(g.children) for g in groups) == [3, 4]
    names = Counter(t.display_name for t in _tasks(server, run_id))
    assert names["iteration-iterations(0:0)"] == 2
    assert names["iteration-iterations(3:3)"] == 1
    assert names["iteration-driver"] == 2
    assert names["iteration-item-driver"] == 7 and names["iteration-item"] == 7
    assert (names["square"], names["square-2"], names["executor"]) == (3, 4, 7)
    (loop,) = [n for n in server.nodes(run_id) if n.name.endswith(".root.for-loop-2")]
    assert loop.template_name == "comp-for-loop-2-for-loop-2-iterator"

    from_parameter = submit(server, "loops", {"xs": [5, 6]})
    server.set_iterations("for-loop-2", 1, run_id=from_parameter)
    server.finish(from_parameter)
    groups = [n for n in server.nodes(from_parameter) if n.type is NodeType.TASK_GROUP]
    assert sorted(len(g.children) for g in groups) == [1, 2]

    empty = submit(server, "loops", {"xs": []})
    server.finish(empty)
    (skipped,) = [n for n in server.nodes(empty) if n.message == "Skipped, empty params"]
    assert (skipped.type, skipped.display_name) == (NodeType.SKIPPED, "iteration-iterations")


def test_retry_wrappers_of_kfp_manifests(submit: Submit) -> None:
    with KfpServer(retry_wrappers=True) as server:
        run_id = submit(server, "chain")
        assert server.finish(run_id) == "SUCCEEDED"
        workflow = server.workflow_name(run_id)
        names = Counter(t.display_name for t in _tasks(server, run_id))
        for name in [workflow, "root-driver", "root", "produce-driver", "produce"]:
            assert names[name] == 1 and names[f"{name}(0)"] == 1
        assert names["executor"] == 2 and names["executor(0)"] == 2
        retry = _node(server, run_id, workflow)
        assert retry.type is NodeType.RETRY
        assert retry.children == (node_id(workflow, f"{workflow}(0)"),)


def test_terminate_stops_new_nodes_and_fails_pods(
    server: KfpServer, submit: Submit, http: Http
) -> None:
    run_id = submit(server, "chain")
    server.advance(run_id, 11)  # produce's executor pod is running
    running = [
        n for n in server.nodes(run_id) if n.phase is Phase.RUNNING and n.type is NodeType.POD
    ]
    assert [n.display_name for n in running] == ["executor"]
    assert http(f"{server.url}/apis/v2beta1/runs/{run_id}:terminate", "POST").status == 200
    server.advance(run_id)
    assert server.run(run_id).state == "CANCELING"
    assert server.finish(run_id) == "FAILED"
    executor = _node(server, run_id, running[0].name)
    assert executor.phase is Phase.FAILED
    assert executor.message == "Pod was active on the node longer than the specified deadline"
    assert not [n for n in server.nodes(run_id) if "consume" in n.name]
    assert all(n.phase.fulfilled for n in server.nodes(run_id))


def test_terminate_before_the_workflow_starts(
    server: KfpServer, submit: Submit, http: Http
) -> None:
    run_id = submit(server, "chain")
    assert http(f"{server.url}/apis/v2beta1/runs/{run_id}:terminate", "POST").status == 200
    assert server.run(run_id).state == "CANCELING"
    assert server.finish(run_id) == "FAILED"
    run = server.run(run_id)
    assert [s.state for s in run.state_history] == ["PENDING", "CANCELING", "FAILED"]
    assert run.run_details is None


def test_outputs_and_executor_logs_land_where_the_launcher_writes(
    tmp_path: Path, submit: Submit
) -> None:
    store = LocalObjectStore(tmp_path)
    with KfpServer(artifact_writer=store) as server:
        run_id = submit(server, "chain", pipeline_root="s3://bucket/root/?region=eu")
        server.finish(run_id)
        outputs = [w.uri for w in server.written("output")]
        logs = sorted(w.uri for w in server.written("executor-logs"))
        # <root>/<pipelineInfo.name>/<run id>/<task>/<uuid>/<output>, the query dropped.
        assert len(outputs) == 1
        assert re.fullmatch(rf"s3://bucket/root/chain/{run_id}/produce/{UUID}/out", outputs[0])
        assert [re.sub(UUID, "*", uri.replace(run_id, "RUN")) for uri in logs] == [
            "s3://bucket/root/chain/RUN/consume/*/executor-logs-0",
            "s3://bucket/root/chain/RUN/produce/*/executor-logs-0",
        ]
        assert store.path(outputs[0]).read_text().startswith("placeholder out of produce")
        assert (tmp_path / "bucket" / "root" / "chain" / run_id).is_dir()

        default_root = submit(server, "chain")
        server.finish(default_root)
        assert any(
            w.uri.startswith(f"minio://mlpipeline/v2/artifacts/chain/{default_root}/produce/")
            for w in server.written("output")
        )


def test_failed_executor_uploads_only_its_log(submit: Submit) -> None:
    with KfpServer() as server:
        run_id = submit(server, "chain")
        server.finish(run_id, fail_task="produce", message="OOMKilled")
        assert server.written("output") == []
        (log,) = server.written("executor-logs")
        assert "/produce/" in log.uri and b"OOMKilled" in log.data


def test_archived_main_logs_use_argo_pod_names(submit: Submit) -> None:
    with KfpServer(archive_logs=True) as server:
        run_id = submit(server, "chain")
        server.finish(run_id)
        workflow = server.workflow_name(run_id)
        pods = [n for n in server.nodes(run_id) if n.type is NodeType.POD]
        expected = {
            f"s3://mlpipeline/{workflow}/{pod_name(workflow, n.name, n.template_name)}/main.log"
            for n in pods
        }
        assert {w.uri for w in server.written("main-log")} == expected
        assert len(pods) == 5  # root-driver, two drivers, two executors
        executor = f"{workflow}-system-container-impl-{fnv32a(f'{workflow}.root.produce.executor')}"
        assert f"s3://mlpipeline/{workflow}/{executor}/main.log" in expected


def test_s3_writer_with_the_kfp_key_format() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="mlpipeline")
        s3.create_bucket(Bucket="artifacts")
        server = KfpServer(
            artifact_writer=S3ObjectStore(s3),
            archive_logs=True,
            log_key_format=KFP_ARCHIVE_KEY_FORMAT,
        )
        server.start()
        try:
            run_id = _submit_local(server, "s3://artifacts/root")
            server.finish(run_id)
            created = server.run(run_id).created_at
            workflow = server.workflow_name(run_id)
            logs = [o["Key"] for o in s3.list_objects_v2(Bucket="mlpipeline")["Contents"]]
            prefix = f"private-artifacts/kubeflow/{workflow}/{created:%Y/%m/%d}/{workflow}-"
            assert len(logs) == 5 and all(k.startswith(prefix) for k in logs)
            assert all(k.endswith("/main.log") for k in logs)
            outputs = [o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"]]
            assert sum(k.endswith("/out") for k in outputs) == 1
            assert all(k.startswith(f"root/chain/{run_id}/") for k in outputs)
        finally:
            server.stop()


def _submit_local(server: KfpServer, pipeline_root: str) -> str:
    """A run of a hand-written one-task IR (no kfp SDK compile), inline."""
    import kfp_server_api

    spec = yaml.safe_load(CHAIN_IR)
    client = kfp_server_api.RunServiceApi(
        kfp_server_api.ApiClient(kfp_server_api.Configuration(host=server.url))
    )
    run = client.run_service_create_run(
        kfp_server_api.V2beta1Run(
            display_name="inline",
            pipeline_spec=spec,
            runtime_config=kfp_server_api.V2beta1RuntimeConfig(pipeline_root=pipeline_root),
        )
    )
    return str(run.run_id)


CHAIN_IR = """
pipelineInfo: {name: chain}
schemaVersion: 2.1.0
components:
  comp-produce:
    executorLabel: exec-produce
    outputDefinitions:
      artifacts:
        out: {artifactType: {schemaTitle: system.Artifact, schemaVersion: 0.0.1}}
  comp-consume:
    executorLabel: exec-consume
    inputDefinitions:
      artifacts:
        data: {artifactType: {schemaTitle: system.Artifact, schemaVersion: 0.0.1}}
deploymentSpec:
  executors:
    exec-produce: {container: {image: alpine:3, command: [sh]}}
    exec-consume: {container: {image: alpine:3, command: [cat]}}
root:
  dag:
    tasks:
      produce:
        componentRef: {name: comp-produce}
        taskInfo: {name: produce}
      consume:
        componentRef: {name: comp-consume}
        dependentTasks: [produce]
        inputs:
          artifacts:
            data: {taskOutputArtifact: {producerTask: produce, outputArtifactKey: out}}
        taskInfo: {name: consume}
"""


def test_exit_handlers_are_refused_with_a_clear_error(server: KfpServer, http: Http) -> None:
    spec = yaml.safe_load(CHAIN_IR)
    spec["root"]["dag"]["tasks"]["consume"]["triggerPolicy"] = {
        "strategy": "ALL_UPSTREAM_TASKS_COMPLETED"
    }
    answer = http(
        server.url + "/apis/v2beta1/runs",
        "POST",
        {"display_name": "exit", "pipeline_spec": spec},
    )
    assert answer.status == 500
    assert "does not simulate Argo lifecycle hooks" in answer.json()["message"]


FLAG = "inputs.parameter_values['pipelinechannel--flag']"
X = "inputs.parameter_values['pipelinechannel--x']"
COIN = "inputs.parameter_values['c']"


@pytest.mark.parametrize(
    ("condition", "inputs", "expected"),
    [
        (f"{FLAG} == true", {"pipelinechannel--flag": True}, True),
        (f"int({X}) > 5", {"pipelinechannel--x": "7"}, True),
        (f"{COIN} == 'heads'", {"c": "tails"}, False),
        (f"!({COIN} == 'heads') && inputs.parameter_values['n'] >= 2", {"c": "x", "n": 2}, True),
        ("inputs.parameter_values['missing'] == 'heads'", {}, None),
        ("size(inputs.parameter_values['xs']) > 0", {"xs": [1]}, None),
    ],
)
def test_conditions_the_stand_in_can_decide(
    condition: str, inputs: dict[str, Any], expected: bool | None
) -> None:
    assert evaluate_condition(condition, inputs) is expected
