"""KubeflowBackend against a local KFP v2beta1 API server whose bodies go through the
kfp-server-api models (skit_testing.kubeflow_fake), with PostgreSQL for the
run store and the leases. A "replica" is a store, a backend and a controller, with the
images lock it was deployed with."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.rpc import code_pb2, error_details_pb2

from skit_pipelines.backends.kubeflow import KubeflowBackend, KubeflowSettings, version_name
from skit_pipelines.backends.kubeflow_platform import parse_step_secrets
from skit_pipelines.catalog import Catalog, ir_version
from skit_pipelines.domain import Pipeline, Run, RunState, StepState
from skit_pipelines.errors import FailedPrecondition
from skit_pipelines.imagelock import load_lock, pin_images
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.servicer import error_status
from skit_pipelines.store.postgres import PostgresRunStore
from skit_testing.kubeflow_fake import FakeKfpServer

pytest_plugins = ["skit_testing.postgres"]

TOKEN = "s3cret-token"
UI = "https://kubeflow.example.com/pipeline"
REGISTRY = "registry.example.com/ml"
ECHO = f"{REGISTRY}/skit-pipelines/echo:0.1.0"
"""Where the released echo image (the typed pipeline's only one) was pushed."""


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


DIGEST = "sha256:" + "1" * 64
REBUILT = "sha256:" + "2" * 64


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    """The typed pipeline's image, released."""
    return write_lock(tmp_path / "images.lock.json", echo=("0.1.0", DIGEST))


def executor_images(spec: dict[str, Any]) -> set[str]:
    executors = spec["deploymentSpec"]["executors"]
    return {executor["container"]["image"] for executor in executors.values()}


@pytest.fixture
def fake() -> Iterator[FakeKfpServer]:
    server = FakeKfpServer(token=TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Replica:
    store: PostgresRunStore
    backend: KubeflowBackend
    controller: RunController


@pytest.fixture
async def replicas(
    postgres_dsn: str, fake: FakeKfpServer, typed_pipeline: Pipeline, lock: Path
) -> AsyncIterator[Callable[..., object]]:
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
    ) -> Replica:
        store = await PostgresRunStore.open(postgres_dsn)
        catalog = Catalog({typed_pipeline.id: typed_pipeline})
        settings = KubeflowSettings(
            host=fake.url,
            ui_url=UI,
            token=TOKEN,
            cookie=cookie,
            poll_seconds=0.05,
            lease_seconds=lease_seconds,
            retry_seconds=10,
            step_secrets=parse_step_secrets(step_secrets),
        )
        backend = KubeflowBackend(
            settings,
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


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await _call(check):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _call(check: Callable[[], object]) -> object:
    result = check()
    return await result if asyncio.iscoroutine(result) else result


def create(pipeline: Pipeline, **parameters: object) -> CreateRunInput:
    return CreateRunInput(pipeline=pipeline.name, parameters={"greeting": "hi", **parameters})


async def test_submit_uploads_each_ir_once_and_creates_a_typed_run(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline, lock: Path
) -> None:
    a = await replicas("a")
    first = await a.controller.create_run(
        create(typed_pipeline, count=7, ratio=0.25, flag=True, items=[3, 4], options={"k": "v"})
    )
    second = await a.controller.create_run(create(typed_pipeline))
    fresh = await replicas("b")  # another replica: nothing cached in memory
    third = await fresh.controller.create_run(create(typed_pipeline))

    assert fake.rejected == []
    assert len(fake.calls("POST", "/pipelines")) == 1
    assert len(fake.calls("POST", "/pipelines/upload_version")) == 1
    [version] = fake.versions()
    # Uploaded with its image pinned by the lock's digest, named after that IR's hash.
    uploaded = yaml.safe_load(fake.package(version.pipeline_version_id))
    assert executor_images(uploaded) == {f"{ECHO}@{DIGEST}"}
    assert executor_images(typed_pipeline.spec) == {"skit-pipelines/echo:0.1.0"}
    assert uploaded == pin_images(typed_pipeline.spec, load_lock(lock))
    assert version.display_name == "sha256-" + ir_version(uploaded).removeprefix("sha256:")[:32]
    assert version.display_name != version_name(typed_pipeline)
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)

    remote = {r.display_name: r for r in fake.runs()}
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
    assert isinstance(parameters["count"], int) and isinstance(parameters["flag"], bool)
    assert remote[first.id].pipeline_version_reference.pipeline_version_id == (
        version.pipeline_version_id
    )
    stored = await a.store.get_run(first.id)
    kfp_id = remote[first.id].run_id
    assert (stored.backend, stored.backend_run_id) == ("kubeflow", kfp_id)
    assert stored.backend_run_url == f"{UI}/#/runs/details/{kfp_id}"


async def test_task_details_become_steps_and_states_become_ours(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a")
    run = await a.controller.create_run(create(typed_pipeline))
    stored = await a.store.get_run(run.id)
    states: list[RunState] = []

    async def follow() -> None:
        async for revision in a.store.watch(run.id):
            states.append(revision.state)

    watch = asyncio.create_task(follow())
    await until(lambda: states)

    fake.set_state(stored.backend_run_id, "RUNNING", {"echo": "RUNNING"})
    await until(lambda: _has_step(a.store, run.id, "echo", StepState.RUNNING))
    fake.set_state(stored.backend_run_id, "SUCCEEDED", {"echo": "SUCCEEDED"})
    await asyncio.wait_for(watch, 10)

    assert states[0] is RunState.QUEUED and states[-1] is RunState.SUCCEEDED
    assert RunState.RUNNING in states
    done = await a.store.get_run(run.id)
    [step] = done.steps
    assert (step.name, step.component, step.image) == ("echo", "echo", "skit-pipelines/echo:0.1.0")
    assert step.state is StepState.SUCCEEDED and step.start_time and step.end_time
    assert done.start_time and done.end_time
    # Untracked just after the final state is stored.
    await until(lambda: a.backend.active_runs() == 0)


async def test_a_failed_kfp_run_fails_with_its_reason(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a")
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = (await a.store.get_run(run.id)).backend_run_id
    fake.set_state(kfp_id, "FAILED", {"echo": "FAILED"}, error="echo: exit status 3")
    await until(lambda: _state_is(a.store, run.id, RunState.FAILED))
    failed = await a.store.get_run(run.id)
    assert failed.error is not None
    assert (failed.error.reason, failed.error.message) == ("KFP_RUN_FAILED", "echo: exit status 3")
    assert failed.steps[0].state is StepState.FAILED
    assert failed.steps[0].error is not None and failed.steps[0].error.message == "echo failed"


async def test_cancel_terminates_the_kfp_run(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a")
    b = await replicas("b")
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = (await a.store.get_run(run.id)).backend_run_id
    fake.set_state(kfp_id, "RUNNING", {"echo": "RUNNING"})
    # Cancelled through the other replica: it terminates the KFP run, the lease holder
    # sees CANCELING and then CANCELED.
    cancelling = await b.controller.cancel_run(run.name)
    assert cancelling.state is RunState.CANCELLING
    # Sent by B at once; the lease holder repeats it while KFP still reports RUNNING.
    assert fake.calls("POST", f"/runs/{kfp_id}:terminate")
    await until(lambda: _state_is(a.store, run.id, RunState.CANCELLED))
    assert fake.run(kfp_id).state == "CANCELED"


async def test_a_run_left_cancelling_is_terminated_on_kfp_before_it_ends(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    """The replica that stored CANCELLING died before terminating the KFP run: the
    replica resuming it terminates it, and the run is CANCELLED only once KFP says so."""
    a = await replicas("a", start=False)
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = (await a.store.get_run(run.id)).backend_run_id
    fake.set_state(kfp_id, "RUNNING", {"echo": "RUNNING"})
    await a.store.update_run(run.id, lambda r: replace(r, state=RunState.CANCELLING))
    await a.store.leases("a", 30.0).release(run.id)  # a is gone
    b = await replicas("b")

    await b.controller.resume()

    await until(lambda: _state_is(b.store, run.id, RunState.CANCELLED))
    assert fake.calls("POST", f"/runs/{kfp_id}:terminate")
    assert fake.run(kfp_id).state == "CANCELED"


async def test_transient_kfp_errors_are_retried_and_never_duplicate_a_run(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a")
    fake.fail_next("POST", "/pipelines/upload_version", 2, status=503)
    # The create goes through but its response is lost: the retry must find it.
    fake.fail_next("POST", "/runs", 1, status=502, after=True)
    fake.fail_next("GET", "/runs/.+", 3, status=500)
    run = await a.controller.create_run(create(typed_pipeline))
    stored = await a.store.get_run(run.id)
    assert stored.state is RunState.QUEUED and stored.backend_run_id
    assert [r.display_name for r in fake.runs()] == [run.id]
    assert len(fake.calls("POST", "/runs")) == 1
    fake.set_state(stored.backend_run_id, "SUCCEEDED", {"echo": "SUCCEEDED"})
    await until(lambda: _state_is(a.store, run.id, RunState.SUCCEEDED))


async def test_one_poller_per_run_and_takeover_when_it_dies(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    # Replica A is driven by hand (its rounds are our calls), so it can "die" at once.
    a = await replicas("a", start=False, lease_seconds=1.0, cookie="replica=a")
    b = await replicas("b", lease_seconds=1.0, cookie="replica=b")
    run = await a.controller.create_run(create(typed_pipeline))
    stored = await a.store.get_run(run.id)
    # B resumes every unfinished run at start-up, like any replica: the lease stops it.
    await b.controller.resume()
    assert b.backend.tracked_runs() == [] and a.backend.tracked_runs() == [run.id]

    def polls(replica: str) -> int:
        return sum(
            r.headers.get("cookie") == f"replica={replica}"
            for r in fake.calls("GET", f"/runs/{stored.backend_run_id}")
        )

    fake.set_state(stored.backend_run_id, "RUNNING", {"echo": "RUNNING"})
    for _ in range(5):
        await a.backend.poll_once()
        await asyncio.sleep(0.1)
    assert polls("a") == 5 and polls("b") == 0
    assert (await a.store.get_run(run.id)).state is RunState.RUNNING

    died = time.monotonic()  # A stops renewing its lease
    await until(lambda: polls("b") > 0, timeout=5)
    takeover = time.monotonic() - died
    assert b.backend.tracked_runs() == [run.id]
    fake.set_state(stored.backend_run_id, "SUCCEEDED", {"echo": "SUCCEEDED"})
    await until(lambda: _state_is(b.store, run.id, RunState.SUCCEEDED))
    assert polls("a") == 5
    print(f"takeover after {takeover:.2f}s with a 1s lease")


async def test_shutdown_hands_runs_over_at_once(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", lease_seconds=30)
    b = await replicas("b", lease_seconds=30)
    run = await a.controller.create_run(create(typed_pipeline))
    await until(lambda: a.backend.tracked_runs() == [run.id])
    await a.backend.shutdown()
    await until(lambda: b.backend.tracked_runs() == [run.id], timeout=3)


async def test_a_kfp_run_that_disappeared_fails_the_run(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a")
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = (await a.store.get_run(run.id)).backend_run_id
    with fake._lock:
        del fake._state.runs[kfp_id]
    await until(lambda: _state_is(a.store, run.id, RunState.FAILED))
    assert (await a.store.get_run(run.id)).error.reason == "KFP_RUN_NOT_FOUND"


async def test_a_released_image_with_a_new_digest_makes_a_new_pipeline_version(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline, tmp_path: Path, lock: Path
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

    assert fake.rejected == []
    assert len(fake.calls("POST", "/pipelines")) == 1
    old, new = sorted(fake.versions(), key=lambda v: v.created_at)
    assert old.display_name != new.display_name
    assert executor_images(yaml.safe_load(fake.package(old.pipeline_version_id))) == {
        f"{ECHO}@{DIGEST}"
    }
    assert executor_images(yaml.safe_load(fake.package(new.pipeline_version_id))) == {
        f"{ECHO}@{REBUILT}"
    }
    used = {r.display_name: r.pipeline_version_reference.pipeline_version_id for r in fake.runs()}
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
    replicas,
    fake: FakeKfpServer,
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
    assert [r for r in fake.requests if r.method == "POST"] == []
    assert a.backend.tracked_runs() == []


async def test_a_resumed_run_with_an_unreleased_image_fails_with_the_reason(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline, tmp_path: Path
) -> None:
    # Stored by a replica whose lock had echo; this one's lock has nothing.
    a = await replicas("a", images_lock=write_lock(tmp_path / "empty.json"))
    queued = await _stored_run(a.store, typed_pipeline)

    await a.controller.resume()

    failed = await a.store.get_run(queued.id)
    assert failed.state is RunState.FAILED and failed.error is not None
    assert (failed.error.code, failed.error.reason) == (9, "IMAGES_NOT_RELEASED")
    assert "`skit-release release echo`" in failed.error.message
    assert [r for r in fake.requests if r.method == "POST"] == []
    assert a.backend.tracked_runs() == []


async def test_a_run_taken_over_by_a_replica_without_its_image_fails_with_the_reason(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline, tmp_path: Path
) -> None:
    # The replica that stored it died before creating the KFP run; the one that takes it
    # over was deployed with a lock that lacks echo.
    a = await replicas("a", lease_seconds=0.5, images_lock=write_lock(tmp_path / "empty.json"))
    queued = await _stored_run(a.store, typed_pipeline)
    assert await a.store.leases("dead", 0.5).acquire(queued.id)

    await until(lambda: _state_is(a.store, queued.id, RunState.FAILED))
    failed = await a.store.get_run(queued.id)
    assert failed.error is not None and failed.error.reason == "IMAGES_NOT_RELEASED"
    assert [r for r in fake.requests if r.method == "POST"] == []
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


async def _state_is(store: PostgresRunStore, run_id: str, state: RunState) -> bool:
    return (await store.get_run(run_id)).state is state


async def _has_step(store: PostgresRunStore, run_id: str, name: str, state: StepState) -> bool:
    run = await store.get_run(run_id)
    return any(s.name == name and s.state is state for s in run.steps)


async def test_declared_env_reaches_steps_as_secret_references(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas(
        "a", step_env=("CALLS_DB_URL",), step_secrets="CALLS_DB_URL=skit-step-env/calls-db-url"
    )
    await a.controller.create_run(create(typed_pipeline))

    [version] = fake.versions()
    spec, platform = yaml.safe_load_all(fake.package(version.pipeline_version_id))
    assert executor_images(spec) == {f"{ECHO}@{DIGEST}"}
    [secret] = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-echo"][
        "secretAsEnv"
    ]
    assert secret["secretName"] == "skit-step-env"
    assert secret["keyToEnv"] == [{"secretKey": "calls-db-url", "envVar": "CALLS_DB_URL"}]


async def test_declared_env_without_a_secret_refuses_the_run_before_anything_is_uploaded(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
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
    assert [r for r in fake.requests if r.method == "POST"] == []


async def test_polls_that_change_nothing_store_no_revision(
    replicas, fake: FakeKfpServer, typed_pipeline: Pipeline
) -> None:
    a = await replicas("a", start=False)
    a.backend.start(a.controller, background=False)
    run = await a.controller.create_run(create(typed_pipeline))
    kfp_id = (await a.store.get_run(run.id)).backend_run_id
    fake.set_state(kfp_id, "RUNNING", {"echo": "RUNNING"})
    await a.backend.poll_once()
    settled = (await a.store.get_run(run.id)).revision
    for _ in range(10):
        await a.backend.poll_once()
    assert (await a.store.get_run(run.id)).revision == settled
    fake.set_state(kfp_id, "SUCCEEDED", {"echo": "SUCCEEDED"})
    await a.backend.poll_once()
    done = await a.store.get_run(run.id)
    assert done.state is RunState.SUCCEEDED
    # created, assigned, started, step running, step done, succeeded: a handful at most.
    assert done.revision <= 8
