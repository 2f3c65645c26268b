"""Spans of a real server: one per RPC, one per run, a child per step, and the step
process holding its step span's trace context in TRACEPARENT."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2
from skit_pipelines.auth import add_token
from skit_pipelines.config import ServerConfig
from skit_pipelines.server import build_application
from skit_pipelines.telemetry import Telemetry

CREATE = "/skit.pipelines.v1.PipelineService/CreateRun"


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def _rpc_spans(spans, method: str, count: int = 1) -> list[ReadableSpan]:
    """The spans of `method`'s calls, once `count` have ended: a call's span ends just
    after its response leaves, so possibly after the client has it."""
    for _ in range(200):
        found = [s for s in spans.get_finished_spans() if s.name.endswith(f"/{method}")]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} {method} span(s) never ended")


async def test_a_run_is_one_trace_from_create_run_to_its_steps(app, stub, spans, run_to_end):
    run = await run_to_end(stub)
    assert run.state == run_pb2.RUN_STATE_SUCCEEDED

    finished = _by_name(spans.get_finished_spans())
    create, root = finished[CREATE], finished["run traced"]
    first, second = finished["step traced"], finished["step traced-2"]
    assert create.kind is SpanKind.SERVER
    assert root.parent is not None and root.parent.span_id == create.context.span_id
    assert {first.parent.span_id, second.parent.span_id} == {root.context.span_id}
    assert {s.context.trace_id for s in (create, root, first, second)} == {create.context.trace_id}
    assert root.attributes["skit.run.id"] == run.name.removeprefix("runs/")
    assert root.attributes["skit.run.state"] == "SUCCEEDED"
    assert second.attributes["skit.step.state"] == "SUCCEEDED"
    assert second.attributes["skit.step.component"] == "traced-2"
    assert first.end_time <= second.start_time <= second.end_time <= root.end_time

    # The step process saw its own span as its parent (W3C traceparent).
    trace_id, span_id = f"{root.context.trace_id:032x}", f"{second.context.span_id:016x}"
    version, seen_trace, seen_parent, flags = run.output_parameters["Output"].split("-")
    assert (version, seen_trace, seen_parent) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled


async def test_a_failed_step_marks_its_span_and_the_run_span_as_errors(
    app, stub, spans, run_to_end
):
    run = await run_to_end(stub, mode="fail")
    assert run.state == run_pb2.RUN_STATE_FAILED

    finished = _by_name(spans.get_finished_spans())
    assert finished["step traced-2"].status.status_code is StatusCode.ERROR
    assert "told to fail" in finished["step traced-2"].status.description
    assert finished["run traced"].status.status_code is StatusCode.ERROR
    assert finished["run traced"].attributes["skit.run.state"] == "FAILED"


async def test_an_rpc_span_carries_the_status_code_of_a_mapped_error(app, stub, spans):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetRun(pipeline_service_pb2.GetRunRequest(name="runs/missing"), timeout=5)
    assert failure.value.code() is grpc.StatusCode.NOT_FOUND

    (span,) = await _rpc_spans(spans, "GetRun")
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    # NOT_FOUND is the caller's mistake, not the server's.
    assert span.status.status_code is not StatusCode.ERROR


async def test_the_client_trace_context_is_the_parent_of_the_rpc_span(app, stub, spans):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await stub.ListPipelines(
        pipeline_service_pb2.ListPipelinesRequest(),
        metadata=(("traceparent", traceparent),),
        timeout=5,
    )

    (span,) = await _rpc_spans(spans, "ListPipelines")
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_calls_refused_by_authentication_are_traced_with_their_code(
    tmp_path, project, spans
) -> None:
    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "reports", "viewer")
    config = ServerConfig(
        port=0, home=tmp_path / "home", project_root=project, demo_data=False, tokens_file=tokens
    )
    app = await build_application(
        config, telemetry=Telemetry.from_config(config, span_exporter=spans)
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ListPipelines(pipeline_service_pb2.ListPipelinesRequest(), timeout=5)
            await stub.ListPipelines(
                pipeline_service_pb2.ListPipelinesRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=5,
            )
    finally:
        await app.stop(0)

    codes = [
        s.attributes["rpc.grpc.status_code"] for s in await _rpc_spans(spans, "ListPipelines", 2)
    ]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED.value[0], grpc.StatusCode.OK.value[0]]
