"""Oversized and malformed requests (issue 13, items 3, 4, 5 and 8): refused at the door
with INVALID_ARGUMENT naming the field, with error details that always fit in gRPC's
trailers; ListRuns pages that fit in one message; timestamps out of range; NUL bytes and
invalid UTF-8; a `--help` value reaching its component intact; request_id per principal."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_pipelines import auth
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Pipeline, Run, RunState
from skit_pipelines.runs import RunController
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.base import RunQuery
from skit_pipelines.store.sqlite import SqliteRunStore

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
METADATA_LIMIT = 8 * 1024
"""What a gRPC client accepts in response headers or trailers by default."""
BIG_MESSAGES = [("grpc.max_receive_message_length", 64 * MIB)]
"""A client that would accept a ListRuns response over the server's limit."""
RUN_TIMEOUT_SECONDS = 120


def create_request(params: dict | None = None, **kwargs: object) -> pb.CreateRunRequest:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"} if params is None else params)
    labels = kwargs.pop("labels", {})
    return pb.CreateRunRequest(
        run=run_pb2.Run(pipeline="pipelines/typed", parameters=parameters, labels=labels),
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    reason: str
    violations: list[tuple[str, str]]
    trailers_bytes: int
    message: str


async def refusal(call: object) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = caught.value
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status: {error.code()} {error.details()}"
    info = error_details_pb2.ErrorInfo()
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    trailers = sum(len(key) + len(value) for key, value in error.trailing_metadata() or ())
    return Refusal(error.code(), info.reason, violations, trailers, error.details() or "")


@dataclass
class Served:
    stub: pipeline_service_pb2_grpc.PipelineServiceStub
    store: SqliteRunStore
    address: str


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, pipeline: Pipeline, backend: object, config: ServerConfig
) -> AsyncIterator[Served]:
    """PipelineService with `config`'s limits, over a fake backend."""
    store = SqliteRunStore(tmp_path / "limited.db")
    controller = RunController(
        store,
        Catalog({pipeline.id: pipeline}),
        backend,  # type: ignore[arg-type]
        limits=config.request_limits,
    )
    backend.start(controller)  # type: ignore[attr-defined]
    server, port, health = await create_grpc_server(controller, config)
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address, options=BIG_MESSAGES)
    try:
        yield Served(pipeline_service_pb2_grpc.PipelineServiceStub(channel), store, address)
    finally:
        await channel.close()
        await server.stop(None)
        await store.close()


@pytest.fixture
def limited(tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type):
    def serve(**limits: int) -> contextlib.AbstractAsyncContextManager[Served]:
        config = ServerConfig(port=0, home=tmp_path, **limits)  # type: ignore[arg-type]
        return serving(tmp_path, typed_pipeline, fake_backend_class(), config)

    return serve


async def stored_runs(store: SqliteRunStore) -> list[Run]:
    return list((await store.list_runs(RunQuery(page_size=100))).runs)


# Limits at the door


async def test_a_6_mb_parameter_is_refused_naming_it(service) -> None:
    refused = await refusal(service.stub.CreateRun(create_request({"greeting": "x" * 6_000_000})))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.reason == "REQUEST_TOO_LARGE"
    assert [field for field, _ in refused.violations] == ["run.parameters.greeting"]
    assert await stored_runs(service.store) == []


async def test_a_value_over_the_parameter_limit_is_refused_naming_it(service) -> None:
    request = create_request({"greeting": "x" * 100_000, "options": {"a": 1}})
    refused = await refusal(service.stub.CreateRun(request))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.reason == "INVALID_PARAMETERS"
    assert [field for field, _ in refused.violations] == ["run.parameters.greeting"]
    assert "65536" in refused.violations[0][1]


async def test_10k_unknown_parameters_are_invalid_argument(service) -> None:
    params = {"greeting": "hi", **{f"unknown_{i}": i for i in range(10_000)}}
    refused = await refusal(service.stub.CreateRun(create_request(params)))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.reason == "TOO_MANY_PARAMETERS"
    assert refused.violations == [("run.parameters", "at most 100 parameters, got 10001")]


async def test_10k_violations_are_capped_to_fit_in_the_trailers(limited) -> None:
    params = {"greeting": "hi", **{f"unknown_{i}": i for i in range(10_000)}}
    async with limited(max_parameters=20_000) as served:
        refused = await refusal(served.stub.CreateRun(create_request(params)))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.reason == "INVALID_PARAMETERS"
    assert refused.trailers_bytes < METADATA_LIMIT // 2
    *shown, (field, last) = refused.violations
    assert shown and all(f.startswith("run.parameters.unknown_") for f, _ in shown)
    more = re.fullmatch(r"… and (\d+) more", last)
    assert more is not None and field == "run.parameters"
    assert len(shown) + int(more.group(1)) == 10_000
    assert len(refused.message.encode()) <= 512


async def test_all_parameters_together_have_a_limit(limited) -> None:
    params = {"greeting": "x" * 6000, "options": {"text": "y" * 6000}}
    async with limited(max_parameters_bytes=10_000) as served:
        refused = await refusal(served.stub.CreateRun(create_request(params)))
        assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.reason == "PARAMETERS_TOO_LARGE"
        assert [field for field, _ in refused.violations] == ["run.parameters"]
        accepted = await served.stub.CreateRun(create_request({"greeting": "x" * 6000}))
        assert accepted.state == run_pb2.RUN_STATE_QUEUED


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"a": "1", "b": "2", "c": "3"}, "run.labels"),
        ({"toolong": "1"}, "run.labels.toolong"),
        ({"team": "abcdefg"}, "run.labels.team"),
        ({"team": "a\0b"}, "run.labels.team"),
    ],
)
async def test_labels_have_limits(limited, labels: dict[str, str], field: str) -> None:
    async with limited(max_labels=2, max_label_key_length=4, max_label_value_length=5) as served:
        refused = await refusal(served.stub.CreateRun(create_request(labels=labels)))
        assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in refused.violations] == [field]
        assert await stored_runs(served.store) == []


async def test_a_request_over_the_request_limit_names_its_largest_field(limited) -> None:
    async with limited(max_request_bytes=4096) as served:
        labels = {"team": "slu"}
        refused = await refusal(
            served.stub.CreateRun(create_request({"greeting": "x" * 5000}, labels=labels))
        )
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.reason == "REQUEST_TOO_LARGE"
    assert [f for f, _ in refused.violations] == ["run.parameters.greeting"]


def big_run(index: int, size: int) -> Run:
    """A run stored before the limits existed, with one huge parameter."""
    created = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=index)
    return Run(
        id=f"big-{index}",
        pipeline="typed",
        pipeline_version="sha256:old",
        parameters={"greeting": str(index) * size},
        labels={},
        state=RunState.SUCCEEDED,
        create_time=created,
        update_time=created,
        revision=1,
    )


async def list_every_run(stub, page_size: int = 0) -> tuple[list[str], int]:
    """Follows next_page_token to the end: the run ids and the largest response."""
    names: list[str] = []
    largest, token = 0, ""
    while True:
        page = await stub.ListRuns(pb.ListRunsRequest(page_token=token, page_size=page_size))
        largest = max(largest, page.ByteSize())
        names.extend(run.name for run in page.runs)
        token = page.next_page_token
        if not token:
            return names, largest


async def test_list_runs_pages_stay_under_the_message_limit(service) -> None:
    for index in range(3):
        await service.store.create_run(big_run(index, 6_000_000))
    channel = grpc.aio.insecure_channel(service.address, options=BIG_MESSAGES)
    try:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        names, largest = await list_every_run(stub)
    finally:
        await channel.close()
    assert names == ["runs/big-2", "runs/big-1", "runs/big-0"]
    assert largest <= 16 * MIB


async def test_list_runs_trims_to_a_configured_message_limit(limited) -> None:
    async with limited(max_message_bytes=MIB) as served:
        for index in range(7):
            await served.store.create_run(big_run(index, 300_000))
        names, largest = await list_every_run(served.stub, page_size=5)
    assert names == [f"runs/big-{index}" for index in reversed(range(7))]
    assert largest <= MIB


# Validation at the door


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (253_402_300_800, 0, "create_time_after.seconds"),
        (-62_135_596_801, 0, "create_time_after.seconds"),
        (0, -1, "create_time_after.nanos"),
        (0, 1_000_000_000, "create_time_after.nanos"),
    ],
)
async def test_list_runs_timestamps_out_of_range_are_invalid_argument(
    service, seconds: int, nanos: int, field: str
) -> None:
    after = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    refused = await refusal(service.stub.ListRuns(pb.ListRunsRequest(create_time_after=after)))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in refused.violations] == [field]


async def test_list_runs_accepts_the_first_and_last_representable_times(service) -> None:
    await service.stub.CreateRun(create_request())
    first = timestamp_pb2.Timestamp(seconds=-62_135_596_800)
    last = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    listed = await service.stub.ListRuns(
        pb.ListRunsRequest(create_time_after=first, create_time_before=last)
    )
    assert len(listed.runs) == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"greeting": "a\0b"}, "run.parameters.greeting"),
        ({"greeting": "hi", "options": {"k": ["x", "a\0"]}}, "run.parameters.options.k[1]"),
        ({"greeting": "hi", "items": [{"a\0": 1}]}, "run.parameters.items[0]"),
    ],
)
async def test_nul_characters_are_refused_naming_the_parameter(
    service, params: dict, field: str
) -> None:
    refused = await refusal(service.stub.CreateRun(create_request(params)))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in refused.violations] == [field]
    assert await stored_runs(service.store) == []


@pytest.mark.parametrize(
    ("params", "labels", "field"),
    [
        ({"greeting": "@@@@"}, {}, "run.parameters.greeting"),
        ({"greeting": "hi", "options": {"k": ["@@@@"]}}, {}, "run.parameters.options.k[0]"),
        ({"greeting": "hi"}, {"team": "@@@@"}, "run.labels.team"),
    ],
)
async def test_invalid_utf8_is_refused_naming_the_field(
    service, params: dict, labels: dict[str, str], field: str
) -> None:
    data = create_request(params, labels=labels).SerializeToString()
    assert data.count(b"@@@@") == 1
    raw = service.channel.unary_unary(f"/{SERVICE_NAME}/CreateRun")
    refused = await refusal(raw(data.replace(b"@@@@", b"\xff\xfe@@")))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in refused.violations] == [field]


async def test_a_value_starting_with_dashes_reaches_the_component_intact(tmp_path: Path) -> None:
    """`lang=--help` on the real fetch-calls component: it filters by that language (and
    finds no call) instead of failing to parse its arguments."""
    from skit_demo import ensure_demo_data
    from skit_pipelines.artifacts import LocalArtifactStore
    from skit_pipelines.backends.local import LocalBackend
    from skit_pipelines.catalog import compile_module
    from skit_pipelines.executor import ExecutorConfig, LocalExecutor
    from skit_pipelines.runs import CreateRunInput

    pipeline = pipeline_from_spec(
        await asyncio.to_thread(compile_module, ROOT / "pipelines" / "random_sample_calls.py")
    )
    demo_env = await asyncio.to_thread(ensure_demo_data, tmp_path / "demo")
    store = SqliteRunStore(tmp_path / "runs.db")
    executor = LocalExecutor(
        ExecutorConfig(images_root=ROOT / "images", work_root=tmp_path / "work", step_env=demo_env),
        LocalArtifactStore(tmp_path / "artifacts"),
    )
    backend = LocalBackend(executor)
    controller = RunController(store, Catalog({pipeline.id: pipeline}), backend)
    backend.start(controller)
    try:
        run = await controller.create_run(
            CreateRunInput(pipeline=pipeline.name, parameters={"lang": "--help"})
        )
        async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
            async for snapshot in controller.watch_run(run.name):
                run = snapshot
    finally:
        await backend.shutdown()
        await store.close()
    (step,) = run.steps
    assert run.state is RunState.FAILED and step.error is not None
    assert "no calls match the filters: lang='--help'" in step.error.message
    assert "expected one argument" not in step.error.message


# request_id per principal


async def test_request_id_belongs_to_the_principal_that_sent_it(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> None:
    tokens = tmp_path / "tokens.json"
    alice = [("authorization", f"Bearer {auth.add_token(tokens, 'alice', 'runner')}")]
    bob = [("authorization", f"Bearer {auth.add_token(tokens, 'bob', 'runner')}")]
    config = ServerConfig(port=0, home=tmp_path, tokens_file=tokens)
    async with serving(tmp_path, typed_pipeline, fake_backend_class(), config) as served:
        stub = served.stub
        mine = await stub.CreateRun(create_request(request_id="r-1"), metadata=alice)
        theirs = await stub.CreateRun(create_request(request_id="r-1"), metadata=bob)
        assert mine.name != theirs.name
        assert (mine.creator, theirs.creator) == ("alice", "bob")
        assert (await stub.CreateRun(create_request(request_id="r-1"), metadata=bob)) == theirs
        # bob's own earlier request is the only run his mismatch may name.
        changed = create_request({"greeting": "other"}, request_id="r-1")
        refused = await refusal(stub.CreateRun(changed, metadata=bob))
        assert refused.code is grpc.StatusCode.ALREADY_EXISTS
        assert theirs.name in refused.message and mine.name not in refused.message
        # A request_id only alice used is a new run for bob, not alice's run.
        only_alice = await stub.CreateRun(create_request(request_id="r-2"), metadata=alice)
        fresh = create_request({"greeting": "other"}, request_id="r-2")
        bobs = await stub.CreateRun(fresh, metadata=bob)
        assert bobs.name != only_alice.name and bobs.creator == "bob"
        assert len(await stored_runs(served.store)) == 4


def test_request_limits_come_from_the_environment() -> None:
    config = ServerConfig.from_env(
        {
            "SKIT_MAX_PARAMETER_BYTES": "1000",
            "SKIT_MAX_PARAMETERS": "7",
            "SKIT_MAX_PARAMETERS_BYTES": "5000",
            "SKIT_MAX_LABELS": "3",
            "SKIT_MAX_LABEL_KEY_LENGTH": "10",
            "SKIT_MAX_LABEL_VALUE_LENGTH": "20",
            "SKIT_MAX_REQUEST_BYTES": "65536",
            "SKIT_MAX_MESSAGE_BYTES": "131072",
        }
    )
    limits = config.request_limits
    assert (limits.max_parameter_bytes, limits.max_parameters, limits.max_parameters_bytes) == (
        1000,
        7,
        5000,
    )
    assert (limits.max_labels, limits.max_label_key_length, limits.max_label_value_length) == (
        3,
        10,
        20,
    )
    assert (config.max_request_bytes, config.max_message_bytes) == (65536, 131072)
    assert replace(config, max_labels=4).request_limits.max_labels == 4


def test_request_limits_come_from_serve_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import skit_pipelines.server
    from skit_pipelines_cli.main import main

    served: list[ServerConfig] = []
    monkeypatch.setattr(skit_pipelines.server, "serve", lambda config: served.append(config) or 0)
    flags = ["--max-parameter-bytes", "1000", "--max-parameters", "7", "--max-labels", "3"]
    flags += ["--max-request-bytes", "65536", "--max-message-bytes", "131072"]
    assert main(["serve", *flags]) == 0
    (config,) = served
    assert config.request_limits.max_parameter_bytes == 1000
    assert config.request_limits.max_parameters == 7
    assert config.request_limits.max_labels == 3
    assert (config.max_request_bytes, config.max_message_bytes) == (65536, 131072)
