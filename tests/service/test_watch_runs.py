"""WatchRuns through a real in-process gRPC server: messages, filters, resume, re-list,
the initial snapshot, bad input as field violations, roles and the stream limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import run_pb2
from skit_pipelines import auth
from skit_pipelines.config import ServerConfig
from skit_pipelines.run_feed import encode_cursor

Kind = pb.WatchRunsResponse


def create_request(labels: dict[str, str] | None = None) -> pb.CreateRunRequest:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"})
    return pb.CreateRunRequest(
        run=run_pb2.Run(pipeline="pipelines/typed", parameters=parameters, labels=labels or {})
    )


@pytest.fixture
async def watching(service) -> AsyncIterator[object]:
    yield service
    await service.controller.feed.close()


async def next_message(stream) -> pb.WatchRunsResponse:
    message = await asyncio.wait_for(stream.read(), 5)
    assert message is not grpc.aio.EOF
    return message


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def test_changes_of_matching_runs_with_cursors(watching) -> None:
    stream = watching.stub.WatchRuns(pb.WatchRunsRequest(labels={"team": "slu"}))
    start = await next_message(stream)
    assert start.kind == Kind.KIND_HEARTBEAT and start.cursor and not start.HasField("run")
    run = await watching.stub.CreateRun(create_request({"team": "slu"}))
    await watching.stub.CreateRun(create_request({"team": "asr"}))
    run_id = run.name.removeprefix("runs/")
    await watching.backend.sinks[run_id].run_started(run_id)
    await watching.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    await watching.stub.DeleteRun(pb.DeleteRunRequest(name=run.name))
    messages = [await next_message(stream) for _ in range(5)]
    assert [(m.kind, m.run.name, m.run.state) for m in messages] == [
        (Kind.KIND_CHANGE, run.name, run_pb2.RUN_STATE_QUEUED),
        (Kind.KIND_CHANGE, run.name, run_pb2.RUN_STATE_RUNNING),
        (Kind.KIND_CHANGE, run.name, run_pb2.RUN_STATE_CANCELLING),
        (Kind.KIND_CHANGE, run.name, run_pb2.RUN_STATE_CANCELLED),
        (Kind.KIND_DELETED, run.name, run_pb2.RUN_STATE_CANCELLED),
    ]
    assert [m.run.revision for m in messages] == [1, 2, 3, 4, 4]
    cursors = [start.cursor] + [m.cursor for m in messages]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    stream.cancel()


async def test_resume_after_a_cursor_delivers_the_rest_once(watching) -> None:
    stream = watching.stub.WatchRuns(pb.WatchRunsRequest())
    await next_message(stream)
    runs = [await watching.stub.CreateRun(create_request()) for _ in range(3)]
    first = await next_message(stream)
    stream.cancel()
    again = watching.stub.WatchRuns(pb.WatchRunsRequest(after_cursor=first.cursor))
    assert [(await next_message(again)).run.name for _ in range(2)] == [r.name for r in runs[1:]]
    later = await watching.stub.CreateRun(create_request())
    assert (await next_message(again)).run.name == later.name
    again.cancel()


async def test_initial_snapshot_then_complete_then_live(watching) -> None:
    old = await watching.stub.CreateRun(create_request({"team": "slu"}))
    await watching.stub.CreateRun(create_request({"team": "asr"}))
    stream = watching.stub.WatchRuns(
        pb.WatchRunsRequest(labels={"team": "slu"}, initial_snapshot=True)
    )
    snapshot = await next_message(stream)
    assert (snapshot.kind, snapshot.run.name, snapshot.cursor) == (
        Kind.KIND_SNAPSHOT,
        old.name,
        "",
    )
    complete = await next_message(stream)
    assert complete.kind == Kind.KIND_SNAPSHOT_COMPLETE and complete.cursor
    new = await watching.stub.CreateRun(create_request({"team": "slu"}))
    change = await next_message(stream)
    assert (change.kind, change.run.name) == (Kind.KIND_CHANGE, new.name)
    assert change.cursor > complete.cursor
    stream.cancel()


async def test_a_cursor_too_old_or_foreign_gets_relist_not_an_error(watching) -> None:
    await watching.stub.CreateRun(create_request())
    stream = watching.stub.WatchRuns(pb.WatchRunsRequest(after_cursor=encode_cursor(10**6)))
    relist = await next_message(stream)
    assert relist.kind == Kind.KIND_RELIST and relist.cursor == encode_cursor(1)
    run = await watching.stub.CreateRun(create_request())
    assert (await next_message(stream)).run.name == run.name
    stream.cancel()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"after_cursor": "garbage"}, "after_cursor"),
        ({"after_cursor": "c123"}, "after_cursor"),
        ({"pipeline": "typed"}, "pipeline"),
        ({"states": [99]}, "states"),
        ({"labels": {"": "x"}}, "labels"),
    ],
)
async def test_bad_filter_or_cursor_is_invalid_argument_with_the_field(
    watching, request_fields, field
) -> None:
    stream = watching.stub.WatchRuns(pb.WatchRunsRequest(**request_fields))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(
        f == field or f.startswith(field + ".") or f.startswith(field + "[")
        for f in field_violations(caught.value)
    ), field_violations(caught.value)


async def test_watch_runs_counts_against_the_stream_limit(watching) -> None:
    watching.controller._max_streams = 2
    run = await watching.stub.CreateRun(create_request())
    held = [
        watching.stub.WatchRuns(pb.WatchRunsRequest()),
        watching.stub.WatchRun(pb.WatchRunRequest(name=run.name)),
    ]
    for stream in held:
        await asyncio.wait_for(stream.read(), 5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watching.stub.WatchRuns(pb.WatchRunsRequest()).read()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    held[0].cancel()
    for _ in range(200):
        if watching.controller._streams.get("", 0) < 2:
            break
        await asyncio.sleep(0.01)
    again = watching.stub.WatchRuns(pb.WatchRunsRequest())
    assert (await next_message(again)).kind == Kind.KIND_HEARTBEAT
    again.cancel()
    held[1].cancel()


class TestRoles:
    @pytest.fixture
    def tokens(self, tmp_path: Path) -> dict[str, str]:
        path = tmp_path / "tokens.json"
        return {role: auth.add_token(path, f"{role}-bot", role) for role in ("viewer", "runner")}

    @pytest.fixture
    def service_config(self, tmp_path: Path, tokens) -> ServerConfig:
        return ServerConfig(port=0, home=tmp_path, tokens_file=tmp_path / "tokens.json")

    async def test_a_viewer_may_watch_and_nobody_unauthenticated(self, watching, tokens) -> None:
        viewer = (("authorization", f"Bearer {tokens['viewer']}"),)
        stream = watching.stub.WatchRuns(pb.WatchRunsRequest(), metadata=viewer)
        assert (await next_message(stream)).kind == Kind.KIND_HEARTBEAT
        stream.cancel()
        for metadata in ((), (("authorization", "Bearer skp_wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await watching.stub.WatchRuns(pb.WatchRunsRequest(), metadata=metadata).read()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_the_limit_is_per_principal(self, watching, tokens) -> None:
        watching.controller._max_streams = 1
        viewer = (("authorization", f"Bearer {tokens['viewer']}"),)
        runner = (("authorization", f"Bearer {tokens['runner']}"),)
        held = watching.stub.WatchRuns(pb.WatchRunsRequest(), metadata=viewer)
        await next_message(held)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watching.stub.WatchRuns(pb.WatchRunsRequest(), metadata=viewer).read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        other = watching.stub.WatchRuns(pb.WatchRunsRequest(), metadata=runner)
        assert (await next_message(other)).kind == Kind.KIND_HEARTBEAT
        held.cancel()
        other.cancel()
