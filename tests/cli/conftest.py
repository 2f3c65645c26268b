"""An in-process PipelineService with canned answers, for driving the CLI and the client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import (
    pipeline_pb2,
    pipeline_service_pb2,
    pipeline_service_pb2_grpc,
    run_pb2,
)

DOMAIN = "pipelines.skit.ai"
VERSION = "sha256:" + "3f2a9c1b4d5e" + "0" * 52


def timestamp(seconds_after_ten: int) -> timestamp_pb2.Timestamp:
    """2026-11-26T10:00:00Z plus the given seconds."""
    return timestamp_pb2.Timestamp(seconds=1795687200 + seconds_after_ten)


def pipelines() -> list[pipeline_pb2.Pipeline]:
    return [
        pipeline_pb2.Pipeline(
            name="pipelines/transcribe-calls",
            display_name="Transcribe calls",
            description="Transcribes a sample of calls.\nThen writes them to S3.",
            version=VERSION,
            parameters=[
                pipeline_pb2.PipelineParameter(
                    name="calls",
                    type=pipeline_pb2.PARAMETER_TYPE_INTEGER,
                    required=True,
                    description="How many calls to sample.",
                    rules=[
                        pipeline_pb2.ParameterRule(
                            description="from 1 to 1000",
                            range=pipeline_pb2.RangeRule(minimum=1, maximum=1000),
                        )
                    ],
                ),
                pipeline_pb2.PipelineParameter(
                    name="lang",
                    type=pipeline_pb2.PARAMETER_TYPE_STRING,
                    default_value=struct_pb2.Value(string_value="en"),
                    description="Language code.",
                ),
            ],
        ),
        pipeline_pb2.Pipeline(
            name="pipelines/train-intent",
            description="Trains an intent classifier.",
            version="sha256:" + "9" * 64,
            parameters=[
                pipeline_pb2.PipelineParameter(
                    name="epochs",
                    type=pipeline_pb2.PARAMETER_TYPE_INTEGER,
                    default_value=struct_pb2.Value(number_value=3),
                    description="Training epochs.",
                ),
                pipeline_pb2.PipelineParameter(
                    name="learning_rate",
                    type=pipeline_pb2.PARAMETER_TYPE_DOUBLE,
                    default_value=struct_pb2.Value(number_value=1),
                    description="Step size.",
                ),
            ],
        ),
    ]


def run(
    run_id: str = "abc",
    state: int = run_pb2.RUN_STATE_RUNNING,
    revision: int = 1,
    steps: Sequence[tuple[str, int] | run_pb2.Step] = (),
    pipeline: str = "pipelines/transcribe-calls",
    **fields: Any,
) -> run_pb2.Run:
    """A run snapshot; steps are Step messages or (name, StepState) pairs."""
    return run_pb2.Run(
        name=f"runs/{run_id}",
        pipeline=pipeline,
        state=state,
        revision=revision,
        create_time=timestamp(0),
        update_time=timestamp(revision),
        steps=[
            step if isinstance(step, run_pb2.Step) else run_pb2.Step(name=step[0], state=step[1])
            for step in steps
        ],
        **fields,
    )


def abort(
    context: grpc.ServicerContext,
    code: int,
    message: str,
    reason: str,
    violations: Sequence[tuple[str, str]] = (),
    metadata: dict[str, str] | None = None,
) -> None:
    """Aborts the way the real service does: google.rpc.Status with ErrorInfo and BadRequest."""
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    )
    if violations:
        status.details.add().Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=name, description=text)
                    for name, text in violations
                ]
            )
        )
    context.abort_with_status(rpc_status.to_status(status))


@dataclass
class FakePipelineService(pipeline_service_pb2_grpc.PipelineServiceServicer):
    """Serves canned pipelines and runs, one per page, and records every request."""

    runs: dict[str, run_pb2.Run] = field(default_factory=dict)
    snapshots: list[run_pb2.Run] = field(default_factory=list)
    """What WatchRun streams (after the requested revision)."""
    drop_watch_after: int | None = None
    """The first WatchRun fails with UNAVAILABLE after this many snapshots."""
    requests: list[Any] = field(default_factory=list)
    logs: dict[tuple[str, str], list[pipeline_service_pb2.LogLine]] = field(default_factory=dict)
    get_run_delay: float = 0.0
    """Seconds GetRun sleeps before answering, to run into deadlines."""

    def ListPipelines(self, request, context):
        self.requests.append(request)
        known = pipelines()
        start = int(request.page_token or 0)
        following = str(start + 1) if start + 1 < len(known) else ""
        return pipeline_service_pb2.ListPipelinesResponse(
            pipelines=known[start : start + 1], next_page_token=following
        )

    def GetPipeline(self, request, context):
        self.requests.append(request)
        for pipeline in pipelines():
            if pipeline.name == request.name:
                return pipeline
        abort(
            context,
            code_pb2.NOT_FOUND,
            f"pipeline {request.name} not found",
            "PIPELINE_NOT_FOUND",
        )

    def CreateRun(self, request, context):
        self.requests.append(request)
        if request.run.pipeline not in {p.name for p in pipelines()}:
            abort(
                context,
                code_pb2.NOT_FOUND,
                f"pipeline {request.run.pipeline} not found",
                "PIPELINE_NOT_FOUND",
            )
        calls = request.run.parameters.fields.get("calls")
        if calls is not None and not (
            calls.HasField("number_value") and calls.number_value.is_integer()
        ):
            # The service's message lists the violations the BadRequest holds too.
            abort(
                context,
                code_pb2.INVALID_ARGUMENT,
                f"invalid parameters for {request.run.pipeline}: run.parameters.calls: must"
                " be an integer, got 2.5; run.parameters.colour: unknown parameter",
                "INVALID_PARAMETERS",
                [
                    ("run.parameters.calls", "must be an integer, got 2.5"),
                    ("run.parameters.colour", "unknown parameter"),
                ],
            )
        created = run_pb2.Run(
            name=f"runs/{request.run_id or 'transcribe-calls-1'}",
            pipeline=request.run.pipeline,
            parameters=request.run.parameters,
            labels=request.run.labels,
            state=run_pb2.RUN_STATE_QUEUED,
            request_id=request.request_id,
            revision=1,
        )
        self.runs[created.name] = created
        return created

    def GetRun(self, request, context):
        self.requests.append(request)
        time.sleep(self.get_run_delay)
        if request.name not in self.runs:
            abort(context, code_pb2.NOT_FOUND, f"run {request.name} not found", "RUN_NOT_FOUND")
        return self.runs[request.name]

    def ListRuns(self, request, context):
        self.requests.append(request)
        ordered = list(self.runs.values())
        start = int(request.page_token or 0)
        end = start + (request.page_size or 50)
        return pipeline_service_pb2.ListRunsResponse(
            runs=ordered[start:end], next_page_token=str(end) if end < len(ordered) else ""
        )

    def CancelRun(self, request, context):
        self.requests.append(request)
        run = self.runs[request.name]
        if run.state in (
            run_pb2.RUN_STATE_SUCCEEDED,
            run_pb2.RUN_STATE_FAILED,
            run_pb2.RUN_STATE_CANCELLED,
        ):
            state = run_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")
            abort(
                context,
                code_pb2.FAILED_PRECONDITION,
                f"{request.name} already finished: it is {state}, so there is nothing to cancel",
                "RUN_ALREADY_FINISHED",
                metadata={"state": state},
            )
        cancelled = run_pb2.Run()
        cancelled.CopyFrom(run)
        cancelled.state = run_pb2.RUN_STATE_CANCELLING
        return cancelled

    def DeleteRun(self, request, context):
        self.requests.append(request)
        run = self.runs.get(request.name)
        if run is None:
            abort(context, code_pb2.NOT_FOUND, f"run {request.name} not found", "RUN_NOT_FOUND")
        if run.state in (run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_RUNNING):
            abort(
                context,
                code_pb2.FAILED_PRECONDITION,
                f"{request.name} has not finished",
                "RUN_NOT_FINISHED",
            )
        del self.runs[request.name]
        return empty_pb2.Empty()

    def RetryRun(self, request, context):
        self.requests.append(request)
        source = self.runs.get(request.name)
        if source is None:
            abort(context, code_pb2.NOT_FOUND, f"run {request.name} not found", "RUN_NOT_FOUND")
        retried = run_pb2.Run()
        retried.CopyFrom(source)
        retried.name = f"runs/{request.run_id or 'retried-1'}"
        retried.retry_of = source.name
        retried.state = run_pb2.RUN_STATE_QUEUED
        self.runs[retried.name] = retried
        return retried

    def ReadStepLogs(self, request, context):
        self.requests.append(request)
        lines = self.logs.get((request.run, request.step))
        if lines is None:
            abort(context, code_pb2.NOT_FOUND, f"no step {request.step}", "STEP_NOT_FOUND")
        for start in range(0, len(lines), 2):
            yield pipeline_service_pb2.ReadStepLogsResponse(lines=lines[start : start + 2])

    def WatchRun(self, request, context):
        self.requests.append(request)
        if not self.snapshots:
            abort(context, code_pb2.NOT_FOUND, f"run {request.name} not found", "RUN_NOT_FOUND")
        later = [s for s in self.snapshots if s.revision > request.after_revision]
        for sent, snapshot in enumerate(later):
            if self.drop_watch_after is not None and sent == self.drop_watch_after:
                self.drop_watch_after = None
                context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down")
            yield pipeline_service_pb2.WatchRunResponse(run=snapshot)

    def received(self, kind: type) -> list[Any]:
        return [request for request in self.requests if isinstance(request, kind)]


@pytest.fixture
def fake() -> FakePipelineService:
    return FakePipelineService()


@pytest.fixture
def server(fake: FakePipelineService) -> Iterator[str]:
    """The target ("127.0.0.1:port") of a server running `fake`."""
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server(fake, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}"
    grpc_server.stop(None)


@pytest.fixture
def make_run() -> Any:
    """The `run` snapshot builder (test modules cannot import conftest)."""
    return run


@pytest.fixture
def at() -> Any:
    """The `timestamp` builder: at(5) is 2026-11-26T10:00:05Z."""
    return timestamp
