"""DeleteRun over gRPC and retention: finished runs only, NOT_FOUND when absent, roles,
what goes with a run (events, request_id, the backend's logs and artifacts), watchers,
and the background sweep of old finished runs (one replica at a time on PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import run_pb2
from skit_pipelines import auth
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import ErrorInfo, Pipeline, Run, RunState
from skit_pipelines.errors import NotFound, Unavailable
from skit_pipelines.retention import RETENTION_TASK, RetentionSweeper
from skit_pipelines.runs import RunController
from skit_pipelines.store.base import RunQuery
from skit_pipelines.store.postgres import PostgresRunStore
from skit_pipelines.store.sqlite import SqliteRunStore

pytest_plugins = ["skit_testing.postgres"]

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=7)
ROLES = ("viewer", "runner", "admin")
EVERY_RUN = RunQuery(page_size=100)


def create_request(run_id: str, request_id: str = "") -> pb.CreateRunRequest:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"})
    return pb.CreateRunRequest(
        run=run_pb2.Run(pipeline="pipelines/typed", parameters=parameters),
        run_id=run_id,
        request_id=request_id,
    )


def failure() -> ErrorInfo:
    return ErrorInfo(code=2, message="boom", reason="STEP_FAILED")


async def error_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    status = rpc_status.from_call(caught.value)
    info = error_details_pb2.ErrorInfo()
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
    return caught.value.code(), info.reason


async def finished_run(service, run_id: str, metadata=(), request_id: str = "") -> str:
    run = await service.stub.CreateRun(create_request(run_id, request_id), metadata=metadata)
    await service.backend.sinks[run_id].run_failed(run_id, failure())
    return run.name


async def test_a_finished_run_is_deleted_with_its_events_and_request_id(service) -> None:
    name = await finished_run(service, "done", request_id="req-1")
    kept = await finished_run(service, "kept")

    assert await service.stub.DeleteRun(pb.DeleteRunRequest(name=name)) == empty_pb2.Empty()

    assert await error_of(service.stub.GetRun(pb.GetRunRequest(name=name))) == (
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
    )
    listed = await service.stub.ListRuns(pb.ListRunsRequest())
    assert [r.name for r in listed.runs] == [kept]
    with pytest.raises(NotFound):
        await service.store.revisions_after("done", 0)
    # Deleting again: it is gone.
    assert await error_of(service.stub.DeleteRun(pb.DeleteRunRequest(name=name))) == (
        grpc.StatusCode.NOT_FOUND,
        "RUN_NOT_FOUND",
    )
    # Its request_id and its id are free again: the same request makes a new run.
    again = await service.stub.CreateRun(create_request("done", "req-1"))
    assert again.revision == 1 and again.state == run_pb2.RUN_STATE_QUEUED


async def test_a_run_that_has_not_finished_is_not_deleted(service) -> None:
    run = await service.stub.CreateRun(create_request("busy"))
    await service.backend.sinks["busy"].run_started("busy")
    assert await error_of(service.stub.DeleteRun(pb.DeleteRunRequest(name=run.name))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_FINISHED",
    )
    service.backend.cancel_completes = False
    await service.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    code, _ = await error_of(service.stub.DeleteRun(pb.DeleteRunRequest(name=run.name)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, "CANCELLING has not finished"
    await service.backend.sinks["busy"].run_cancelled("busy")
    await service.stub.DeleteRun(pb.DeleteRunRequest(name=run.name))


async def test_a_bad_name_is_invalid(service) -> None:
    code, _ = await error_of(service.stub.DeleteRun(pb.DeleteRunRequest(name="pipelines/x")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_backend_deletes_first_and_a_failure_keeps_the_run(service) -> None:
    name = await finished_run(service, "done")
    deleted: list[str] = []

    async def failing(run: Run) -> None:
        raise Unavailable("the artifact store is away", reason="ARTIFACTS_UNAVAILABLE")

    service.backend.delete_run = failing
    assert await error_of(service.stub.DeleteRun(pb.DeleteRunRequest(name=name))) == (
        grpc.StatusCode.UNAVAILABLE,
        "ARTIFACTS_UNAVAILABLE",
    )
    assert (await service.stub.GetRun(pb.GetRunRequest(name=name))).name == name

    async def recording(run: Run) -> None:
        deleted.append(run.id)

    service.backend.delete_run = recording
    await service.stub.DeleteRun(pb.DeleteRunRequest(name=name))
    assert deleted == ["done"]


async def test_watchers_end_with_not_found_and_others_go_on(service) -> None:
    name = await finished_run(service, "done")
    other = await service.stub.CreateRun(create_request("other"))
    watching = service.stub.WatchRun(pb.WatchRunRequest(name=other.name))
    first = await watching.read()
    assert first.run.revision == 1

    await service.stub.DeleteRun(pb.DeleteRunRequest(name=name))

    gone = service.stub.WatchRun(pb.WatchRunRequest(name=name, after_revision=1))
    assert await error_of(gone.read()) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    await service.backend.sinks["other"].run_started("other")
    update = await watching.read()
    assert update.run.state == run_pb2.RUN_STATE_RUNNING
    watching.cancel()


class TestRoles:
    @pytest.fixture
    def tokens(self, tmp_path: Path) -> dict[str, str]:
        path = tmp_path / "tokens.json"
        issued = {role: auth.add_token(path, f"{role}-bot", role) for role in ROLES}
        issued["other-runner"] = auth.add_token(path, "other-bot", "runner")
        return issued

    @pytest.fixture
    def service_config(self, tmp_path: Path, tokens: dict[str, str]) -> ServerConfig:
        return ServerConfig(port=0, home=tmp_path, tokens_file=tmp_path / "tokens.json")

    async def test_admins_and_the_runner_who_created_it_may_delete(self, service, tokens) -> None:
        mine = await finished_run(service, "mine", bearer(tokens["runner"]))
        for caller, code in (
            ("viewer", grpc.StatusCode.PERMISSION_DENIED),
            ("other-runner", grpc.StatusCode.PERMISSION_DENIED),
        ):
            request = pb.DeleteRunRequest(name=mine)
            got, _ = await error_of(
                service.stub.DeleteRun(request, metadata=bearer(tokens[caller]))
            )
            assert got == code, caller
        await service.stub.DeleteRun(
            pb.DeleteRunRequest(name=mine), metadata=bearer(tokens["runner"])
        )
        theirs = await finished_run(service, "theirs", bearer(tokens["other-runner"]))
        await service.stub.DeleteRun(
            pb.DeleteRunRequest(name=theirs), metadata=bearer(tokens["admin"])
        )
        listed = await service.stub.ListRuns(pb.ListRunsRequest(), metadata=bearer(tokens["admin"]))
        assert list(listed.runs) == []


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# Retention


def stored_run(run_id: str, state: RunState, created_days_ago: float, ended_days_ago: float | None):
    created = NOW - timedelta(days=created_days_ago)
    ended = None if ended_days_ago is None else NOW - timedelta(days=ended_days_ago)
    return Run(
        id=run_id,
        pipeline="typed",
        pipeline_version="sha256:abc",
        parameters={},
        labels={},
        state=state,
        create_time=created,
        update_time=ended or created,
        end_time=ended,
        revision=1,
    )


RETENTION_CASES = (
    stored_run("old-succeeded", RunState.SUCCEEDED, 30, 29),
    stored_run("old-failed", RunState.FAILED, 10, 9),
    stored_run("old-cancelled", RunState.CANCELLED, 8, 8),
    stored_run("old-but-running", RunState.RUNNING, 30, None),
    stored_run("old-but-queued", RunState.QUEUED, 30, None),
    stored_run("ended-recently", RunState.SUCCEEDED, 30, 1),
    stored_run("recent", RunState.FAILED, 2, 2),
)
EXPIRED = {"old-succeeded", "old-failed", "old-cancelled"}


async def test_retention_deletes_old_finished_runs_only(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class
) -> None:
    store = SqliteRunStore(tmp_path / "runs.db")
    backend = fake_backend_class()
    deleted_files: list[str] = []

    async def delete_files(run: Run) -> None:
        deleted_files.append(run.id)

    backend.delete_run = delete_files
    controller = RunController(
        store, Catalog({typed_pipeline.id: typed_pipeline}), backend, clock=lambda: NOW
    )
    backend.start(controller)
    try:
        for run in RETENTION_CASES:
            await store.create_run(run)
        sweeper = RetentionSweeper(controller, store, RETENTION)
        assert await sweeper.sweep_once() == len(EXPIRED)
        assert sorted(deleted_files) == sorted(EXPIRED), "their logs and artifacts went too"
        remaining = {run.id for run in (await store.list_runs(EVERY_RUN)).runs}
        assert remaining == {run.id for run in RETENTION_CASES} - EXPIRED
        assert await sweeper.sweep_once() == 0
    finally:
        await store.close()


async def test_retention_pages_through_many_old_runs(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class
) -> None:
    store = SqliteRunStore(tmp_path / "runs.db")
    backend = fake_backend_class()
    controller = RunController(
        store, Catalog({typed_pipeline.id: typed_pipeline}), backend, clock=lambda: NOW
    )
    backend.start(controller)
    template = stored_run("x", RunState.SUCCEEDED, 30, 29)
    try:
        for index in range(1_005):
            await store.create_run(
                replace(
                    template,
                    id=f"run-{index:04d}",
                    create_time=template.create_time + timedelta(seconds=index),
                )
            )
        assert await controller.delete_expired_runs(RETENTION) == 1_005
        assert (await store.list_runs(EVERY_RUN)).runs == []
    finally:
        await store.close()


async def test_retention_sweeps_on_one_replica_at_a_time(
    postgres_dsn: str, typed_pipeline: Pipeline, fake_backend_class
) -> None:
    first = await PostgresRunStore.open(postgres_dsn)
    second = await PostgresRunStore.open(postgres_dsn)
    try:
        backend = fake_backend_class()
        controller = RunController(
            second, Catalog({typed_pipeline.id: typed_pipeline}), backend, clock=lambda: NOW
        )
        backend.start(controller)
        for run in RETENTION_CASES:
            await second.create_run(run)
        sweeper = RetentionSweeper(controller, second, RETENTION)
        async with first.exclusive(RETENTION_TASK) as held:
            assert held
            assert await sweeper.sweep_once() is None, "the other replica is sweeping"
        assert await sweeper.sweep_once() == len(EXPIRED)
        remaining = {run.id for run in (await first.list_runs(EVERY_RUN)).runs}
        assert remaining == {run.id for run in RETENTION_CASES} - EXPIRED
    finally:
        await first.close()
        await second.close()


def test_retention_is_configured_by_env_and_off_by_default() -> None:
    assert ServerConfig().retention_days is None
    assert ServerConfig.from_env({"SKIT_RETENTION_DAYS": "30"}).retention_days == 30.0
    assert ServerConfig.from_env({"SKIT_RETENTION_DAYS": "0.5"}).retention_days == 0.5
