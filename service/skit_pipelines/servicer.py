"""PipelineService over gRPC: proto <-> domain and error mapping, nothing else."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_pb2, pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2
from skit_pipelines import convert
from skit_pipelines.auth import current_principal
from skit_pipelines.domain import Run
from skit_pipelines.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PipelinesError,
    ResourceExhausted,
    Unavailable,
)
from skit_pipelines.grpc_types import ServicerContext, abort_with_status
from skit_pipelines.runs import CreateRunInput, ListRunsInput, RunController

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "pipelines.skit.ai"
_CONVERTED_REVISIONS = 1024
_LOG_BATCH_LINES = 500
_LOG_BATCH_WAIT = 0.05
_CODES: list[tuple[type[PipelinesError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (AlreadyExists, code_pb2.ALREADY_EXISTS),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
    (ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (Unavailable, code_pb2.UNAVAILABLE),
]


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def error_status(exc: BaseException) -> status_pb2.Status:
    """The one place domain errors become google.rpc.Status (with ErrorInfo and BadRequest)."""
    if not isinstance(exc, PipelinesError):
        logger.error("internal error", exc_info=exc)
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message="internal error; the server log has the details",
            details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
        )
    code = next((c for kind, c in _CODES if isinstance(exc, kind)), code_pb2.INTERNAL)
    metadata: dict[str, str] = {}
    details = []
    if isinstance(exc, AlreadyExists):
        metadata["existing"] = exc.resource_name
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(resource_type="Run", resource_name=exc.resource_name)
            )
        )
    details.insert(
        0,
        _pack(
            error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata)
        ),
    )
    if isinstance(exc, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=exc.retry_after))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if isinstance(exc, InvalidArgument) and exc.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=code, message=exc.message, details=details)


_Request = TypeVar("_Request")
_Item = TypeVar("_Item")
_Response = TypeVar("_Response")


@dataclass(frozen=True)
class _Malformed:
    """What the server receives instead of a request whose bytes do not parse."""

    message_type: str
    problem: str


def _lenient_parser(message_class: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    # grpc's own deserializer turns a parse failure into UNKNOWN; a malformed request is
    # the client's mistake, so it becomes INVALID_ARGUMENT in the handler wrappers.
    def parse(data: bytes) -> Message | _Malformed:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return _Malformed(message_class.DESCRIPTOR.full_name, str(error))

    return parse


def _reject_malformed(request: Any) -> None:
    if isinstance(request, _Malformed):
        raise InvalidArgument(
            f"the request is not a valid {request.message_type}: {request.problem}",
            reason="MALFORMED_REQUEST",
        )


def add_to_server(servicer: PipelineServicer, server: grpc.aio.Server) -> None:
    """Registers the servicer like the generated add_..._to_server, but with request
    parsers that let malformed bytes reach the error mapping."""
    service = pipeline_service_pb2.DESCRIPTOR.services_by_name["PipelineService"]
    handlers = {}
    for method in service.methods:
        parse = _lenient_parser(message_factory.GetMessageClass(method.input_type))
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=parse,
            response_serializer=serialize,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # grpc-stubs 1.53 predates registered method handlers (grpcio 1.63).
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


def _unary(
    method: Callable[[Any, _Request, ServicerContext], Awaitable[_Response]],
) -> Callable[[Any, _Request, ServicerContext], Awaitable[_Response]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: _Request, context: ServicerContext) -> _Response:
        try:
            _reject_malformed(request)
            return await method(self, request, context)
        except Exception as exc:
            await abort_with_status(context, rpc_status.to_status(error_status(exc)))

    return wrapper


def _streaming(
    method: Callable[[Any, _Request, ServicerContext], AsyncIterator[_Response]],
) -> Callable[[Any, _Request, ServicerContext], AsyncIterator[_Response]]:
    @functools.wraps(method)
    async def wrapper(
        self: Any, request: _Request, context: ServicerContext
    ) -> AsyncIterator[_Response]:
        try:
            _reject_malformed(request)
            async for item in method(self, request, context):
                yield item
        except Exception as exc:
            await abort_with_status(context, rpc_status.to_status(error_status(exc)))

    return wrapper


class PipelineServicer(pipeline_service_pb2_grpc.PipelineServiceServicer):
    def __init__(self, controller: RunController) -> None:
        self._controller = controller
        # Every watcher of a run is sent the same revisions: convert each one once.
        self._converted: OrderedDict[tuple[str, int], pipeline_service_pb2.WatchRunResponse] = (
            OrderedDict()
        )

    def _watch_message(self, run: Run) -> pipeline_service_pb2.WatchRunResponse:
        key = (run.id, run.revision)
        message = self._converted.get(key)
        if message is None:
            message = pipeline_service_pb2.WatchRunResponse(run=convert.run(run))
            self._converted[key] = message
            if len(self._converted) > _CONVERTED_REVISIONS:
                self._converted.popitem(last=False)
        return message

    @_unary
    async def ListPipelines(
        self, request: pipeline_service_pb2.ListPipelinesRequest, context: ServicerContext
    ) -> pipeline_service_pb2.ListPipelinesResponse:
        pipelines, next_token = self._controller.list_pipelines(
            request.page_size, request.page_token
        )
        return pipeline_service_pb2.ListPipelinesResponse(
            pipelines=[convert.pipeline(p) for p in pipelines], next_page_token=next_token
        )

    @_unary
    async def GetPipeline(
        self, request: pipeline_service_pb2.GetPipelineRequest, context: ServicerContext
    ) -> pipeline_pb2.Pipeline:
        return convert.pipeline(self._controller.get_pipeline(request.name), with_spec=True)

    @_unary
    async def CreateRun(
        self, request: pipeline_service_pb2.CreateRunRequest, context: ServicerContext
    ) -> run_pb2.Run:
        run = await self._controller.create_run(
            CreateRunInput(
                pipeline=request.run.pipeline,
                parameters=convert.from_struct(request.run.parameters, field="run.parameters"),
                labels=dict(request.run.labels),
                run_id=request.run_id,
                request_id=request.request_id,
                creator=current_principal().name,
            )
        )
        return convert.run(run)

    @_unary
    async def GetRun(
        self, request: pipeline_service_pb2.GetRunRequest, context: ServicerContext
    ) -> run_pb2.Run:
        # Converted once per revision, like the watchers' messages: a run is mostly polled
        # while nothing changes, and conversion is most of the cost of a call.
        return self._watch_message(await self._controller.get_run(request.name)).run

    @_unary
    async def ListRuns(
        self, request: pipeline_service_pb2.ListRunsRequest, context: ServicerContext
    ) -> pipeline_service_pb2.ListRunsResponse:
        runs, next_token = await self._controller.list_runs(
            ListRunsInput(
                pipeline=request.pipeline,
                states=tuple(request.states),
                labels=dict(request.labels),
                created_after=convert.from_timestamp(request.create_time_after)
                if request.HasField("create_time_after")
                else None,
                created_before=convert.from_timestamp(request.create_time_before)
                if request.HasField("create_time_before")
                else None,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        )
        return pipeline_service_pb2.ListRunsResponse(
            runs=[convert.run(r) for r in runs], next_page_token=next_token
        )

    @_unary
    async def CancelRun(
        self, request: pipeline_service_pb2.CancelRunRequest, context: ServicerContext
    ) -> run_pb2.Run:
        run = await self._controller.cancel_run(request.name, principal=current_principal())
        return convert.run(run)

    @_streaming
    async def WatchRun(
        self, request: pipeline_service_pb2.WatchRunRequest, context: ServicerContext
    ) -> AsyncIterator[pipeline_service_pb2.WatchRunResponse]:
        runs = self._controller.watch_run(
            request.name, request.after_revision, principal=current_principal()
        )
        async for run in runs:
            yield self._watch_message(run)

    @_unary
    async def RetryRun(
        self, request: pipeline_service_pb2.RetryRunRequest, context: ServicerContext
    ) -> run_pb2.Run:
        run = await self._controller.retry_run(
            request.name,
            run_id=request.run_id,
            request_id=request.request_id,
            principal=current_principal(),
        )
        return convert.run(run)

    @_streaming
    async def ReadStepLogs(
        self, request: pipeline_service_pb2.ReadStepLogsRequest, context: ServicerContext
    ) -> AsyncIterator[pipeline_service_pb2.ReadStepLogsResponse]:
        lines = self._controller.read_step_logs(
            request.run,
            request.step,
            follow=request.follow,
            attempt=request.attempt,
            principal=current_principal(),
        )
        async for batch in batched(lines, max_items=_LOG_BATCH_LINES, max_wait=_LOG_BATCH_WAIT):
            yield pipeline_service_pb2.ReadStepLogsResponse(
                lines=[convert.log_line(line) for line in batch]
            )


async def batched(
    items: AsyncIterator[_Item], *, max_items: int, max_wait: float
) -> AsyncIterator[list[_Item]]:
    """Groups a stream into lists: a list is sent when full, or when `max_wait` passes
    without a new item, so a followed log is neither chatty nor delayed."""
    iterator = aiter(items)
    batch: list[_Item] = []
    pending: asyncio.Task[_Item] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=max_wait if batch else None)
            if not done:
                yield batch
                batch = []
                continue
            try:
                batch.append(pending.result())
            except StopAsyncIteration:
                break
            finally:
                pending = None
            if len(batch) >= max_items:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        if pending is not None:
            pending.cancel()
