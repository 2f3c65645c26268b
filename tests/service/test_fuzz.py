"""Generated requests over every RPC — malformed names, huge strings, wrong types, random
bytes on the wire — never get INTERNAL or UNKNOWN, and the server stays healthy.

The server runs on its own event loop in a thread so that hypothesis can drive it with a
plain synchronous client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ServerConfig
from skit_pipelines.runs import RunController
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore

pytestmark = pytest.mark.xdist_group("fuzz")

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUZZED_CALLS = {"count": 0}


class _ServerThread:
    def __init__(self, tmp_path: Path, pipeline, backend) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(
            target=self._run, args=(tmp_path, pipeline, backend), daemon=True
        )
        self.port = 0

    def _run(self, tmp_path: Path, pipeline, backend) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve(tmp_path, pipeline, backend))

    async def _serve(self, tmp_path: Path, pipeline, backend) -> None:
        store = SqliteRunStore(tmp_path / "runs.db")
        controller = RunController(store, Catalog({pipeline.id: pipeline}), backend)
        backend.start(controller)
        server, self.port, health = await create_grpc_server(
            controller, ServerConfig(port=0, home=tmp_path)
        )
        await server.start()
        await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        self.stop_event = asyncio.Event()
        self.ready.set()
        await self.stop_event.wait()
        await server.stop(None)
        await store.close()

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def channel(tmp_path_factory, typed_pipeline, fake_backend_class) -> Iterator[grpc.Channel]:
    server = _ServerThread(tmp_path_factory.mktemp("fuzz"), typed_pipeline, fake_backend_class())
    server.thread.start()
    assert server.ready.wait(30)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan
    assert_healthy(chan_check := grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    chan_check.close()
    server.stop()
    print(f"fuzzed {FUZZED_CALLS['count']} requests; the server stayed healthy")


def check(call) -> None:
    FUZZED_CALLS["count"] += 1
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() not in FORBIDDEN, (error.code(), error.details())


def assert_healthy(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


names = st.one_of(
    st.text(max_size=300),
    st.from_regex(r"\A(runs|pipelines)/[a-z0-9-]{0,70}\Z"),
    st.just("pipelines/typed"),
    # Not surrogates (category Cs), which st.text leaves out too: a protobuf string is
    # UTF-8, so no client can send one (the stub refuses to encode it).
    st.builds(
        lambda char, n: char * n,
        st.characters(exclude_categories=("Cs",)),
        st.integers(10_000, 300_000),
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def struct_of(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(values, message)
    return message


@EXAMPLES
@given(
    pipeline=names,
    parameters=st.dictionaries(st.text(max_size=20), json_values, max_size=6),
    labels=st.dictionaries(st.text(max_size=70), st.text(max_size=80), max_size=4),
    run_id=st.text(max_size=80),
    request_id=st.text(max_size=200),
)
def test_create_run(channel, pipeline, parameters, labels, run_id, request_id) -> None:
    stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
    request = pb.CreateRunRequest(
        run=run_pb2.Run(pipeline=pipeline, parameters=struct_of(parameters), labels=labels),
        run_id=run_id,
        request_id=request_id,
    )
    check(lambda: stub.CreateRun(request, timeout=10))


@EXAMPLES
@given(
    name=names,
    page_size=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    page_token=st.text(max_size=300),
    states=st.lists(st.integers(min_value=-5, max_value=50), max_size=5),
    after_revision=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    step=st.text(max_size=300),
    attempt=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_every_other_rpc(
    channel, name, page_size, page_token, states, after_revision, step, attempt
) -> None:
    stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
    check(
        lambda: stub.ListPipelines(
            pb.ListPipelinesRequest(page_size=page_size, page_token=page_token), timeout=10
        )
    )
    check(lambda: stub.GetPipeline(pb.GetPipelineRequest(name=name), timeout=10))
    check(lambda: stub.GetRun(pb.GetRunRequest(name=name), timeout=10))
    check(
        lambda: stub.ListRuns(
            pb.ListRunsRequest(
                page_size=page_size, page_token=page_token, pipeline=name, states=states
            ),
            timeout=10,
        )
    )
    check(lambda: stub.CancelRun(pb.CancelRunRequest(name=name), timeout=10))
    check(lambda: stub.RetryRun(pb.RetryRunRequest(name=name, run_id=step), timeout=10))
    check(
        lambda: list(
            stub.WatchRun(pb.WatchRunRequest(name=name, after_revision=after_revision), timeout=0.5)
        )
    )
    check(
        lambda: list(
            stub.ReadStepLogs(
                pb.ReadStepLogsRequest(run=name, step=step, attempt=attempt), timeout=0.5
            )
        )
    )


METHODS = [
    f"/{SERVICE_NAME}/{method.name}"
    for method in pb.DESCRIPTOR.services_by_name["PipelineService"].methods
]


@EXAMPLES
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=2048))
def test_random_bytes_on_the_wire(channel, method, payload) -> None:
    streaming = method.endswith(("WatchRun", "ReadStepLogs"))
    if streaming:
        call = channel.unary_stream(method)
        check(lambda: list(call(payload, timeout=0.5)))
    else:
        call = channel.unary_unary(method)
        check(lambda: call(payload, timeout=10))


def test_server_is_healthy_after_fuzzing(channel) -> None:
    for payload in (b"\xff" * 100, b"", b"\x0a\xff\xff\xff\xff\x0f"):
        check(lambda payload=payload: channel.unary_unary(METHODS[0])(payload, timeout=10))
    assert_healthy(channel)
