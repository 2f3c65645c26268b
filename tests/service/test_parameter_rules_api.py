"""Parameter rules through the real gRPC server: GetPipeline and ListPipelines show them,
CreateRun enforces them as INVALID_ARGUMENT with a field violation each, and error texts
show values as they were typed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_pb2, run_pb2
from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Pipeline
from skit_pipelines.rules import Date, Each, NonEmpty, OneOf, Pattern, Range, TimeZone
from skit_pipelines.runs import RunController
from skit_pipelines.server import create_grpc_server
from skit_pipelines.store.sqlite import SqliteRunStore

RULES = {
    "greeting": [Pattern("h[a-z]+", meaning="a greeting starting with h"), OneOf("hi", "hey")],
    "count": Range(minimum=1, maximum=10),
    "ratio": Range(maximum=1),
    "items": [NonEmpty(), Each(Range(minimum=0, integer=True))],
}


@pytest.fixture
async def stub(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: Any
) -> AsyncIterator[pb_grpc.PipelineServiceStub]:
    ruled = pipeline_from_spec(typed_pipeline.spec, RULES)
    store = SqliteRunStore(tmp_path / "runs.db")
    backend = fake_backend_class()
    controller = RunController(store, Catalog({ruled.id: ruled}), backend)
    backend.start(controller)
    server, port, _ = await create_grpc_server(controller, ServerConfig(port=0, home=tmp_path))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.PipelineServiceStub(channel)
    finally:
        await server.stop(None)
        await store.close()


def create(**parameters: Any) -> pb.CreateRunRequest:
    values = struct_pb2.Struct()
    values.update({"greeting": "hi", **parameters})
    return pb.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/typed", parameters=values))


async def violations(stub: pb_grpc.PipelineServiceStub, request: Any) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateRun(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def test_get_pipeline_shows_each_parameter_s_rules(stub) -> None:
    for pipeline in (
        await stub.GetPipeline(pb.GetPipelineRequest(name="pipelines/typed")),
        (await stub.ListPipelines(pb.ListPipelinesRequest())).pipelines[0],
    ):
        rules = {p.name: list(p.rules) for p in pipeline.parameters}
        assert [r.description for r in rules["greeting"]] == [
            "a greeting starting with h",
            "one of hi, hey",
        ]
        assert rules["greeting"][0].pattern.regex == "h[a-z]+"
        assert list(rules["greeting"][1].enumeration.values) == ["hi", "hey"]
        (count,) = rules["count"]
        assert count.WhichOneof("kind") == "range" and count.description == "from 1 to 10"
        assert count.range.HasField("minimum") and count.range.maximum == 10
        (ratio,) = rules["ratio"]
        assert not ratio.range.HasField("minimum") and ratio.range.maximum == 1
        non_empty, each = rules["items"]
        assert non_empty.WhichOneof("kind") == "non_empty" and not non_empty.each_item
        assert each.each_item and each.range.integer and each.range.minimum == 0
        assert rules["flag"] == []


def test_every_rule_kind_has_its_message() -> None:
    from skit_pipelines.convert import parameter_rule

    kinds = {
        parameter_rule(rule).WhichOneof("kind")
        for rule in (
            Date(allow_empty=True, not_before="x"),
            TimeZone(),
            OneOf("a"),
            Range(minimum=0),
            Pattern("a"),
            NonEmpty(),
        )
    }
    oneof = pipeline_pb2.ParameterRule.DESCRIPTOR.oneofs_by_name["kind"]
    assert kinds == {field.name for field in oneof.fields}
    date = parameter_rule(Date(allow_empty=True, not_before="x"))
    assert date.allow_empty and date.date.not_before == "x"


async def test_create_run_refuses_what_breaks_a_rule_naming_each_field(stub) -> None:
    found = await violations(stub, create(greeting="hay", count=11, ratio=1.5, items=[1, -1]))

    assert found == {
        "run.parameters.greeting": 'must be one of hi, hey, got "hay"; did you mean hey?',
        "run.parameters.count": "must be from 1 to 10, got 11",
        "run.parameters.ratio": "must be at most 1, got 1.5",
        "run.parameters.items[1]": "must be an integer of at least 0, got -1",
    }


async def test_create_run_accepts_what_meets_the_rules(stub) -> None:
    run = await stub.CreateRun(create(greeting="hey", count=10, ratio=1, items=[0]))
    assert run.state == run_pb2.RUN_STATE_QUEUED


async def test_error_texts_show_numbers_as_typed(stub) -> None:
    found = await violations(stub, create(greeting=5, count=2.5))

    assert found == {
        "run.parameters.greeting": "must be a string, got 5",
        "run.parameters.count": "must be an integer, got 2.5",
    }


async def test_an_unknown_pipeline_or_parameter_gets_a_did_you_mean(stub) -> None:
    found = await violations(stub, create(cuont=3))
    assert found["run.parameters.cuont"].startswith(
        "unknown parameter for pipelines/typed; did you mean count? known: count, "
    )
    request = create()
    request.run.pipeline = "pipelines/typd"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateRun(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == (
        "pipeline pipelines/typd not found; did you mean typed? known: typed"
    )
