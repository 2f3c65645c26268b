"""PipelinesClient.watch_runs / AsyncPipelinesClient.watch_runs: every change once, in
order, across a server restart (a real server process, killed mid-stream), and the
resume point each reconnect asks for (a scripted server)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent import futures

import grpc
import pytest

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2
from skit_pipelines_client import (
    AsyncPipelinesClient,
    ChangeKind,
    PipelinesClient,
    ResumePolicy,
    RPCError,
    RunState,
)

FAST = ResumePolicy(attempts=3, first_delay=0.01, max_delay=0.02)
TERMINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED}


def test_watch_runs_resumes_across_a_server_restart_and_misses_nothing(serve) -> None:
    server = serve()
    port = int(server.address.rsplit(":", 1)[1])
    restarted: list[object] = []
    resumed: list[grpc.StatusCode] = []
    revisions: dict[str, list[int]] = defaultdict(list)
    cursors: list[str] = []

    with PipelinesClient(server.address) as client:
        changes = client.watch_runs(
            labels={"batch": "x"}, on_resume=lambda error, _: resumed.append(error.code)
        )
        assert next(changes).kind is ChangeKind.HEARTBEAT
        names = {client.create_run("naps", {"seconds": 0.2}, {"batch": "x"}).name for _ in range(3)}
        client.create_run("naps", {"seconds": 0.2}, {"batch": "other"})
        done: set[str] = set()
        restarter = None
        for change in changes:
            if change.kind is ChangeKind.HEARTBEAT:
                continue
            assert change.kind is ChangeKind.CHANGE and change.run is not None
            revisions[change.run.name].append(change.run.revision)
            cursors.append(change.cursor)
            if change.run.state in TERMINAL:
                done.add(change.run.name)
            if len(cursors) == 5 and restarter is None:
                server.process.kill()
                server.process.wait(timeout=30)
                restarter = threading.Thread(target=lambda: restarted.append(serve(port)))
                restarter.start()
            if done == names:
                break
        changes.close()
        assert restarter is not None
        restarter.join()
        final = {name: client.get_run(name) for name in names}

    assert resumed and set(resumed) == {grpc.StatusCode.UNAVAILABLE}
    assert set(revisions) == names
    for name, seen in revisions.items():
        assert seen == list(range(1, final[name].revision + 1)), (name, seen)
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)


class ScriptedWatchRuns(pipeline_service_pb2_grpc.PipelineServiceServicer):
    """Answers the n-th WatchRuns with the n-th script: (kind, cursor) messages, then an
    optional error code; records each request."""

    def __init__(self) -> None:
        self.scripts: list[tuple[Sequence[tuple[int, str]], grpc.StatusCode | None]] = []
        self.requests: list[pipeline_service_pb2.WatchRunsRequest] = []

    def WatchRuns(self, request, context):
        self.requests.append(request)
        messages, error = self.scripts.pop(0)
        for kind, cursor in messages:
            response = pipeline_service_pb2.WatchRunsResponse(kind=kind, cursor=cursor)
            if kind != pipeline_service_pb2.WatchRunsResponse.KIND_HEARTBEAT:
                # The pipeline is unknown here: the client keeps the values untyped.
                response.run.CopyFrom(run_pb2.Run(name="runs/r", pipeline="pipelines/p"))
            yield response
        if error is not None:
            context.abort(error, "scripted")

    def GetPipeline(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no pipelines here")


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedWatchRuns, str]]:
    servicer = ScriptedWatchRuns()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


K = pipeline_service_pb2.WatchRunsResponse
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def test_async_watch_runs_resumes_from_the_last_cursor(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [
        (
            [(K.KIND_SNAPSHOT, ""), (K.KIND_SNAPSHOT_COMPLETE, "c1"), (K.KIND_CHANGE, "c2")],
            UNAVAILABLE,
        ),
        ([(K.KIND_CHANGE, "c3"), (K.KIND_RELIST, "c9")], UNAVAILABLE),
        ([(K.KIND_DELETED, "ca")], None),
    ]
    async with AsyncPipelinesClient(address) as client:
        seen = [
            (change.kind, change.cursor)
            async for change in client.watch_runs(
                pipeline="p", states=[RunState.FAILED], initial_snapshot=True, resume=FAST
            )
        ]
    assert seen == [
        (ChangeKind.SNAPSHOT, ""),
        (ChangeKind.SNAPSHOT_COMPLETE, "c1"),
        (ChangeKind.CHANGE, "c2"),
        (ChangeKind.CHANGE, "c3"),
        (ChangeKind.RELIST, "c9"),
        (ChangeKind.DELETED, "ca"),
    ]
    asked = [(r.after_cursor, r.initial_snapshot) for r in servicer.requests]
    assert asked == [("", True), ("c2", False), ("c9", False)]
    assert all(r.pipeline == "pipelines/p" for r in servicer.requests)
    assert all(list(r.states) == [run_pb2.RUN_STATE_FAILED] for r in servicer.requests)


def test_dropped_during_the_snapshot_it_starts_the_snapshot_again(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [
        ([(K.KIND_SNAPSHOT, "")], UNAVAILABLE),
        ([(K.KIND_SNAPSHOT, ""), (K.KIND_SNAPSHOT_COMPLETE, "c1")], None),
    ]
    with PipelinesClient(address) as client:
        kinds = [c.kind for c in client.watch_runs(initial_snapshot=True, resume=FAST)]
    assert kinds == [ChangeKind.SNAPSHOT, ChangeKind.SNAPSHOT, ChangeKind.SNAPSHOT_COMPLETE]
    assert [(r.after_cursor, r.initial_snapshot) for r in servicer.requests] == [
        ("", True),
        ("", True),
    ]


def test_it_gives_up_after_the_failures_the_policy_allows(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [([], UNAVAILABLE)] * 4
    with PipelinesClient(address) as client, pytest.raises(RPCError) as caught:
        list(client.watch_runs(resume=FAST))
    assert caught.value.code == UNAVAILABLE
    assert len(servicer.requests) == 4


def test_other_errors_are_raised_at_once(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [([], grpc.StatusCode.INVALID_ARGUMENT)]
    with PipelinesClient(address) as client, pytest.raises(RPCError) as caught:
        list(client.watch_runs(after_cursor="nope", resume=FAST))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.requests[0].after_cursor == "nope"
