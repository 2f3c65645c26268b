"""Authentication and roles: every RPC x role x token state, run ownership, open health."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import run_pb2
from skit_pipelines import auth
from skit_pipelines.config import ServerConfig
from skit_pipelines.errors import InvalidArgument

ROLES = ("viewer", "runner", "admin")


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "tokens.json"
    issued = {role: auth.add_token(path, f"{role}-bot", role) for role in ROLES}
    issued["other-runner"] = auth.add_token(path, "other-bot", "runner")
    return issued


@pytest.fixture
def service_config(tmp_path: Path, tokens) -> ServerConfig:
    return ServerConfig(port=0, home=tmp_path, tokens_file=tmp_path / "tokens.json")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def create_request(run_id: str = "") -> pb.CreateRunRequest:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"})
    return pb.CreateRunRequest(
        run=run_pb2.Run(pipeline="pipelines/typed", parameters=parameters), run_id=run_id
    )


STREAMS = ("WatchRun", "WatchRuns", "ReadStepLogs")


async def call(stub, method: str, request, metadata) -> grpc.StatusCode:
    try:
        if method in STREAMS:
            stream = getattr(stub, method)(request, metadata=metadata, timeout=2)
            await stream.read()
            stream.cancel()
        else:
            await getattr(stub, method)(request, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def failed_run(service, token: str, run_id: str) -> str:
    run = await service.stub.CreateRun(create_request(run_id), metadata=bearer(token))
    await service.backend.sinks[run_id].run_failed(run_id, auth_error())
    return run.name


def auth_error():
    from skit_pipelines.domain import ErrorInfo

    return ErrorInfo(code=2, message="boom", reason="STEP_FAILED")


RPCS = {
    "ListPipelines": (lambda name: pb.ListPipelinesRequest(), "viewer"),
    "GetPipeline": (lambda name: pb.GetPipelineRequest(name="pipelines/typed"), "viewer"),
    "GetRun": (lambda name: pb.GetRunRequest(name=name), "viewer"),
    "ListRuns": (lambda name: pb.ListRunsRequest(), "viewer"),
    "WatchRun": (lambda name: pb.WatchRunRequest(name=name), "viewer"),
    "ReadStepLogs": (lambda name: pb.ReadStepLogsRequest(run=name, step="s"), "viewer"),
    "CreateRun": (lambda name: create_request(), "runner"),
    "CancelRun": (lambda name: pb.CancelRunRequest(name=name), "runner"),
    "RetryRun": (lambda name: pb.RetryRunRequest(name=name), "runner"),
    "DeleteRun": (lambda name: pb.DeleteRunRequest(name=name), "runner"),
    # A run stream from now opens with a heartbeat, so a permitted call reads one message.
    "WatchRuns": (lambda name: pb.WatchRunsRequest(), "viewer"),
    "GetSchedule": (lambda name: pb.GetScheduleRequest(name="schedules/none"), "viewer"),
    "ListSchedules": (lambda name: pb.ListSchedulesRequest(), "viewer"),
    "CreateSchedule": (lambda name: pb.CreateScheduleRequest(), "runner"),
    "UpdateSchedule": (lambda name: pb.UpdateScheduleRequest(), "runner"),
    "PauseSchedule": (lambda name: pb.PauseScheduleRequest(name="schedules/none"), "runner"),
    "ResumeSchedule": (lambda name: pb.ResumeScheduleRequest(name="schedules/none"), "runner"),
    "DeleteSchedule": (lambda name: pb.DeleteScheduleRequest(name="schedules/none"), "runner"),
    "BackfillSchedule": (lambda name: pb.BackfillScheduleRequest(name="schedules/none"), "runner"),
    "GetSubscription": (
        lambda name: pb.GetSubscriptionRequest(name="subscriptions/none"),
        "viewer",
    ),
    "ListSubscriptions": (lambda name: pb.ListSubscriptionsRequest(), "viewer"),
    "ListDeliveries": (
        lambda name: pb.ListDeliveriesRequest(parent="subscriptions/none"),
        "viewer",
    ),
    "CreateSubscription": (lambda name: pb.CreateSubscriptionRequest(), "runner"),
    "DeleteSubscription": (
        lambda name: pb.DeleteSubscriptionRequest(name="subscriptions/none"),
        "runner",
    ),
}
AUTH_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def test_the_role_table_covers_every_rpc() -> None:
    service = pb.DESCRIPTOR.services_by_name["PipelineService"]
    assert sorted(RPCS) == sorted(method.name for method in service.methods)


@pytest.mark.parametrize("method", sorted(RPCS))
@pytest.mark.parametrize("caller", ["none", "malformed", "wrong", *ROLES])
async def test_every_rpc_by_role_and_token_state(service, tokens, method, caller) -> None:
    run_name = await failed_run(service, tokens["runner"], "owned-by-runner")
    make_request, least_role = RPCS[method]
    invalid = {
        "none": (),
        "malformed": (("authorization", "Token abc"),),
        "wrong": bearer("skp_not-a-token"),
    }
    metadata = invalid[caller] if caller in invalid else bearer(tokens[caller])
    code = await call(service.stub, method, make_request(run_name), metadata)
    if caller in ("none", "malformed", "wrong"):
        assert code == grpc.StatusCode.UNAUTHENTICATED
    elif ROLES.index(caller) < ROLES.index(least_role):
        assert code == grpc.StatusCode.PERMISSION_DENIED
    else:
        assert code not in AUTH_CODES, code


async def test_runners_act_only_on_their_own_runs(service, tokens) -> None:
    run_name = await failed_run(service, tokens["runner"], "mine")
    for method in ("CancelRun", "RetryRun", "DeleteRun"):
        request = RPCS[method][0](run_name)
        assert (
            await call(service.stub, method, request, bearer(tokens["other-runner"]))
            == grpc.StatusCode.PERMISSION_DENIED
        )
    retried = await service.stub.RetryRun(
        pb.RetryRunRequest(name=run_name), metadata=bearer(tokens["admin"])
    )
    assert retried.creator == "admin-bot"
    original = await service.stub.GetRun(
        pb.GetRunRequest(name=run_name), metadata=bearer(tokens["viewer"])
    )
    assert original.creator == "runner-bot"


async def test_health_and_reflection_stay_open(service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    response = await health.Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_tokens_file_keeps_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = auth.add_token(path, "alice", "Runner")
    text = path.read_text()
    assert token not in text and auth.hash_token(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(text)["principals"][0]["role"] == "runner"
    loaded = auth.TokenFile.load(path)
    assert loaded.by_token(token) == auth.Principal("alice", auth.Role.RUNNER)
    assert loaded.by_token(token + "x") is None


def test_bad_role_and_unreadable_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="role must be one of"):
        auth.add_token(tmp_path / "t.json", "bob", "root")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read tokens file"):
        auth.TokenFile.load(tmp_path / "broken.json")


async def test_an_allowed_watcher_is_sent_the_run_and_its_changes(service, tokens) -> None:
    """The guard wraps a streaming handler: an allowed caller gets the stream, not only
    a status that is neither UNAUTHENTICATED nor PERMISSION_DENIED."""
    run_name = await failed_run(service, tokens["runner"], "watched")
    request = pb.WatchRunRequest(name=run_name)
    received = [
        response.run
        async for response in service.stub.WatchRun(request, metadata=bearer(tokens["viewer"]))
    ]
    assert [run.name for run in received] == [run_name]
    assert received[-1].state == run_pb2.RUN_STATE_FAILED
