"""KubeflowBackend against the KFP 2.17 stand-in (skit_testing.kfp: Argo-shaped task
details, CANCELING then FAILED on terminate, grpc-gateway error bodies), with PostgreSQL
for the run store and the leases. A "replica" is a store, a backend and a controller,
with the images lock it was deployed with. Tests that drive a run themselves start the
replica without its poll loop and run its rounds (`poll_once`) between the stand-in's
Argo node transitions (`advance`)."""

# No `from __future__ import annotations`: kfp reads the test pipeline's real types.

import json
import re
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2
from kfp import compiler, dsl
from kfp.client import client as kfp_sdk_client
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.backends.kubeflow import KubeflowBackend, KubeflowSettings, version_name
from skit_pipelines.backends.kubeflow_platform import parse_step_secrets
from skit_pipelines.catalog import Catalog, ir_version, pipeline_from_spec
from skit_pipelines.domain import Code, Pipeline, Run, RunState, StepState
from skit_pipelines.errors import FailedPrecondition
from skit_pipelines.imagelock import load_lock, pin_images
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.servicer import error_status
from skit_pipelines.store.postgres import PostgresRunStore
from skit_testing.kfp import KfpServer, LocalObjectStore, S3ObjectStore
from skit_testing.waiting import until

pytest_plugins = ["skit_testing.postgres"]

TOKEN = "s3cret-token"
UI = "https://kubeflow.example.com/pipeline"
REGISTRY = "registry.example.com/ml"
IMAGE = "skit-pipelines/echo:0.1.0"
ECHO = f"{REGISTRY}/{IMAGE}"
"""Where the released echo image (the test pipelines' only one) was pushed."""
DIGEST = "sha256:" + "1" * 64
REBUILT = "sha256:" + "2" * 64
MAX_ROUNDS = 400
"""Poll rounds a test run may take (the branchy pipeline needs about 40 of 3 nodes)."""
NODES_PER_ROUND = 3
WRAPPERS = pytest.mark.parametrize(
    "retry_wrappers", [False, True], ids=["plain-nodes", "retry-wrapped-nodes"]
)
"""KFP 2.17's default install wraps every Argo node in a Retry node; older ones do not."""


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


BRANCHY_STEPS = {
    # As the local executor names them (executor/_dag.py): "<group>/<task>", loop
    # iterations "<loop>[<i>]/<task>".
    "echo": "echo",
    "condition-1/echo-2": "echo-2",  # kfp names a component's second use comp-echo-2
    "for-loop-3[0]/count": "count",
    "for-loop-3[1]/count": "count",
    "for-loop-3[2]/count": "count",
}


@pytest.fixture(scope="module")
def branchy_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    path = tmp_path_factory.mktemp("branchy") / "branchy.yaml"
    compiler.Compiler().compile(branchy, str(path))
    return pipeline_from_spec(yaml.safe_load(path.read_text()))


def write_lock(path: Path, **releases: tuple[str, str]) -> Path:
    """An images lock as `skit-release release` writes it: folder -> (version, digest)."""
    path.write_text(
        json.dumps(
            {
                name: {
                    "version": version,
                    "image": f"{REGISTRY}/skit-pipelines/{name.replace('_', '-')}:{version}",
                    "digest": digest,
                }
                for name, (version, digest) in releases.items()
            }
        )
    )
    return path


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return write_lock(tmp_path / "images.lock.json", echo=("0.1.0", DIGEST))


def executor_images(spec: dict[str, Any]) -> set[str]:
    executors = spec["deploymentSpec"]["executors"]
    return {executor["container"]["image"] for executor in executors.values()}


@pytest.fixture
def objects(tmp_path: Path) -> LocalObjectStore:
    """Where the stand-in's launcher and Argo write outputs and logs (file:// URIs)."""
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def retry_wrappers() -> bool:
    return False


@pytest.fixture
def kfp(objects: LocalObjectStore, retry_wrappers: bool) -> Iterator[KfpServer]:
    with KfpServer(token=TOKEN, artifact_writer=objects, retry_wrappers=retry_wrappers) as server:
        yield server


@dataclass
class Replica:
    store: PostgresRunStore
    backend: KubeflowBackend
    controller: RunController


@pytest.fixture
async def replicas(
    postgres_dsn: str,
    kfp: KfpServer,
    typed_pipeline: Pipeline,
    branchy_pipeline: Pipeline,
    lock: Path,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Replica] = []

    async def make(
        owner: str,
        *,
        start: bool = True,
        lease_seconds: float = 30.0,
        cookie: str = "",
        images_lock: Path = lock,
        step_env: tuple[str, ...] = (),
        step_secrets: str = "",
        host: str = "",
        retry_seconds: float = 10.0,
        **settings: Any,
    ) -> Replica:
        store = await PostgresRunStore.open(postgres_dsn)
        catalog = Catalog(
            {typed_pipeline.id: typed_pipeline, branchy_pipeline.id: branchy_pipeline}
        )
        backend = KubeflowBackend(
            KubeflowSettings(
                host=host or kfp.url,
                ui_url=UI,
                token=TOKEN,
                cookie=cookie,
                pipeline_root=(tmp_path / "root").as_uri(),
                poll_seconds=0.05,
                lease_seconds=lease_seconds,
                retry_seconds=retry_seconds,
                step_secrets=parse_step_secrets(step_secrets),
                **settings,
            ),
            store,
            store.leases(owner, lease_seconds),
            catalog.get,
            images=load_lock(images_lock),
            env_of_image=lambda image: step_env,
        )
        controller = RunController(store, catalog, backend)
        # start=False: a replica whose rounds (poll_once) only the test runs.
        backend.start(controller, background=start)
        replica = Replica(store, backend, controller)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.backend.shutdown()
        await replica.store.close()


def create(pipeline: Pipeline, **parameters: object) -> CreateRunInput:
    if pipeline.id == "typed":
        parameters = {"greeting": "hi", **parameters}
    return CreateRunInput(pipeline=pipeline.name, parameters=parameters)


async def kfp_id_of(replica: Replica, run: Run) -> str:
    return (await replica.store.get_run(run.id)).backend_run_id


async def drive(kfp: KfpServer, replica: Replica, run: Run, nodes: int = NODES_PER_ROUND) -> Run:
    """Moves the KFP run by `nodes` Argo node transitions per poll round of the replica
    until our run has ended; returns it."""
    kfp_id = await kfp_id_of(replica, run)
    for _ in range(MAX_ROUNDS):
        kfp.advance(kfp_id, nodes)
        await replica.backend.poll_once()
        stored = await replica.store.get_run(run.id)
        if stored.state.terminal:
            return stored
    raise AssertionError(f"{run.name} did not end in {MAX_ROUNDS} rounds")


async def state_is(store: PostgresRunStore, run_id: str, state: RunState) -> bool:
    return (await store.get_run(run_id)).state is state


def failed_posts(kfp: KfpServer) -> list[Any]:
    return [r for r in kfp.calls("POST") if r.status >= 400]


# Submitting


async def test_submit_uploads_each_ir_once_and_creates_a_typed_run(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline, lock: Path
) -> None:
    a = await replicas("a")
    first = await a.controller.create_run(
        create(typed_pipeline, count=7, ratio=0.25, flag=True, items=[3, 4], options={"k": "v"})
    )
    second = await a.controller.create_run(create(typed_pipeline))
    fresh = await replicas("b")  # another replica: nothing cached in memory
    third = await fresh.controller.create_run(create(typed_pipeline))

    assert failed_posts(kfp) == []
    assert len(kfp.calls("POST", "/pipelines")) == 1
    assert len(kfp.calls("POST", "/pipelines/upload_version")) == 1
    [version] = kfp.versions()
    # Uploaded with its image pinned by the lock's digest, named after that IR's hash.
    uploaded = yaml.safe_load(kfp.package(version.pipeline_version_id))
    assert executor_images(uploaded) == {f"{ECHO}@{DIGEST}"}
    assert executor_images(typed_pipeline.spec) == {IMAGE}
    assert uploaded == pin_images(typed_pipeline.spec, load_lock(lock))
    assert version.display_name == "sha256-" + ir_version(uploaded).removeprefix("sha256:")[:32]
    assert version.display_name != version_name(typed_pipeline)
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in kfp.calls())

    remote = {r.display_name: r for r in kfp.runs()}
    assert sorted(remote) == sorted(r.id for r in (first, second, third))
    parameters = remote[first.id].runtime_config.parameters
    assert parameters == {
        "greeting": "hi",
        "count": 7,
        "ratio": 0.25,
        "flag": True,
        "items": [3, 4],
        "options": {"k": "v"},
    }
    assert remote[first.id].pipeline_version_reference.pipeline_version_id == (
        version.pipeline_version_id
    )
    stored = await a.store.get_run(first.id)
    kfp_id = remote[first.id].run_id
    assert (stored.backend, stored.backend_run_id) == ("kubeflow", kfp_id)
    assert stored.backend_run_url == f"{UI}/#/runs/details/{kfp_id}"


def task_caching(spec: dict[str, Any]) -> dict[tuple[str, str], bool]:
    """Every task's cachingOptions.enableCache, by (DAG, task): the root's and those of
    the conditions' and loops' DAGs (whose own tasks kfp compiles without caching)."""
    dags = {"root": spec["root"]["dag"]}
    dags.update((name, c["dag"]) for name, c in spec["components"].items() if "dag" in c)
    return {
        (dag_name, task_name): task.get("cachingOptions", {}).get("enableCache", False)
        for dag_name, dag in dags.items()
        for task_name, task in dag["tasks"].items()
    }


async def test_a_run_with_the_cache_off_uploads_its_ir_with_every_tasks_caching_off(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline, lock: Path
) -> None:
    a = await replicas("a")
    cached = await a.controller.create_run(create(branchy_pipeline))
    uncached = await a.controller.create_run(replace(create(branchy_pipeline), disable_cache=True))
    again = await a.controller.create_run(replace(create(branchy_pipeline), disable_cache=True))

    assert failed_posts(kfp) == []
    remote = {r.display_name: r for r in kfp.runs()}
    version_of = {
        run.id: remote[run.id].pipeline_version_reference.pipeline_version_id
        for run in (cached, uncached, again)
    }
    # A version of its own, uploaded once for every run with the cache off.
    assert version_of[uncached.id] == version_of[again.id] != version_of[cached.id]
    assert len(kfp.calls("POST", "/pipelines/upload_version")) == 2
    pinned = pin_images(branchy_pipeline.spec, load_lock(lock))
    assert yaml.safe_load(kfp.package(version_of[cached.id])) == pinned
    uploaded = yaml.safe_load(kfp.package(version_of[uncached.id]))
    on = task_caching(pinned)
    assert on[("root", "echo")] and on[("comp-condition-1", "echo-2")]
    assert task_caching(uploaded) == dict.fromkeys(on, False)
    assert task_caching(kfp.pipeline_spec(version_of[uncached.id])) == dict.fromkeys(on, False)
    # The root's tasks as the KFP SDK's create_run(..., enable_caching=False) submits them.
    sdk = json_format.ParseDict(pinned, pipeline_spec_pb2.PipelineSpec())
    kfp_sdk_client._override_caching_options(sdk, False)
    ours = json_format.ParseDict(uploaded, pipeline_spec_pb2.PipelineSpec())
    assert dict(ours.root.dag.tasks) == dict(sdk.root.dag.tasks)
    # Nothing but the caching options changed.
    for spec in (uploaded, pinned):
        for component in [spec["root"], *spec["components"].values()]:
            for task in component.get("dag", {}).get("tasks", {}).values():
                task.pop("cachingOptions", None)
    assert uploaded == pinned
    stored = await a.store.get_run(uncached.id)
    assert stored.disable_cache and not (await a.store.get_run(cached.id)).disable_cache
    assert remote[uncached.id].runtime_config.parameters == (
        remote[cached.id].runtime_config.parameters
    )


# Progress


@WRAPPERS
async def test_a_condition_and_a_loop_end_succeeded_with_the_irs_steps_and_outputs(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline, tmp_path: Path
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(branchy_pipeline))
    transitions: set[tuple[str, StepState]] = set()
    run_states: list[RunState] = []

    async def record() -> None:
        stored = await a.store.get_run(run.id)
        transitions.update((s.name, s.state) for s in stored.steps)
        if not run_states or run_states[-1] is not stored.state:
            run_states.append(stored.state)

    kfp_id = await kfp_id_of(a, run)
    await record()
    for _ in range(MAX_ROUNDS):
        kfp.advance(kfp_id, NODES_PER_ROUND)
        await a.backend.poll_once()
        await record()
        if run_states[-1].terminal:
            break
    done = await a.store.get_run(run.id)
    assert done.state is RunState.SUCCEEDED, done.error
    assert run_states == [RunState.QUEUED, RunState.RUNNING, RunState.SUCCEEDED]
    # Exactly the IR's container tasks, named, typed and imaged as on the local backend.
    assert {s.name: s.component for s in done.steps} == BRANCHY_STEPS
    assert {s.image for s in done.steps} == {IMAGE}
    assert {s.state for s in done.steps} == {StepState.SUCCEEDED}
    assert all(s.start_time and s.end_time and s.attempt == 1 for s in done.steps)
    # One revision per change: created, assigned, started, each step's states (outputs
    # come with SUCCEEDED), ended; none for polls that changed nothing.
    assert done.revision <= len(transitions) + len(run_states) + 1, (done.revision, transitions)
    # Outputs: where KFP's launcher wrote them, under the pipeline root.
    root = (tmp_path / "root").as_uri()
    outputs = {a.step: a for a in done.outputs}
    assert set(outputs) == {"echo", "condition-1/echo-2"}
    for artifact in outputs.values():
        assert artifact.uri.startswith(f"{root}/branchy/{kfp_id}/")
        assert artifact.uri.endswith("/out") and artifact.size_bytes
        assert Path(artifact.uri.removeprefix("file://")).read_text().startswith("placeholder")
    steps = {s.name: s for s in done.steps}
    assert [x.uri for x in steps["echo"].output_artifacts] == [outputs["echo"].uri]
    assert a.backend.active_runs() == 0


async def test_a_false_condition_skips_its_steps(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(branchy_pipeline, loud=False))
    done = await drive(kfp, a, run)
    assert done.state is RunState.SUCCEEDED
    states = {s.name: s.state for s in done.steps}
    assert states.pop("condition-1/echo-2") is StepState.SKIPPED
    assert set(states.values()) == {StepState.SUCCEEDED} and len(states) == 4


async def test_polls_that_change_nothing_store_no_revision(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(branchy_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.advance(kfp_id, 40)
    await a.backend.poll_once()
    settled = (await a.store.get_run(run.id)).revision
    for _ in range(10):
        await a.backend.poll_once()
    assert (await a.store.get_run(run.id)).revision == settled


@WRAPPERS
async def test_a_failed_kfp_run_fails_naming_the_failed_step(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    kfp.fail_task("echo", "exit status 3")
    run = await a.controller.create_run(create(branchy_pipeline))
    failed = await drive(kfp, a, run)

    assert failed.state is RunState.FAILED and failed.error is not None
    assert failed.error.reason == "KFP_RUN_FAILED"
    assert "failed: echo;" in failed.error.message
    # A step failure, coded as the local executor codes one: never UNKNOWN.
    assert failed.error.code == Code.ABORTED
    steps = {s.name: s for s in failed.steps}
    assert steps["echo"].state is StepState.FAILED
    assert steps["echo"].error is not None and steps["echo"].error.message == "echo failed"
    assert steps["echo"].error.code == Code.ABORTED
    # Argo runs the independent branches on; nothing is left unfinished.
    assert all(s.state.terminal for s in failed.steps)


# Cancelling


@WRAPPERS
async def test_cancel_run_terminates_the_kfp_run_and_ends_cancelled(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    b = await replicas("b", start=False)
    run = await a.controller.create_run(create(branchy_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.advance(kfp_id, 20)
    await a.backend.poll_once()

    # Through the other replica: it terminates the KFP run; the lease holder follows it.
    cancelling = await b.controller.cancel_run(run.name)
    assert cancelling.state is RunState.CANCELLING
    assert len(kfp.calls("POST", f"/runs/{kfp_id}:terminate")) == 1
    done = await drive(kfp, a, run)

    assert done.state is RunState.CANCELLED and done.error is None
    # As on the real server: CANCELING, then Argo fails the workflow.
    assert kfp.run(kfp_id).state == "FAILED"
    assert [h.state for h in kfp.run(kfp_id).state_history][-2:] == ["CANCELING", "FAILED"]
    assert all(s.state.terminal for s in done.steps)
    assert StepState.CANCELLED in {s.state for s in done.steps}
    # A second terminate (the run is CANCELING or over) answers 400: never an error here.
    assert all(r.status in (200, 400) for r in kfp.calls("POST", f"/runs/{kfp_id}:terminate"))


@WRAPPERS
async def test_a_run_terminated_in_the_kfp_ui_ends_cancelled(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(branchy_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.advance(kfp_id, 20)
    await a.backend.poll_once()

    kfp_client(kfp).runs.run_service_terminate_run(kfp_id)  # as the KFP UI does
    await a.backend.poll_once()
    assert await state_is(a.store, run.id, RunState.CANCELLING)
    done = await drive(kfp, a, run)
    assert done.state is RunState.CANCELLED


async def test_a_run_terminated_and_ended_between_two_polls_ends_cancelled(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(branchy_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.advance(kfp_id, 20)
    await a.backend.poll_once()

    kfp_client(kfp).runs.run_service_terminate_run(kfp_id)
    assert kfp.finish(kfp_id) == "FAILED"
    await a.backend.poll_once()
    assert await state_is(a.store, run.id, RunState.CANCELLED)


@pytest.mark.parametrize("outcome", ["SUCCEEDED", "FAILED"])
async def test_cancelling_a_run_that_has_just_ended_is_no_error(
    replicas: Any, kfp: KfpServer, branchy_pipeline: Pipeline, outcome: str
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(branchy_pipeline))
    kfp_id = await kfp_id_of(a, run)
    await a.backend.poll_once()
    ended = kfp.finish(kfp_id, fail_task="count" if outcome == "FAILED" else None)
    assert ended == outcome

    cancelling = await a.controller.cancel_run(run.name)  # before our poller saw the end
    assert cancelling.state is RunState.CANCELLING
    [terminate] = kfp.calls("POST", f"/runs/{kfp_id}:terminate")
    assert terminate.status == 400  # "Failed to terminate a run <id>. Row not found"
    await a.backend.poll_once()
    done = await a.store.get_run(run.id)
    assert done.state is RunState[outcome]


async def test_a_run_left_cancelling_is_terminated_on_kfp_before_it_ends(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    """The replica that stored CANCELLING died before terminating the KFP run: the
    replica resuming it terminates it, and the run is CANCELLED only once KFP has
    stopped it."""
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.advance(kfp_id, 6)
    await a.store.update_run(run.id, lambda r: replace(r, state=RunState.CANCELLING))
    await a.store.leases("a", 30.0).release(run.id)  # a is gone
    b = await replicas("b", start=False)

    await b.controller.resume()
    await b.backend.poll_once()
    assert kfp.calls("POST", f"/runs/{kfp_id}:terminate")
    assert await state_is(b.store, run.id, RunState.CANCELLING)  # KFP is CANCELING
    done = await drive(kfp, b, run)
    assert done.state is RunState.CANCELLED
    assert kfp.run(kfp_id).state == "FAILED"


# Faults and replicas


async def test_transient_kfp_errors_are_retried_and_never_duplicate_a_run(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    kfp.fail_next("POST", "/pipelines/upload_version", status=503, times=2)
    # The create goes through but its answer is lost: the retry must find it.
    kfp.fail_next("POST", "/runs", status=502, times=1, after=True)
    kfp.fail_next("GET", "/runs/.+", status=503, times=3)
    run = await a.controller.create_run(create(typed_pipeline))
    stored = await a.store.get_run(run.id)
    assert stored.state is RunState.QUEUED and stored.backend_run_id
    assert [r.display_name for r in kfp.runs()] == [run.id]
    assert len(kfp.calls("POST", "/runs")) == 1
    done = await drive(kfp, a, run)
    assert done.state is RunState.SUCCEEDED


async def test_one_poller_per_run_and_takeover_when_it_dies(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    # Replica A is driven by hand (its rounds are our calls), so it can "die" at once.
    a = await replicas("a", start=False, lease_seconds=1.0, cookie="replica=a")
    b = await replicas("b", lease_seconds=1.0, cookie="replica=b")
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = await kfp_id_of(a, run)
    # B resumes every unfinished run at start-up, like any replica: the lease stops it.
    await b.controller.resume()
    assert b.backend.tracked_runs() == [] and a.backend.tracked_runs() == [run.id]

    def polls(replica: str) -> int:
        return sum(
            r.headers.get("cookie") == f"replica={replica}"
            for r in kfp.calls("GET", f"/runs/{kfp_id}")
        )

    kfp.advance(kfp_id, 6)
    for _ in range(5):
        await a.backend.poll_once()
    assert polls("a") == 5 and polls("b") == 0
    assert await state_is(a.store, run.id, RunState.RUNNING)

    # A stops renewing its lease: B takes over.
    await until(lambda: polls("b") > 0, timeout=5, what="takeover")
    assert b.backend.tracked_runs() == [run.id]
    kfp.finish(kfp_id)
    await until(lambda: state_is(b.store, run.id, RunState.SUCCEEDED), what="the end")
    assert polls("a") == 5


async def test_a_poll_retrying_a_failing_kfp_keeps_its_lease(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline, postgres_dsn: str
) -> None:
    # A's polls retry a burst of 503s for longer than a lease: it is alive, so it keeps
    # renewing its lease; B, idle beside it, never takes the run over.
    a = await replicas("a", lease_seconds=1.0, retry_seconds=30.0, cookie="replica=a")
    b = await replicas("b", lease_seconds=1.0, cookie="replica=b")
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.fail_next("GET", f"/runs/{kfp_id}", status=503, times=1_000)

    def lease() -> tuple[str, float]:
        with psycopg.connect(postgres_dsn) as conn:
            row = conn.execute(
                "SELECT owner, extract(epoch FROM expires_at - now()) FROM run_leases"
                " WHERE run_id = %s",
                (run.id,),
            ).fetchone()
        assert row is not None
        return str(row[0]), float(row[1])

    # The invariant, looked at every 20 ms over three lease periods of failing polls:
    # the lease is A's and has not run out.
    fault_started = time.monotonic()
    looks: list[tuple[str, float]] = []

    def three_lease_periods_watched() -> bool:
        looks.append(lease())
        return time.monotonic() - fault_started > 3 * 1.0

    await until(three_lease_periods_watched, timeout=20, what="three lease periods")
    assert len(kfp.calls("GET", f"/runs/{kfp_id}")) >= 2, "A was retrying its poll"
    assert all(owner == "a" and left > 0 for owner, left in looks), looks
    assert b.backend.tracked_runs() == [] and a.backend.tracked_runs() == [run.id]
    assert not any(r.headers.get("cookie") == "replica=b" for r in kfp.calls("GET"))


async def test_shutdown_hands_runs_over_at_once(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", lease_seconds=30)
    b = await replicas("b", lease_seconds=30)
    run = await a.controller.create_run(create(typed_pipeline))
    await until(lambda: a.backend.tracked_runs() == [run.id])
    await a.backend.shutdown()
    await until(lambda: b.backend.tracked_runs() == [run.id], timeout=3)


async def test_a_kfp_run_that_disappeared_fails_the_run(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = await kfp_id_of(a, run)
    kfp.fail_next("GET", f"/runs/{kfp_id}", status=404)
    await a.backend.poll_once()
    failed = await a.store.get_run(run.id)
    assert failed.state is RunState.FAILED and failed.error is not None
    assert failed.error.reason == "KFP_RUN_NOT_FOUND"


# Images and secrets


async def test_a_released_image_with_a_new_digest_makes_a_new_pipeline_version(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline, tmp_path: Path, lock: Path
) -> None:
    before = await replicas("a")
    first = await before.controller.create_run(create(typed_pipeline))
    # echo 0.1.0 rebuilt and re-released (same version, another digest), then redeployed.
    rebuilt = write_lock(tmp_path / "rebuilt.lock.json", echo=("0.1.0", REBUILT))
    after = await replicas("b", images_lock=rebuilt)
    second = await after.controller.create_run(create(typed_pipeline))
    # A replica still on the old lock finds its version again instead of uploading.
    third = await (await replicas("c", images_lock=lock)).controller.create_run(
        create(typed_pipeline)
    )

    assert failed_posts(kfp) == []
    assert len(kfp.calls("POST", "/pipelines")) == 1
    old, new = sorted(kfp.versions(), key=lambda v: v.created_at)
    assert old.display_name != new.display_name
    assert executor_images(kfp.pipeline_spec(old.pipeline_version_id)) == {f"{ECHO}@{DIGEST}"}
    assert executor_images(kfp.pipeline_spec(new.pipeline_version_id)) == {f"{ECHO}@{REBUILT}"}
    used = {r.display_name: r.pipeline_version_reference.pipeline_version_id for r in kfp.runs()}
    assert used == {
        first.id: old.pipeline_version_id,
        second.id: new.pipeline_version_id,
        third.id: old.pipeline_version_id,
    }
    # Our runs record the catalog's version either way.
    assert {(await before.store.get_run(r.id)).pipeline_version for r in (first, second)} == {
        typed_pipeline.version
    }


@pytest.mark.parametrize(
    ("release", "why"),
    [
        ({}, r"never released \(no lock entry 'echo'\)"),
        ({"echo": ("0.0.9", DIGEST)}, r"wants 0\.1\.0 but the lock has echo 0\.0\.9"),
    ],
    ids=["never-released", "other-version"],
)
async def test_an_unreleased_image_refuses_the_run_before_anything_is_stored_or_uploaded(
    replicas: Any,
    kfp: KfpServer,
    typed_pipeline: Pipeline,
    tmp_path: Path,
    release: dict[str, tuple[str, str]],
    why: str,
) -> None:
    a = await replicas("a", images_lock=write_lock(tmp_path / "unreleased.json", **release))
    with pytest.raises(FailedPrecondition) as refused:
        await a.controller.create_run(create(typed_pipeline, count=1))

    error = refused.value
    assert error.reason == "IMAGES_NOT_RELEASED"
    assert "pipelines/typed cannot run on Kubeflow: images not released: echo." in error.message
    assert "`skit-release release echo`" in error.message
    assert re.search(why, error.message)
    status = error_status(error)
    info = error_details_pb2.ErrorInfo()
    assert status.code == code_pb2.FAILED_PRECONDITION and status.details[0].Unpack(info)
    assert info.reason == "IMAGES_NOT_RELEASED"
    # Nothing stored, nothing sent to KFP.
    assert await a.store.list_unfinished_runs() == []
    assert kfp.calls("POST") == []
    assert a.backend.tracked_runs() == []


async def test_a_resumed_run_with_an_unreleased_image_fails_with_the_reason(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline, tmp_path: Path
) -> None:
    # Stored by a replica whose lock had echo; this one's lock has nothing.
    a = await replicas("a", images_lock=write_lock(tmp_path / "empty.json"))
    queued = await _stored_run(a.store, typed_pipeline)

    await a.controller.resume()

    failed = await a.store.get_run(queued.id)
    assert failed.state is RunState.FAILED and failed.error is not None
    assert (failed.error.code, failed.error.reason) == (9, "IMAGES_NOT_RELEASED")
    assert "`skit-release release echo`" in failed.error.message
    assert kfp.calls("POST") == []
    assert a.backend.tracked_runs() == []


async def test_a_run_taken_over_by_a_replica_without_its_image_fails_with_the_reason(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline, tmp_path: Path
) -> None:
    # The replica that stored it died before creating the KFP run; the one that takes it
    # over was deployed with a lock that lacks echo.
    a = await replicas("a", lease_seconds=0.5, images_lock=write_lock(tmp_path / "empty.json"))
    queued = await _stored_run(a.store, typed_pipeline)
    assert await a.store.leases("dead", 0.5).acquire(queued.id)

    await until(lambda: state_is(a.store, queued.id, RunState.FAILED))
    failed = await a.store.get_run(queued.id)
    assert failed.error is not None and failed.error.reason == "IMAGES_NOT_RELEASED"
    assert kfp.calls("POST") == []
    await until(lambda: a.backend.tracked_runs() == [])


async def _stored_run(store: PostgresRunStore, pipeline: Pipeline) -> Run:
    """A QUEUED run as CreateRun stores it before submitting."""
    now = datetime.now(UTC)
    run = Run(
        id="typed-stored",
        pipeline=pipeline.id,
        pipeline_version=pipeline.version,
        parameters={"greeting": "hi"},
        labels={},
        state=RunState.QUEUED,
        create_time=now,
        update_time=now,
        revision=1,
        backend="kubeflow",
    )
    return (await store.create_run(run)).run


async def test_declared_env_reaches_steps_as_secret_references(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas(
        "a", step_env=("CALLS_DB_URL",), step_secrets="CALLS_DB_URL=skit-step-env/calls-db-url"
    )
    await a.controller.create_run(create(typed_pipeline))

    [version] = kfp.versions()
    platform = kfp.platform_spec(version.pipeline_version_id)
    assert platform is not None
    assert executor_images(kfp.pipeline_spec(version.pipeline_version_id)) == {f"{ECHO}@{DIGEST}"}
    [secret] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-echo"][
        "secretAsEnv"
    ]
    assert secret["secretName"] == "skit-step-env"
    assert secret["keyToEnv"] == [{"secretKey": "calls-db-url", "envVar": "CALLS_DB_URL"}]


async def test_declared_env_without_a_secret_refuses_the_run_before_anything_is_uploaded(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas(
        "a", step_env=("CALLS_DB_URL", "LLM_API_KEY"), step_secrets="CALLS_DB_URL=c/u"
    )
    with pytest.raises(FailedPrecondition) as refused:
        await a.controller.create_run(create(typed_pipeline))

    assert refused.value.reason == "STEP_SECRETS_NOT_MAPPED"
    assert "LLM_API_KEY" in refused.value.message
    assert error_status(refused.value).code == code_pb2.FAILED_PRECONDITION
    assert await a.store.list_unfinished_runs() == []
    assert kfp.calls("POST") == []


# Logs


@pytest.fixture
def archived_kfp(s3_client: Any, bucket: str, retry_wrappers: bool) -> Iterator[KfpServer]:
    """Argo archiving pod logs into S3 (moto) with KFP's key format."""
    from skit_testing.kfp import KFP_ARCHIVE_KEY_FORMAT

    with KfpServer(
        token=TOKEN,
        archive_logs=True,
        log_repository=f"s3://{bucket}",
        log_key_format=KFP_ARCHIVE_KEY_FORMAT,
        artifact_writer=lambda uri, data: (
            LocalObjectStore(Path("/")) if uri.startswith("file:") else S3ObjectStore(s3_client)
        )(uri, data),
        retry_wrappers=retry_wrappers,
    ) as server:
        yield server


@WRAPPERS
async def test_step_logs_are_read_where_argo_archives_them(
    replicas: Any,
    archived_kfp: KfpServer,
    branchy_pipeline: Pipeline,
    bucket: str,
    s3_endpoint: str,
) -> None:
    from skit_testing.kfp import KFP_ARCHIVE_KEY_FORMAT

    a = await replicas(
        "a",
        start=False,
        host=archived_kfp.url,
        logs_url=f"s3://{bucket}",
        logs_key_format=KFP_ARCHIVE_KEY_FORMAT,
        s3_endpoint_url=s3_endpoint,
    )
    archived_kfp.fail_task("for-loop-3/count", "count: no such file", run_id=None)
    run = await a.controller.create_run(create(branchy_pipeline))
    done = await drive(archived_kfp, a, run)
    assert done.state is RunState.FAILED

    def read(step: str) -> Any:
        return a.backend.read_logs(done, step, 0, lambda: False)

    echo_lines = [line.text async for line in read("echo")]
    assert echo_lines and "executor of echo" in echo_lines[0]
    failed_lines = [line.text async for line in read("for-loop-3[1]/count")]
    assert "count: no such file" in failed_lines


async def test_without_an_archive_logs_point_at_the_kfp_ui(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(typed_pipeline))
    done = await drive(kfp, a, run)
    with pytest.raises(FailedPrecondition) as unavailable:
        async for _ in a.backend.read_logs(done, "echo", 0, lambda: False):
            pass
    error = unavailable.value
    assert error.reason == "LOGS_UNAVAILABLE"
    assert done.backend_run_url in error.message
    status = error_status(error)
    info = error_details_pb2.ErrorInfo()
    assert status.code == code_pb2.FAILED_PRECONDITION and status.details[0].Unpack(info)
    assert info.metadata["ui_url"] == done.backend_run_url


# Bad answers


class _Garbage(BaseHTTPRequestHandler):
    """Answers every request with an HTML page, as a login proxy or a load balancer."""

    status = 200

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _any(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
        if self.status == 200:
            body = b"<!doctype html><html><body>Sign in to continue</body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any


@pytest.fixture(params=[200, 502], ids=["html-200", "html-502"])
def garbage(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Garbage,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def _submit_fails(replica: Replica, pipeline: Pipeline) -> Run:
    """CreateRun stores the run and its submit fails: the run ends FAILED at once, with
    one line saying why, and nothing goes on."""
    run = await replica.controller.create_run(create(pipeline))
    failed = await replica.store.get_run(run.id)
    assert failed.state is RunState.FAILED and failed.error is not None, failed.state
    assert "\n" not in failed.error.message
    assert failed.error.code != code_pb2.INTERNAL
    assert failed.backend_run_id == ""
    assert replica.backend.tracked_runs() == []
    return failed


async def test_a_kfp_answering_html_fails_the_run_with_one_clear_line(
    replicas: Any, typed_pipeline: Pipeline, garbage: str
) -> None:
    a = await replicas("a", start=False, host=garbage, retry_seconds=0.3)
    failed = await _submit_fails(a, typed_pipeline)
    assert failed.error is not None
    assert failed.error.code == code_pb2.UNAVAILABLE
    assert f"Kubeflow Pipelines at {garbage} is unavailable" in failed.error.message
    # A 200 page fails at the first answer lacking what every KFP answer has; a 502 page
    # is quoted, on one line.
    assert re.search(
        r"not from the KFP API|HTTP 502 Bad Gateway: 502 Bad Gateway nginx$", failed.error.message
    )


async def test_an_unreachable_kfp_fails_the_run_as_unavailable(
    replicas: Any, typed_pipeline: Pipeline
) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Garbage) as closed:
        unreachable = f"http://127.0.0.1:{closed.server_address[1]}"
    a = await replicas("a", start=False, host=unreachable, retry_seconds=0.3)
    failed = await _submit_fails(a, typed_pipeline)
    assert failed.error is not None and failed.error.code == code_pb2.UNAVAILABLE
    assert "Connection refused" in failed.error.message


async def test_a_run_kfp_refuses_to_create_fails_quoting_kfp(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    """KFP answers 500 (INTERNAL) for an unknown version, a mismatched pipeline or an
    invalid spec (resource_manager.go CreateRun): retried as transient, then the run
    fails quoting KFP's message, and no KFP run exists."""
    a = await replicas("a", start=False, retry_seconds=0.3)
    kfp.fail_next("POST", "/runs", status=500, times=1000)
    failed = await _submit_fails(a, typed_pipeline)
    assert failed.error is not None and failed.error.code == code_pb2.UNAVAILABLE
    assert "HTTP 500 Internal Server Error: injected failure (HTTP 500)" in failed.error.message
    assert kfp.runs() == []


async def test_a_refused_call_quotes_the_grpc_gateway_message(
    replicas: Any, kfp: KfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    kfp.fail_next("POST", "/runs", status=403, times=1)
    failed = await _submit_fails(a, typed_pipeline)
    assert failed.error is not None and failed.error.code == code_pb2.FAILED_PRECONDITION
    assert f"Kubeflow Pipelines at {kfp.url} refused create_run: HTTP 403" in failed.error.message
    assert failed.error.message.endswith("injected failure (HTTP 403)")


def kfp_client(kfp: KfpServer) -> Any:
    import kfp as sdk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return sdk.Client(host=kfp.url, existing_token=TOKEN)
