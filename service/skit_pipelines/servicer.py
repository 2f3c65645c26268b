"""PipelineService over gRPC: proto <-> domain and error mapping, nothing else."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2, empty_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import (
    pipeline_pb2,
    pipeline_service_pb2,
    pipeline_service_pb2_grpc,
    run_pb2,
    schedule_pb2,
    subscription_pb2,
)
from skit_pipelines import convert, request_fields
from skit_pipelines.auth import current_principal
from skit_pipelines.domain import Run
from skit_pipelines.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PipelinesError,
    ResourceExhausted,
    Unavailable,
)
from skit_pipelines.grpc_types import ServicerContext, abort_with_status
from skit_pipelines.memory import MemoryReclaimer
from skit_pipelines.run_feed import FeedKind, encode_cursor
from skit_pipelines.runs import CreateRunInput, ListRunsInput, RunController, WatchRunsInput

if TYPE_CHECKING:
    from skit_pipelines.notifications.controller import SubscriptionController
    from skit_pipelines.schedules import ScheduleController

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "pipelines.skit.ai"
_CONVERTED_REVISIONS = 1024
_LOG_BATCH_LINES = 500
_LOG_BATCH_WAIT = 0.05
# An error travels in the response trailers, which a gRPC client accepts up to 8 KiB:
# grpc-message (percent-encoded, up to 3 bytes a byte) and grpc-status-details-bin (the
# Status, message included, in base64) must fit together with the other headers.
_MAX_ERROR_MESSAGE_BYTES = 512
_MAX_STATUS_BYTES = 3 * 1024
_MAX_VIOLATION_TEXT_BYTES = 256
_MORE_VIOLATIONS_RESERVE = 128
"""Room kept for the "… and N more" violation."""
_LIST_RESPONSE_RESERVE = 4 * 1024
"""Room kept in a ListRuns response for its next_page_token and framing."""
_REPEATED_ITEM_OVERHEAD = 6
"""A repeated message field's tag and length prefix, at most."""
_DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
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
    metadata: dict[str, str] = dict(exc.metadata)
    details = []
    if isinstance(exc, AlreadyExists):
        metadata["existing"] = exc.resource_name
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type=_resource_type(exc.resource_name),
                    resource_name=exc.resource_name,
                )
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
    message = _clip(exc.message, _MAX_ERROR_MESSAGE_BYTES)
    if isinstance(exc, InvalidArgument) and exc.violations:
        used = status_pb2.Status(code=code, message=message, details=details).ByteSize()
        details.append(_pack(_bad_request(exc.violations, _MAX_STATUS_BYTES - used)))
    return status_pb2.Status(code=code, message=message, details=details)


def _resource_type(name: str) -> str:
    if name.startswith("schedules/"):
        return "Schedule"
    if name.startswith("subscriptions/"):
        return "Subscription"
    return "Run"


def _clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (an ellipsis marks a cut)."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    ellipsis = "…"
    kept = encoded[: max_bytes - len(ellipsis.encode())].decode(errors="ignore")
    return kept + ellipsis


def _bad_request(violations: list[FieldViolation], budget: int) -> error_details_pb2.BadRequest:
    """The violations that fit in `budget` bytes, then one "… and N more" in their place:
    10,000 unknown parameters must still reach the client as INVALID_ARGUMENT."""
    bad = error_details_pb2.BadRequest()
    for index, violation in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_clip(violation.field, _MAX_VIOLATION_TEXT_BYTES),
            description=_clip(violation.description, _MAX_VIOLATION_TEXT_BYTES),
        )
        size = item.ByteSize() + _REPEATED_ITEM_OVERHEAD
        if bad.ByteSize() + size > budget - _MORE_VIOLATIONS_RESERVE:
            rest = violations[index:]
            bad.field_violations.add(
                field=_clip(_common_parent([v.field for v in rest]), _MAX_VIOLATION_TEXT_BYTES),
                description=f"… and {len(rest)} more",
            )
            break
        bad.field_violations.append(item)
    return bad


def _common_parent(fields: list[str]) -> str:
    """The longest dotted prefix the fields share ("run.parameters" for parameters)."""
    parts = [f.split(".") for f in fields]
    shared: list[str] = []
    for segments in zip(*parts, strict=False):
        if len(set(segments)) != 1:
            break
        shared.append(segments[0])
    return ".".join(shared)


_Request = TypeVar("_Request")
_Item = TypeVar("_Item")
_Response = TypeVar("_Response")


@dataclass(frozen=True)
class _Refused:
    """What the server receives instead of a request whose bytes do not parse, or that is
    larger than the limit: the handler wrappers answer it with INVALID_ARGUMENT."""

    error: InvalidArgument


def _lenient_parser(
    message_class: type[Message], max_bytes: int
) -> Callable[[bytes], Message | _Refused]:
    # grpc's own deserializer turns a parse failure into UNKNOWN; a malformed request is
    # the client's mistake, so it becomes INVALID_ARGUMENT in the handler wrappers.
    full_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | _Refused:
        try:
            message = message_class.FromString(data)
        except DecodeError as error:
            broken = request_fields.not_utf8(message_class, data)
            if broken:
                return _Refused(
                    InvalidArgument(
                        f"strings must be UTF-8; {', '.join(broken)} is not",
                        violations=[FieldViolation(f, "must be UTF-8") for f in broken],
                        reason="MALFORMED_REQUEST",
                    )
                )
            return _Refused(
                InvalidArgument(
                    f"the request is not a valid {full_name}: {error}",
                    reason="MALFORMED_REQUEST",
                )
            )
        if len(data) > max_bytes:
            field, size = request_fields.largest_field(message_class, data)
            return _Refused(
                InvalidArgument(
                    f"the request is {len(data)} bytes, more than the limit of {max_bytes};"
                    f" its largest field, {field or 'none'}, is {size} bytes",
                    field=field or "request",
                    reason="REQUEST_TOO_LARGE",
                )
            )
        return message

    return parse


def _reject_refused(request: Any) -> None:
    if isinstance(request, _Refused):
        raise request.error


_PRESERIALIZED = frozenset({"GetRun", "WatchRun"})
"""Methods whose handlers answer with each revision's bytes, encoded once for every call and
stream (see PipelineServicer._convert): registered with no response serializer, which gRPC
then sends as they are (a pass-through function would cost a call per message)."""


def add_to_server(
    servicer: PipelineServicer,
    server: grpc.aio.Server,
    *,
    max_request_bytes: int = _DEFAULT_MAX_REQUEST_BYTES,
) -> None:
    """Registers the servicer like the generated add_..._to_server, but with request
    parsers that let malformed bytes, and requests over `max_request_bytes`, reach the
    error mapping.

    Only as a generic handler, unlike the generated code (grpcio >= 1.63), which also
    registers each method with the core: grpc.aio's server loop keeps one pending
    request per registered method and waits on all of them (`asyncio.wait`) for every
    incoming call, so our 27 methods cost each call about 30% more server CPU than the
    generic handler's dict lookup (callgrind, GetRun: 627k against 486k instructions)."""
    service = pipeline_service_pb2.DESCRIPTOR.services_by_name["PipelineService"]
    handlers = {}
    for method in service.methods:
        parse = _lenient_parser(
            message_factory.GetMessageClass(method.input_type), max_request_bytes
        )
        serialize: Callable[[Any], bytes] | None = (
            None
            if method.name in _PRESERIALIZED
            else message_factory.GetMessageClass(method.output_type).SerializeToString
        )
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


def _unary(
    method: Callable[[Any, _Request, ServicerContext], Awaitable[_Response]],
) -> Callable[[Any, _Request, ServicerContext], Awaitable[_Response]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: _Request, context: ServicerContext) -> _Response:
        try:
            _reject_refused(request)
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
            _reject_refused(request)
            async for item in method(self, request, context):
                yield item
        except Exception as exc:
            await abort_with_status(context, rpc_status.to_status(error_status(exc)))

    return wrapper


_FEED_KINDS = {
    FeedKind.CHANGE: pipeline_service_pb2.WatchRunsResponse.KIND_CHANGE,
    FeedKind.DELETED: pipeline_service_pb2.WatchRunsResponse.KIND_DELETED,
    FeedKind.SNAPSHOT: pipeline_service_pb2.WatchRunsResponse.KIND_SNAPSHOT,
    FeedKind.SNAPSHOT_COMPLETE: pipeline_service_pb2.WatchRunsResponse.KIND_SNAPSHOT_COMPLETE,
    FeedKind.RELIST: pipeline_service_pb2.WatchRunsResponse.KIND_RELIST,
    FeedKind.HEARTBEAT: pipeline_service_pb2.WatchRunsResponse.KIND_HEARTBEAT,
}


def _run_filter(
    request: pipeline_service_pb2.ListRunsRequest | pipeline_service_pb2.WatchRunsRequest,
) -> ListRunsInput:
    """The filter fields ListRuns and WatchRuns share."""
    return ListRunsInput(
        pipeline=request.pipeline,
        states=tuple(request.states),
        labels=dict(request.labels),
        created_after=convert.from_timestamp(request.create_time_after, field="create_time_after")
        if request.HasField("create_time_after")
        else None,
        created_before=convert.from_timestamp(
            request.create_time_before, field="create_time_before"
        )
        if request.HasField("create_time_before")
        else None,
    )


@dataclass(frozen=True)
class _Converted:
    """One revision as a WatchRunResponse, its bytes as every watcher is sent them, and
    the Run's bytes as every GetRun answers them."""

    message: pipeline_service_pb2.WatchRunResponse
    data: bytes
    run_data: bytes


class PipelineServicer(pipeline_service_pb2_grpc.PipelineServiceServicer):
    def __init__(
        self,
        controller: RunController,
        *,
        max_message_bytes: int = _DEFAULT_MAX_MESSAGE_BYTES,
        schedules: Callable[[], ScheduleController] | None = None,
        subscriptions: Callable[[], SubscriptionController] | None = None,
        reclaimer: MemoryReclaimer | None = None,
    ) -> None:
        self._controller = controller
        self._reclaimer = reclaimer or MemoryReclaimer()
        self._schedules = schedules
        self._subscriptions = subscriptions
        self._max_message_bytes = max_message_bytes
        # Every watcher of a run is sent the same revisions: convert and serialize each
        # one once, not once per stream. The creation time is in the key: a deleted run's
        # id may be used again.
        self._converted: OrderedDict[tuple[str, int, datetime], _Converted] = OrderedDict()
        # A revision's watchers are all sent the one snapshot the hub keeps, one after the
        # other: the same object, converted last time, needs no key built and hashed.
        self._last_converted: tuple[Run, _Converted] | None = None
        self._step_messages = convert.StepMessages()

    def _convert(self, run: Run) -> _Converted:
        last = self._last_converted
        if last is not None and last[0] is run:
            return last[1]
        key = (run.id, run.revision, run.create_time)
        converted = self._converted.get(key)
        if converted is None:
            message = pipeline_service_pb2.WatchRunResponse(
                run=convert.run(run, self._step_messages)
            )
            converted = _Converted(
                message, message.SerializeToString(), message.run.SerializeToString()
            )
            self._converted[key] = converted
            if len(self._converted) > _CONVERTED_REVISIONS:
                self._converted.popitem(last=False)
        self._last_converted = (run, converted)
        return converted

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
                disable_cache=request.run.disable_cache,
            )
        )
        return convert.run(run)

    async def GetRun(
        self, request: pipeline_service_pb2.GetRunRequest, context: ServicerContext
    ) -> bytes:
        """Answers with the serialized Run (registered with a pass-through serializer).

        Converted and serialized once per revision, like the watchers' messages: a run is
        mostly polled while nothing changes, and conversion is most of the cost of a call.
        The error mapping of `_unary` is inlined: one coroutine per call.
        """
        try:
            _reject_refused(request)
            return self._convert(await self._controller.get_run(request.name)).run_data
        except Exception as exc:
            await abort_with_status(context, rpc_status.to_status(error_status(exc)))

    @_unary
    async def ListRuns(
        self, request: pipeline_service_pb2.ListRunsRequest, context: ServicerContext
    ) -> pipeline_service_pb2.ListRunsResponse:
        query = replace(
            _run_filter(request), page_size=request.page_size, page_token=request.page_token
        )
        runs, next_token = await self._controller.list_runs(query)
        response = pipeline_service_pb2.ListRunsResponse()
        budget = self._max_message_bytes - _LIST_RESPONSE_RESERVE
        for index, run in enumerate(runs):
            message = convert.run(run)
            budget -= message.ByteSize() + _REPEATED_ITEM_OVERHEAD
            # A page ends early rather than exceed the message limit (which would fail
            # the call for good); it always holds one run, so paging moves on.
            if budget < 0 and index > 0:
                next_token = self._controller.page_token_after(query, runs[index - 1])
                break
            response.runs.append(message)
        response.next_page_token = next_token
        return response

    @_unary
    async def CancelRun(
        self, request: pipeline_service_pb2.CancelRunRequest, context: ServicerContext
    ) -> run_pb2.Run:
        run = await self._controller.cancel_run(request.name, principal=current_principal())
        return convert.run(run)

    async def WatchRun(
        self, request: pipeline_service_pb2.WatchRunRequest, context: ServicerContext
    ) -> AsyncIterator[bytes]:
        """Yields serialized WatchRunResponses (registered with a pass-through serializer).

        The error mapping of `_streaming` is inlined, and the store's follower driven
        here (RunFollower.revisions' loop, inlined): one generator between a revision and
        each of its streams.
        """
        self._reclaimer.stream_opened()
        try:
            _reject_refused(request)
            watching = self._controller.watching(
                request.name, request.after_revision, principal=current_principal()
            )
            async with watching as follower:
                runs = await follower.first()
                while True:
                    for run in runs:
                        yield self._convert(run).data
                    if follower.done:
                        break
                    runs = follower.take() or await follower.next()
        except Exception as exc:
            await abort_with_status(context, rpc_status.to_status(error_status(exc)))
        finally:
            self._reclaimer.stream_closed()

    @_streaming
    async def WatchRuns(
        self, request: pipeline_service_pb2.WatchRunsRequest, context: ServicerContext
    ) -> AsyncIterator[pipeline_service_pb2.WatchRunsResponse]:
        events = self._controller.watch_runs(
            WatchRunsInput(
                filter=_run_filter(request),
                after_cursor=request.after_cursor,
                initial_snapshot=request.initial_snapshot,
            ),
            principal=current_principal(),
        )
        async for event in events:
            response = pipeline_service_pb2.WatchRunsResponse(
                kind=_FEED_KINDS[event.kind],
                cursor=encode_cursor(event.cursor) if event.kind is not FeedKind.SNAPSHOT else "",
            )
            if event.run is not None:
                # The converted revision WatchRun and GetRun share, not a new conversion.
                response.run.CopyFrom(self._convert(event.run).message.run)
            yield response

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

    @_unary
    async def DeleteRun(
        self, request: pipeline_service_pb2.DeleteRunRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        await self._controller.delete_run(request.name, principal=current_principal())
        return empty_pb2.Empty()

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

    # Schedules (schedules.py). Their modules, schedule_convert's included, are imported
    # at the first call (or after SERVING), not by the server's start.

    def _schedule_controller(self) -> ScheduleController:
        if self._schedules is None:
            raise FailedPrecondition(
                "this server runs no scheduler", reason="SCHEDULES_UNAVAILABLE"
            )
        return self._schedules()

    @_unary
    async def CreateSchedule(
        self, request: pipeline_service_pb2.CreateScheduleRequest, context: ServicerContext
    ) -> schedule_pb2.Schedule:
        from skit_pipelines import schedule_convert

        schedule = await self._schedule_controller().create_schedule(
            schedule_convert.spec(request.schedule),
            schedule_id=request.schedule_id,
            request_id=request.request_id,
            principal=current_principal(),
        )
        return schedule_convert.schedule(schedule)

    @_unary
    async def GetSchedule(
        self, request: pipeline_service_pb2.GetScheduleRequest, context: ServicerContext
    ) -> schedule_pb2.Schedule:
        from skit_pipelines import schedule_convert

        schedule = await self._schedule_controller().get_schedule(request.name)
        return schedule_convert.schedule(schedule)

    @_unary
    async def ListSchedules(
        self, request: pipeline_service_pb2.ListSchedulesRequest, context: ServicerContext
    ) -> pipeline_service_pb2.ListSchedulesResponse:
        from skit_pipelines import schedule_convert

        schedules, next_token = await self._schedule_controller().list_schedules(
            request.page_size, request.page_token
        )
        return pipeline_service_pb2.ListSchedulesResponse(
            schedules=[schedule_convert.schedule(s) for s in schedules],
            next_page_token=next_token,
        )

    @_unary
    async def UpdateSchedule(
        self, request: pipeline_service_pb2.UpdateScheduleRequest, context: ServicerContext
    ) -> schedule_pb2.Schedule:
        from skit_pipelines import schedule_convert

        schedule = await self._schedule_controller().update_schedule(
            request.schedule.name,
            schedule_convert.spec(request.schedule),
            list(request.update_mask.paths),
            principal=current_principal(),
        )
        return schedule_convert.schedule(schedule)

    @_unary
    async def PauseSchedule(
        self, request: pipeline_service_pb2.PauseScheduleRequest, context: ServicerContext
    ) -> schedule_pb2.Schedule:
        from skit_pipelines import schedule_convert

        schedule = await self._schedule_controller().pause_schedule(
            request.name, request.reason, principal=current_principal()
        )
        return schedule_convert.schedule(schedule)

    @_unary
    async def ResumeSchedule(
        self, request: pipeline_service_pb2.ResumeScheduleRequest, context: ServicerContext
    ) -> schedule_pb2.Schedule:
        from skit_pipelines import schedule_convert

        schedule = await self._schedule_controller().resume_schedule(
            request.name, principal=current_principal()
        )
        return schedule_convert.schedule(schedule)

    @_unary
    async def DeleteSchedule(
        self, request: pipeline_service_pb2.DeleteScheduleRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        await self._schedule_controller().delete_schedule(
            request.name, principal=current_principal()
        )
        return empty_pb2.Empty()

    @_unary
    async def BackfillSchedule(
        self, request: pipeline_service_pb2.BackfillScheduleRequest, context: ServicerContext
    ) -> pipeline_service_pb2.BackfillScheduleResponse:
        runs = await self._schedule_controller().backfill_schedule(
            request.name,
            convert.from_timestamp(request.start_time, field="start_time")
            if request.HasField("start_time")
            else None,
            convert.from_timestamp(request.end_time, field="end_time")
            if request.HasField("end_time")
            else None,
            principal=current_principal(),
        )
        return pipeline_service_pb2.BackfillScheduleResponse(
            runs=[convert.run(run) for run in runs]
        )

    # Subscriptions (notifications/). Imported as the schedules' modules are.

    def _subscription_controller(self) -> SubscriptionController:
        if self._subscriptions is None:
            raise FailedPrecondition(
                "this server sends no notifications", reason="SUBSCRIPTIONS_UNAVAILABLE"
            )
        return self._subscriptions()

    @_unary
    async def CreateSubscription(
        self, request: pipeline_service_pb2.CreateSubscriptionRequest, context: ServicerContext
    ) -> subscription_pb2.Subscription:
        from skit_pipelines import subscription_convert

        subscription = await self._subscription_controller().create_subscription(
            subscription_convert.spec(request.subscription),
            subscription_id=request.subscription_id,
            request_id=request.request_id,
            principal=current_principal(),
        )
        return subscription_convert.subscription(subscription)

    @_unary
    async def GetSubscription(
        self, request: pipeline_service_pb2.GetSubscriptionRequest, context: ServicerContext
    ) -> subscription_pb2.Subscription:
        from skit_pipelines import subscription_convert

        subscription = await self._subscription_controller().get_subscription(request.name)
        return subscription_convert.subscription(subscription)

    @_unary
    async def ListSubscriptions(
        self, request: pipeline_service_pb2.ListSubscriptionsRequest, context: ServicerContext
    ) -> pipeline_service_pb2.ListSubscriptionsResponse:
        from skit_pipelines import subscription_convert

        subscriptions, next_token = await self._subscription_controller().list_subscriptions(
            request.page_size, request.page_token
        )
        return pipeline_service_pb2.ListSubscriptionsResponse(
            subscriptions=[subscription_convert.subscription(s) for s in subscriptions],
            next_page_token=next_token,
        )

    @_unary
    async def DeleteSubscription(
        self, request: pipeline_service_pb2.DeleteSubscriptionRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        await self._subscription_controller().delete_subscription(
            request.name, principal=current_principal()
        )
        return empty_pb2.Empty()

    @_unary
    async def ListDeliveries(
        self, request: pipeline_service_pb2.ListDeliveriesRequest, context: ServicerContext
    ) -> pipeline_service_pb2.ListDeliveriesResponse:
        from skit_pipelines import subscription_convert

        deliveries, next_token = await self._subscription_controller().list_deliveries(
            request.parent, request.page_size, request.page_token
        )
        return pipeline_service_pb2.ListDeliveriesResponse(
            deliveries=[subscription_convert.delivery(d) for d in deliveries],
            next_page_token=next_token,
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
