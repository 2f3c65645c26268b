"""PipelineService through a real in-process gRPC server, with a fake backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_pb2, run_pb2
from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit_pipelines import servicer as servicer_module
from skit_pipelines.domain import ErrorInfo, LogLine, Step, StepState
from skit_pipelines.memory import MemoryReclaimer
from skit_pipelines.server import SERVICE_NAME


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    status = rpc_status.from_call(error)
    assert status is not None, "rich status details missing"
    info = error_details_pb2.ErrorInfo()
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return info, fields


def create_request(params: dict | None = None, **kwargs) -> pb.CreateRunRequest:
    parameters = struct_pb2.Struct()
    parameters.update({"greeting": "hi"} if params is None else params)
    return pb.CreateRunRequest(
        run=run_pb2.Run(
            pipeline="pipelines/typed", parameters=parameters, labels=kwargs.pop("labels", {})
        ),
        **kwargs,
    )


async def test_list_pipelines_exposes_typed_documented_parameters(service) -> None:
    response = await service.stub.ListPipelines(pb.ListPipelinesRequest())
    (typed,) = response.pipelines
    assert typed.name == "pipelines/typed" and typed.version.startswith("sha256:")
    params = {p.name: p for p in typed.parameters}
    assert (
        params["greeting"].type == pipeline_pb2.PARAMETER_TYPE_STRING
        and params["greeting"].required
    )
    assert params["count"].type == pipeline_pb2.PARAMETER_TYPE_INTEGER
    assert params["count"].default_value.number_value == 3 and not params["count"].required
    assert params["flag"].type == pipeline_pb2.PARAMETER_TYPE_BOOLEAN
    assert params["items"].type == pipeline_pb2.PARAMETER_TYPE_LIST
    assert params["options"].type == pipeline_pb2.PARAMETER_TYPE_STRUCT
    assert params["ratio"].description == "A fraction."
    assert not typed.HasField("pipeline_spec")


async def test_get_pipeline_includes_the_ir(service) -> None:
    pipeline = await service.stub.GetPipeline(pb.GetPipelineRequest(name="pipelines/typed"))
    assert (
        pipeline.pipeline_spec.fields["pipelineInfo"].struct_value.fields["name"].string_value
        == "typed"
    )


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("pipelines/nope", grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND"),
        ("typed", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_get_pipeline_errors(service, name: str, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.GetPipeline(pb.GetPipelineRequest(name=name))
    assert caught.value.code() == code
    info, _ = details(caught.value)
    assert info.reason == reason and info.domain == "pipelines.skit.ai"


async def test_create_run_resolves_defaults_and_submits(service) -> None:
    run = await service.stub.CreateRun(
        create_request({"greeting": "hi", "count": 7}, labels={"team": "slu"})
    )
    assert run.name.startswith("runs/typed-") and run.state == run_pb2.RUN_STATE_QUEUED
    assert run.revision == 1 and run.pipeline == "pipelines/typed"
    params = dict(run.parameters.items())
    assert params["count"] == 7 and params["ratio"] == 0.5 and params["flag"] is False
    assert list(params["items"]) == [1, 2]
    assert run.backend == "fake" and run.labels["team"] == "slu"
    assert service.backend.submitted == [run.name.removeprefix("runs/")]
    assert (await service.stub.GetRun(pb.GetRunRequest(name=run.name))) == run


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"greeting": "hi", "count": "seven"}, "run.parameters.count"),
        ({"greeting": "hi", "count": 1.5}, "run.parameters.count"),
        ({"greeting": "hi", "flag": "yes"}, "run.parameters.flag"),
        ({"greeting": "hi", "items": "1,2"}, "run.parameters.items"),
        ({"greeting": 5}, "run.parameters.greeting"),
        ({"greeting": "hi", "colour": "red"}, "run.parameters.colour"),
        ({}, "run.parameters.greeting"),
    ],
)
async def test_bad_parameters_are_invalid_argument_naming_the_field(service, params, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(create_request(params))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = details(caught.value)
    assert info.reason == "INVALID_PARAMETERS"
    assert fields == [field]
    assert service.backend.submitted == []
    assert (await service.stub.ListRuns(pb.ListRunsRequest())).runs == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"run_id": "Bad_Id"}, "run_id"),
        ({"labels": {"Bad Key": "x"}}, "run.labels.Bad Key"),
        ({"request_id": "x" * 200}, "request_id"),
    ],
)
async def test_bad_ids_and_labels_are_rejected(service, kwargs, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(create_request(**kwargs))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == [field]


async def test_unknown_pipeline_is_not_found(service) -> None:
    request = create_request()
    request.run.pipeline = "pipelines/ghost"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_request_id_replay_returns_original_and_conflict_names_it(service) -> None:
    first = await service.stub.CreateRun(create_request(request_id="req-1"))
    again = await service.stub.CreateRun(create_request(request_id="req-1"))
    assert again.name == first.name and again.request_id == "req-1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(create_request({"greeting": "other"}, request_id="req-1"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = details(caught.value)
    assert info.reason == "REQUEST_ID_REUSED" and info.metadata["existing"] == first.name
    assert first.name in caught.value.details()
    assert len(service.backend.submitted) == 1


async def test_concurrent_creates_with_one_request_id_make_one_run(service) -> None:
    runs = await asyncio.gather(
        *(service.stub.CreateRun(create_request(request_id="same")) for _ in range(20))
    )
    assert len({r.name for r in runs}) == 1
    assert len(service.backend.submitted) == 1


async def test_taken_run_id_is_already_exists(service) -> None:
    await service.stub.CreateRun(create_request(run_id="mine"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateRun(create_request(run_id="mine"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(caught.value)[0].reason == "RUN_ALREADY_EXISTS"


async def test_get_unknown_run_is_not_found(service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.GetRun(pb.GetRunRequest(name="runs/ghost"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(caught.value)[0].reason == "RUN_NOT_FOUND"


async def test_list_runs_pages_with_opaque_tokens_and_filters(service) -> None:
    names = []
    for i in range(5):
        run = await service.stub.CreateRun(create_request(labels={"batch": "a" if i < 3 else "b"}))
        names.append(run.name)
    seen, token = [], ""
    while True:
        page = await service.stub.ListRuns(pb.ListRunsRequest(page_size=2, page_token=token))
        seen.extend(r.name for r in page.runs)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))
    labelled = await service.stub.ListRuns(pb.ListRunsRequest(labels={"batch": "b"}))
    assert [r.name for r in labelled.runs] == list(reversed(names[3:]))
    queued = await service.stub.ListRuns(pb.ListRunsRequest(states=[run_pb2.RUN_STATE_SUCCEEDED]))
    assert queued.runs == []
    after = timestamp_pb2.Timestamp()
    after.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    assert (await service.stub.ListRuns(pb.ListRunsRequest(create_time_after=after))).runs == []
    by_pipeline = await service.stub.ListRuns(pb.ListRunsRequest(pipeline="pipelines/typed"))
    assert len(by_pipeline.runs) == 5


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_token": "garbage"}, "page_token"),
        ({"page_size": -1}, "page_size"),
        ({"states": [42]}, "states"),
        ({"pipeline": "typed"}, "pipeline"),
    ],
)
async def test_list_runs_bad_input(service, request_fields, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.ListRuns(pb.ListRunsRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)[1] == [field]


async def test_page_token_is_bound_to_its_filters(service) -> None:
    for _ in range(3):
        await service.stub.CreateRun(create_request())
    page = await service.stub.ListRuns(pb.ListRunsRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.ListRuns(
            pb.ListRunsRequest(page_size=1, page_token=page.next_page_token, labels={"a": "b"})
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def next_message(stream) -> run_pb2.Run:
    return (await asyncio.wait_for(stream.read(), 5)).run


async def test_watch_streams_snapshots_until_terminal(service) -> None:
    run = await service.stub.CreateRun(create_request())
    run_id = run.name.removeprefix("runs/")
    stream = service.stub.WatchRun(pb.WatchRunRequest(name=run.name))
    first = await next_message(stream)
    assert first.revision == 1 and first.state == run_pb2.RUN_STATE_QUEUED
    sink = service.backend.sinks[run_id]
    await sink.run_started(run_id)
    running = await next_message(stream)
    assert running.state == run_pb2.RUN_STATE_RUNNING and running.revision == 2
    await sink.step_changed(run_id, Step(name="echo", state=StepState.RUNNING))
    step_msg = await next_message(stream)
    assert [(s.name, s.state) for s in step_msg.steps] == [("echo", run_pb2.STEP_STATE_RUNNING)]
    await sink.run_failed(
        run_id, ErrorInfo(code=2, message="echo failed: boom", reason="STEP_FAILED")
    )
    failed = await next_message(stream)
    assert failed.state == run_pb2.RUN_STATE_FAILED and failed.error.message == "echo failed: boom"
    assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK
    assert service.store.hub.watcher_count() == 0


async def test_watch_resume_after_revision_gets_each_later_revision_once(service) -> None:
    run = await service.stub.CreateRun(create_request())
    run_id = run.name.removeprefix("runs/")
    sink = service.backend.sinks[run_id]
    await sink.run_started(run_id)
    await sink.step_changed(run_id, Step(name="echo", state=StepState.RUNNING))
    await sink.step_changed(run_id, Step(name="echo", state=StepState.SUCCEEDED))
    await sink.run_succeeded(run_id, (), {})
    revisions = [
        m.run.revision
        async for m in service.stub.WatchRun(pb.WatchRunRequest(name=run.name, after_revision=2))
    ]
    assert revisions == [3, 4, 5]


async def test_watchers_of_a_revision_share_one_conversion(service, monkeypatch) -> None:
    run = await service.stub.CreateRun(create_request())
    run_id = run.name.removeprefix("runs/")
    converted: list[int] = []
    real_run = servicer_module.convert.run

    def counting(run, step_message=servicer_module.convert.step):
        converted.append(run.revision)
        return real_run(run, step_message)

    monkeypatch.setattr(servicer_module.convert, "run", counting)
    streams = [service.stub.WatchRun(pb.WatchRunRequest(name=run.name)) for _ in range(3)]
    assert [(await next_message(s)).revision for s in streams] == [1, 1, 1]
    await service.backend.sinks[run_id].run_started(run_id)
    seen = [await next_message(s) for s in streams]
    assert [m.revision for m in seen] == [2, 2, 2]
    assert seen[0].state == run_pb2.RUN_STATE_RUNNING and seen[0] == seen[1] == seen[2]
    # Converted, and serialized, once per revision for all its streams.
    assert converted == [1, 2]
    for stream in streams:
        stream.cancel()


async def test_a_closed_watch_is_counted_for_memory_reclaim(service, monkeypatch) -> None:
    closed: list[int] = []
    monkeypatch.setattr(MemoryReclaimer, "stream_closed", lambda self: closed.append(1))
    run = await service.stub.CreateRun(create_request())
    stream = service.stub.WatchRun(pb.WatchRunRequest(name=run.name))
    assert (await next_message(stream)).revision == 1
    assert closed == []
    stream.cancel()
    for _ in range(50):
        if closed:
            break
        await asyncio.sleep(0.02)
    assert closed == [1]


async def test_watch_unknown_run_is_not_found(service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in service.stub.WatchRun(pb.WatchRunRequest(name="runs/ghost")):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_deadline_is_honoured_and_watcher_released(service) -> None:
    run = await service.stub.CreateRun(create_request())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in service.stub.WatchRun(pb.WatchRunRequest(name=run.name), timeout=0.5):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(50):
        if service.store.hub.watcher_count() == 0:
            break
        await asyncio.sleep(0.02)
    assert service.store.hub.watcher_count() == 0


async def test_cancel_moves_through_cancelling_to_cancelled(service) -> None:
    service.backend.cancel_completes = False
    run = await service.stub.CreateRun(create_request())
    cancelling = await service.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    assert cancelling.state == run_pb2.RUN_STATE_CANCELLING
    run_id = run.name.removeprefix("runs/")
    assert service.backend.cancelled == [run_id]
    await service.backend.sinks[run_id].run_cancelled(run_id)
    done = await service.stub.GetRun(pb.GetRunRequest(name=run.name))
    assert done.state == run_pb2.RUN_STATE_CANCELLED and done.HasField("end_time")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(caught.value)
    assert info.reason == "RUN_ALREADY_FINISHED" and info.metadata["state"] == "CANCELLED"
    assert "already finished" in caught.value.details()
    assert service.backend.cancelled == [run_id]


async def test_cancelling_a_cancelling_run_again_keeps_it_cancelling(service) -> None:
    service.backend.cancel_completes = False
    run = await service.stub.CreateRun(create_request())
    await service.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    again = await service.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    assert again.state == run_pb2.RUN_STATE_CANCELLING


@pytest.mark.parametrize("outcome", ["SUCCEEDED", "FAILED"])
async def test_cancelling_a_finished_run_fails_with_run_already_finished(
    service, outcome: str
) -> None:
    run = await service.stub.CreateRun(create_request())
    run_id = run.name.removeprefix("runs/")
    sink = service.backend.sinks[run_id]
    if outcome == "SUCCEEDED":
        await sink.run_succeeded(run_id, [], {})
    else:
        await sink.run_failed(run_id, ErrorInfo(code=10, message="step x failed"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CancelRun(pb.CancelRunRequest(name=run.name))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, fields = details(caught.value)
    assert (info.reason, info.metadata["state"], fields) == ("RUN_ALREADY_FINISHED", outcome, [])
    assert service.backend.cancelled == []
    done = await service.stub.GetRun(pb.GetRunRequest(name=run.name))
    assert done.state == run_pb2.RunState.Value(f"RUN_STATE_{outcome}")


async def test_internal_errors_hide_details(service, monkeypatch) -> None:
    async def explode(run_id: str):
        raise RuntimeError("password=hunter2")

    monkeypatch.setattr(service.store, "get_run", explode)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.GetRun(pb.GetRunRequest(name="runs/any"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in caught.value.details() and "Traceback" not in caught.value.details()


async def test_health_overall_and_per_service(service) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", SERVICE_NAME):
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    await service.health.enter_graceful_shutdown()
    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_and_describes_the_service(service, version) -> None:
    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    call = service.channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    stream = call(
        iter(
            [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
            ]
        )
    )
    responses = [r async for r in stream]
    listed = {s.name for s in responses[0].list_services_response.service}
    assert {
        SERVICE_NAME,
        "grpc.health.v1.Health",
        f"grpc.reflection.{version}.ServerReflection",
    } <= listed
    assert responses[1].file_descriptor_response.file_descriptor_proto


async def test_shutdown_ends_watch_streams_with_unavailable(service) -> None:
    run = await service.stub.CreateRun(create_request())
    stream = service.stub.WatchRun(pb.WatchRunRequest(name=run.name))
    assert (await next_message(stream)).revision == 1
    await service.store.hub.close()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(stream.read(), 5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info, _ = details(caught.value)
    assert info.reason == "SHUTTING_DOWN" and "after_revision = 1" in caught.value.details()
    assert service.store.hub.watcher_count() == 0


async def finish_run(service, run: run_pb2.Run, *, fail_second: bool) -> str:
    run_id = run.name.removeprefix("runs/")
    sink = service.backend.sinks[run_id]
    await sink.run_started(run_id)
    await sink.step_changed(
        run_id,
        Step(name="first", state=StepState.SUCCEEDED, output_parameters={"n": 1}),
    )
    if fail_second:
        error = ErrorInfo(code=2, message="boom", reason="STEP_FAILED")
        await sink.step_changed(run_id, Step(name="second", state=StepState.FAILED, error=error))
        await sink.run_failed(run_id, error)
    else:
        await sink.run_succeeded(run_id, (), {})
    return run_id


async def test_retry_run_reuses_succeeded_steps_in_a_linked_run(service) -> None:
    run = await service.stub.CreateRun(create_request(labels={"team": "slu"}))
    await finish_run(service, run, fail_second=True)
    retry = await service.stub.RetryRun(pb.RetryRunRequest(name=run.name, request_id="r-1"))
    assert retry.name != run.name and retry.retry_of == run.name
    assert retry.state == run_pb2.RUN_STATE_QUEUED
    assert retry.parameters == run.parameters and retry.labels == run.labels
    assert [(s.name, s.state, s.cached) for s in retry.steps] == [
        ("first", run_pb2.STEP_STATE_CACHED, True)
    ]
    assert dict(retry.steps[0].output_parameters.items()) == {"n": 1}
    again = await service.stub.RetryRun(pb.RetryRunRequest(name=run.name, request_id="r-1"))
    assert again.name == retry.name
    assert service.backend.submitted[-1] == retry.name.removeprefix("runs/")


@pytest.mark.parametrize("fail_second", [False, None])
async def test_only_failed_or_cancelled_runs_can_be_retried(service, fail_second) -> None:
    run = await service.stub.CreateRun(create_request())
    if fail_second is not None:
        await finish_run(service, run, fail_second=fail_second)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.RetryRun(pb.RetryRunRequest(name=run.name))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)[0].reason == "RUN_NOT_RETRYABLE"


def log(text: str, attempt: int = 1, stream: str = "stdout") -> LogLine:
    return LogLine(time=datetime.now(UTC), stream=stream, text=text, attempt=attempt)


async def test_read_step_logs_of_a_finished_step(service) -> None:
    run = await service.stub.CreateRun(create_request())
    run_id = await finish_run(service, run, fail_second=True)
    service.backend.logs[(run_id, "second")] = [
        log("starting"),
        log("boom", stream="stderr"),
        log("retrying", attempt=2),
    ]
    request = pb.ReadStepLogsRequest(run=run.name, step="second")
    lines = [line async for batch in service.stub.ReadStepLogs(request) for line in batch.lines]
    assert [(line.text, line.stream, line.attempt) for line in lines] == [
        ("starting", pb.LOG_STREAM_STDOUT, 1),
        ("boom", pb.LOG_STREAM_STDERR, 1),
        ("retrying", pb.LOG_STREAM_STDOUT, 2),
    ]
    only_second = pb.ReadStepLogsRequest(run=run.name, step="second", attempt=2)
    texts = [ln.text async for b in service.stub.ReadStepLogs(only_second) for ln in b.lines]
    assert texts == ["retrying"]


async def test_follow_streams_lines_until_the_step_ends(service) -> None:
    run = await service.stub.CreateRun(create_request())
    run_id = run.name.removeprefix("runs/")
    sink = service.backend.sinks[run_id]
    await sink.step_changed(run_id, Step(name="first", state=StepState.RUNNING))
    buffer = service.backend.logs.setdefault((run_id, "first"), [])
    buffer.append(log("one"))
    stream = service.stub.ReadStepLogs(
        pb.ReadStepLogsRequest(run=run.name, step="first", follow=True)
    )
    first = await asyncio.wait_for(stream.read(), 5)
    assert [line.text for line in first.lines] == ["one"]
    buffer.append(log("two"))
    second = await asyncio.wait_for(stream.read(), 5)
    assert [line.text for line in second.lines] == ["two"]
    await sink.step_changed(run_id, Step(name="first", state=StepState.SUCCEEDED))
    assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("run_name", "step", "code"),
    [
        ("runs/ghost", "first", grpc.StatusCode.NOT_FOUND),
        (None, "nope", grpc.StatusCode.NOT_FOUND),
        ("ghost", "first", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_read_step_logs_errors(service, run_name, step, code) -> None:
    run = await service.stub.CreateRun(create_request())
    await finish_run(service, run, fail_second=True)
    request = pb.ReadStepLogsRequest(run=run_name or run.name, step=step)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in service.stub.ReadStepLogs(request):
            pass
    assert caught.value.code() == code


async def test_logs_unavailable_backend_is_failed_precondition(service, monkeypatch) -> None:
    from skit_pipelines.backends.base import Backend

    monkeypatch.setattr(type(service.backend), "read_logs", Backend.read_logs)
    run = await service.stub.CreateRun(create_request())
    await finish_run(service, run, fail_second=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in service.stub.ReadStepLogs(
            pb.ReadStepLogsRequest(run=run.name, step="first")
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_streams_per_principal_are_bounded_with_retry_info(service) -> None:
    service.controller._max_streams = 2
    run = await service.stub.CreateRun(create_request())
    streams = [service.stub.WatchRun(pb.WatchRunRequest(name=run.name)) for _ in range(2)]
    for stream in streams:
        await next_message(stream)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await next_message(service.stub.WatchRun(pb.WatchRunRequest(name=run.name)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(caught.value)
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR))
    assert retry.retry_delay.seconds == 5
    streams[0].cancel()
    for _ in range(100):
        if service.controller._streams.get("", 0) < 2:
            break
        await asyncio.sleep(0.01)
    third = service.stub.WatchRun(pb.WatchRunRequest(name=run.name))
    assert (await next_message(third)).revision == 1


async def test_a_watch_that_fails_frees_its_stream_slot(service) -> None:
    service.controller._max_streams = 1
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await next_message(service.stub.WatchRun(pb.WatchRunRequest(name="runs/missing")))
        # A slot kept by the failed watch would make the next one RESOURCE_EXHAUSTED.
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert service.controller._streams == {}


async def test_draining_server_refuses_new_runs_with_unavailable(service) -> None:
    run = await service.stub.CreateRun(create_request())
    await service.backend.sinks[run.name.removeprefix("runs/")].run_cancelled(
        run.name.removeprefix("runs/")
    )
    service.controller.drain()
    for call in (
        service.stub.CreateRun(create_request()),
        service.stub.RetryRun(pb.RetryRunRequest(name=run.name)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(caught.value)[0].reason == "SHUTTING_DOWN"
    assert (await service.stub.GetRun(pb.GetRunRequest(name=run.name))).name == run.name


def test_methods_are_served_by_the_generic_handler_alone() -> None:
    """Registered methods make grpc.aio's server loop wait on one pending request per
    method for every incoming call: PipelineService's methods must not be registered."""

    class RecordingServer:
        def __init__(self) -> None:
            self.generic: list[object] = []
            self.registered: list[str] = []

        def add_generic_rpc_handlers(self, handlers: tuple[object, ...]) -> None:
            self.generic.extend(handlers)

        def add_registered_method_handlers(self, service: str, handlers: object) -> None:
            self.registered.append(service)

    server = RecordingServer()
    servicer_module.add_to_server(
        servicer_module.PipelineServicer.__new__(servicer_module.PipelineServicer),
        server,  # type: ignore[arg-type]
    )
    assert len(server.generic) == 1 and server.registered == []
