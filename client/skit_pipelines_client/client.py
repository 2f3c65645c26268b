"""A small typed client for PipelineService, over the generated stubs.

Calls return the dataclasses of `skit_pipelines_client.resources` (Run, Step, Pipeline):
states as enums that print their names, times as datetimes, and parameter and output
values typed by the pipeline, which the client reads once per pipeline version with
GetPipeline. Each keeps the message it came from in `raw`.

Every failed call raises `RPCError`, which carries the status code and the
google.rpc.Status details the service attaches (ErrorInfo, BadRequest).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_service_pb2, run_pb2
from skit_pipelines_client._stubs import async_stub, sync_stub
from skit_pipelines_client.resources import (
    UNTYPED,
    LogLine,
    Pipeline,
    Run,
    RunState,
    ValueTypes,
)
from skit_pipelines_client.run_changes import ChangeKind, FeedResumption, RunChange
from skit_pipelines_client.schedules import (
    Schedule,
    backfill_request,
    create_schedule_request,
    schedule_name,
    update_schedule_request,
)
from skit_pipelines_client.subscriptions import (
    Delivery,
    Subscription,
    create_subscription_request,
    subscription_name,
)

logger = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _PageRequest(Protocol):
    page_token: str


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


_PageRequestT = TypeVar("_PageRequestT", bound=_PageRequest)
_PageT = TypeVar("_PageT", bound=_Page)

RUNS_PREFIX = "runs/"
PIPELINES_PREFIX = "pipelines/"

# GetPipeline carries the compiled IR, which can outgrow gRPC's 4 MiB default; this
# matches the server's default limit (ServerConfig.max_message_bytes).
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
)
_TYPES_KEPT = 64
"""Pipeline versions whose value types a client keeps."""


def run_name(run: str) -> str:
    """Returns "runs/{run}" for either "abc" or "runs/abc"."""
    return run if run.startswith(RUNS_PREFIX) else RUNS_PREFIX + run


def pipeline_name(pipeline: str) -> str:
    """Returns "pipelines/{pipeline}" for either "x" or "pipelines/x"."""
    return pipeline if pipeline.startswith(PIPELINES_PREFIX) else PIPELINES_PREFIX + pipeline


@dataclass(frozen=True)
class FieldViolation:
    """One entry of a google.rpc.BadRequest."""

    field: str
    """The offending request field, e.g. "run.parameters.calls"."""
    description: str
    """Why it was rejected."""


class RPCError(Exception):
    """A call to PipelineService failed.

    Attributes:
        code: The gRPC status code.
        message: The status message.
        reason: ErrorInfo.reason (a stable identifier such as "RUN_NOT_FOUND"), or "".
        domain: ErrorInfo.domain, or "".
        metadata: ErrorInfo.metadata.
        violations: The BadRequest field violations, if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)

    @property
    def retryable(self) -> bool:
        """Whether retrying may help; the service promises this only for UNAVAILABLE."""
        return self.code is grpc.StatusCode.UNAVAILABLE

    @classmethod
    def from_grpc(cls, error: grpc.RpcError) -> RPCError:
        """Reads the code, message and rich details of a failed call."""
        # grpc.aio's errors carry the same code, details and trailers, but are no grpc.Call.
        if not isinstance(error, grpc.Call | grpc.aio.AioRpcError):
            return cls(grpc.StatusCode.UNKNOWN, str(error))
        code = error.code() or grpc.StatusCode.UNKNOWN
        message = error.details() or ""
        try:
            # AioRpcError has the code(), details() and trailing_metadata() that from_call reads.
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except ValueError:
            # from_call rejects details whose code or message disagree with the call's;
            # the plain code and message are still worth reporting.
            logger.debug("inconsistent google.rpc.Status in trailers of a %s error", code.name)
            status = None
        if status is None:
            return cls(code, message)
        reason, domain, metadata = "", "", {}
        violations: list[FieldViolation] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
        return cls(
            code,
            status.message or message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            violations=violations,
        )


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


# grpc-stubs makes the interceptor classes generic; at run time they are not subscriptable.
class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds `authorization: Bearer <token>` to every call (also over plain loopback
    channels, where gRPC's own call credentials refuse to go)."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=[*(details.metadata or ()), self._metadata],
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=details.compression,
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Message], grpc.CallFuture[Message]],
        client_call_details: grpc.ClientCallDetails,
        request: Message,
    ) -> grpc.CallFuture[Message]:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Message], grpc.CallIterator[Message]],
        client_call_details: grpc.ClientCallDetails,
        request: Message,
    ) -> grpc.CallIterator[Message]:
        return continuation(self._with_token(client_call_details), request)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


@dataclass(frozen=True)
class TlsOptions:
    """How the client verifies the server and, for mutual TLS, proves who it is."""

    ca_cert: Path | None = None
    """PEM roots to trust (default: the system's)."""
    client_cert: Path | None = None
    client_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_cert),
            private_key=read(self.client_key),
            certificate_chain=read(self.client_cert),
        )


@dataclass(frozen=True)
class ResumePolicy:
    """How `PipelinesClient.watch` resumes a stream that failed with UNAVAILABLE."""

    attempts: int = 5
    """Failures in a row before the error is raised; every revision received resets the
    count."""
    first_delay: float = 0.5
    """Seconds before the first reconnect; the pause doubles each time, up to max_delay."""
    max_delay: float = 8.0
    """The longest pause between reconnects, in seconds."""
    jitter: float = 0.2
    """Each pause is shortened by up to this fraction at random, so the watchers of a
    restarted server do not all come back at the same instant."""

    def delay(self, failures: int) -> float:
        """The pause after `failures` earlier failures in a row (0 for the first)."""
        base = min(self.first_delay * 2.0**failures, self.max_delay)
        return base * (1 - self.jitter * random.random())


class _TypeCache:
    """The value types of the pipeline versions a client has seen runs of.

    A run names its pipeline and version; the types come from GetPipeline of that
    pipeline (the version the server has now: a parameter keeps its type across versions
    far more often than not). A pipeline the server cannot give (gone, or a server without
    GetPipeline) reads untyped, and is not asked for again; a transient failure (UNAVAILABLE,
    DEADLINE_EXCEEDED) is asked again next time.
    """

    def __init__(self) -> None:
        self._types: OrderedDict[tuple[str, str], ValueTypes] = OrderedDict()

    def known(self, run: run_pb2.Run) -> ValueTypes | None:
        """The types for `run` if known (UNTYPED for a run without a pipeline)."""
        if not run.pipeline:
            return UNTYPED
        types = self._types.get((run.pipeline, run.pipeline_version))
        if types is not None:
            self._types.move_to_end((run.pipeline, run.pipeline_version))
        return types

    def learn(self, run: run_pb2.Run, pipeline: Pipeline | RPCError) -> ValueTypes:
        """Keeps what GetPipeline of `run`'s pipeline returned (or failed with)."""
        if isinstance(pipeline, RPCError):
            if pipeline.code in _TRANSIENT:
                return UNTYPED
            logger.debug("no value types for %s: %s", run.pipeline, pipeline)
            types = UNTYPED
        else:
            types = pipeline.value_types
        self.remember((run.pipeline, run.pipeline_version), types)
        return types

    def remember(self, key: tuple[str, str], types: ValueTypes) -> None:
        self._types[key] = types
        self._types.move_to_end(key)
        while len(self._types) > _TYPES_KEPT:
            self._types.popitem(last=False)


_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class PipelinesClient:
    """A synchronous PipelineService client. Use it as a context manager, or call close().

    Args:
        target: "host:port" of the service.
        timeout: Deadline in seconds of every unary call. WatchRun has none.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        if tls is None:
            channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.secure_channel(target, tls.credentials(), options=_CHANNEL_OPTIONS)
        self._raw_channel = channel
        if token is not None:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self._channel = channel
        self._stub = sync_stub(self._channel)
        self._types = _TypeCache()

    def close(self) -> None:
        """Closes the channel; calls in flight, watches included, end with CANCELLED."""
        self._raw_channel.close()

    def __enter__(self) -> PipelinesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise RPCError.from_grpc(error) from error

    def _pages(
        self, method: grpc.UnaryUnaryMultiCallable[_PageRequestT, _PageT], request: _PageRequestT
    ) -> Iterator[_PageT]:
        """Each page of a List call, following next_page_token until there is none."""
        while True:
            response = self._call(method, request)
            yield response
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def _run(self, message: run_pb2.Run) -> Run:
        """The message as a Run, its values typed (asking GetPipeline once per version)."""
        types = self._types.known(message)
        if types is None:
            try:
                pipeline: Pipeline | RPCError = self.get_pipeline(message.pipeline)
            except RPCError as error:
                pipeline = error
            types = self._types.learn(message, pipeline)
        return Run.of(message, types)

    def list_pipelines(self) -> list[Pipeline]:
        """Every pipeline that can be run, sorted by name (without pipeline_spec)."""
        request = pipeline_service_pb2.ListPipelinesRequest()
        return [
            Pipeline.of(item)
            for page in self._pages(self._stub.ListPipelines, request)
            for item in page.pipelines
        ]

    def get_pipeline(self, pipeline: str) -> Pipeline:
        """One pipeline, "x" or "pipelines/x", with its compiled IR."""
        request = pipeline_service_pb2.GetPipelineRequest(name=pipeline_name(pipeline))
        found = Pipeline.of(self._call(self._stub.GetPipeline, request))
        self._types.remember((found.name, found.version), found.value_types)
        return found

    def create_run(
        self,
        pipeline: str,
        parameters: Mapping[str, Any],
        labels: Mapping[str, str],
        run_id: str | None = None,
        request_id: str | None = None,
        *,
        disable_cache: bool = False,
    ) -> Run:
        """Starts a run of `pipeline`.

        Args:
            pipeline: "x" or "pipelines/x".
            parameters: JSON-like values; numbers travel as doubles, which the service
                accepts for INTEGER parameters when they are whole.
            labels: User labels for filtering.
            run_id: The id of the new run; chosen by the service when None.
            request_id: An idempotency key: repeating the call with it returns the same run.
            disable_cache: Turn the step cache off for this run, as the KFP SDK's
                `enable_caching=False`: every step runs, none reuses an earlier result
                (on the local executor, what succeeds is still cached for later runs).

        Raises:
            RPCError: INVALID_ARGUMENT with a field violation per bad parameter (wrong
                type, unknown, missing, or breaking one of the pipeline's rules).
        """
        request = _create_run_request(
            pipeline, parameters, labels, run_id, request_id, disable_cache
        )
        return self._run(self._call(self._stub.CreateRun, request))

    def get_run(self, run: str) -> Run:
        """The current state of a run, "abc" or "runs/abc"."""
        request = pipeline_service_pb2.GetRunRequest(name=run_name(run))
        return self._run(self._call(self._stub.GetRun, request))

    def list_runs(
        self,
        pipeline: str | None = None,
        states: Iterable[RunState | int] = (),
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int | None = None,
    ) -> Iterator[Run]:
        """Runs matching all the given filters, newest first, fetched page by page as consumed.

        Args:
            pipeline: Only runs of this pipeline.
            states: Only runs in one of these states.
            labels: Only runs having all these labels.
            created_after: Only runs created at or after this time (naive means UTC).
            created_before: Only runs created before this time (naive means UTC).
            page_size: Runs fetched per call; the service's default when None.
        """
        request = _list_runs_request(
            pipeline, states, labels, created_after, created_before, page_size
        )
        for page in self._pages(self._stub.ListRuns, request):
            for message in page.runs:
                yield self._run(message)

    def cancel_run(self, run: str) -> Run:
        """Asks the service to stop a run; returns it in CANCELLING.

        Raises:
            RPCError: FAILED_PRECONDITION with reason RUN_ALREADY_FINISHED (and the
                state in `metadata["state"]`) when the run has already ended.
        """
        request = pipeline_service_pb2.CancelRunRequest(name=run_name(run))
        return self._run(self._call(self._stub.CancelRun, request))

    def retry_run(
        self, run: str, *, run_id: str | None = None, request_id: str | None = None
    ) -> Run:
        """Starts a new run of a failed or cancelled run, reusing its succeeded steps."""
        request = pipeline_service_pb2.RetryRunRequest(
            name=run_name(run), run_id=run_id or "", request_id=request_id or ""
        )
        return self._run(self._call(self._stub.RetryRun, request))

    def delete_run(self, run: str) -> None:
        """Deletes a finished run with its events, step logs and artifacts (an admin, or
        the runner who created it). FAILED_PRECONDITION while the run has not finished."""
        self._call(self._stub.DeleteRun, pipeline_service_pb2.DeleteRunRequest(name=run_name(run)))

    def read_step_logs(
        self, run: str, step: str, *, follow: bool = False, attempt: int = 0
    ) -> Iterator[LogLine]:
        """A step's log lines; with `follow`, until the step finishes (no deadline then)."""
        request = pipeline_service_pb2.ReadStepLogsRequest(
            run=run_name(run), step=step, follow=follow, attempt=attempt
        )
        stream = self._stub.ReadStepLogs(request, timeout=None if follow else self.timeout)
        try:
            for response in stream:
                for line in response.lines:
                    yield LogLine.of(line)
        except grpc.RpcError as error:
            raise RPCError.from_grpc(error) from error
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves Call.cancel untyped

    def watch_run(self, run: str, after_revision: int = 0) -> Iterator[Run]:
        """Full snapshots of a run as it changes, until it reaches a terminal state.

        The first snapshot is the current state or, with `after_revision`, every stored
        revision after it. There is no deadline: runs take as long as they take. Closing
        the iterator cancels the stream.
        """
        request = pipeline_service_pb2.WatchRunRequest(
            name=run_name(run), after_revision=after_revision
        )
        stream = self._stub.WatchRun(request)
        try:
            for response in stream:
                yield self._run(response.run)
        except grpc.RpcError as error:
            raise RPCError.from_grpc(error) from error
        finally:
            stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves Call.cancel untyped

    def watch(
        self,
        run: str,
        after_revision: int = 0,
        *,
        resume: ResumePolicy = ResumePolicy(),
        on_resume: Callable[[RPCError, float], None] | None = None,
    ) -> Iterator[Run]:
        """Like `watch_run`, but survives dropped streams and server restarts.

        When the stream fails with UNAVAILABLE (connection lost, server restarting or
        draining), it reconnects after a backoff with `after_revision` set to the last
        revision seen, so each revision is yielded exactly once, in order, until the run
        reaches a terminal state.

        Args:
            run: "abc" or "runs/abc".
            after_revision: Start after this revision (0: from the current snapshot).
            resume: Backoff and how many failures in a row to tolerate.
            on_resume: Called with the error and the pause before each reconnect.

        Raises:
            RPCError: any other error, or UNAVAILABLE `resume.attempts` times in a row.
        """
        watching = _Resumption(run, after_revision, resume)
        while True:
            try:
                for snapshot in self.watch_run(run, watching.revision):
                    if watching.is_new(snapshot):
                        yield snapshot
                return
            except RPCError as error:
                delay = watching.pause_after(error)
                if on_resume is not None:
                    on_resume(error, delay)
                time.sleep(delay)

    def watch_runs(
        self,
        pipeline: str | None = None,
        states: Iterable[RunState | int] = (),
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        *,
        after_cursor: str = "",
        initial_snapshot: bool = False,
        resume: ResumePolicy = ResumePolicy(),
        on_resume: Callable[[RPCError, float], None] | None = None,
    ) -> Iterator[RunChange]:
        """The changes of every run matching the filters (those of `list_runs`), as
        they are committed, without end; closing the iterator cancels the stream.

        When the stream fails with UNAVAILABLE it reconnects after a backoff from the
        last cursor received, so each change is yielded once, in order. Heartbeats are
        yielded too (their cursor is where to resume from); a RELIST tells that changes
        were lost (the cursor was too old) and the runs should be listed again.

        Args:
            after_cursor: Resume after this cursor (from an earlier RunChange); empty:
                from now.
            initial_snapshot: Start with the runs matching now (SNAPSHOT each, then
                SNAPSHOT_COMPLETE); ignored with after_cursor.
            resume: Backoff and how many failures in a row to tolerate.
            on_resume: Called with the error and the pause before each reconnect.

        Raises:
            RPCError: INVALID_ARGUMENT for a bad filter or cursor (naming the field), any
                other error, or UNAVAILABLE `resume.attempts` times in a row.
        """
        watching = FeedResumption(
            _watch_runs_request(
                pipeline,
                states,
                labels,
                created_after,
                created_before,
                after_cursor,
                initial_snapshot,
            ),
            resume,
        )
        while True:
            stream = self._stub.WatchRuns(watching.request)
            try:
                for message in stream:
                    watching.received(message)
                    yield RunChange(
                        ChangeKind(message.kind),
                        message.cursor,
                        self._run(message.run) if message.HasField("run") else None,
                    )
                return
            except grpc.RpcError as error:
                failure = RPCError.from_grpc(error)
                delay = watching.pause_after(failure)
                if on_resume is not None:
                    on_resume(failure, delay)
                time.sleep(delay)
            finally:
                stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves Call.cancel untyped

    # Schedules

    def create_schedule(
        self, pipeline: str, parameters: Mapping[str, Any], **options: Any
    ) -> Schedule:
        """Creates a schedule of `pipeline`: pass cron= (and time_zone=) or
        interval_seconds=; the other options are create_schedule_request's (labels,
        start_time, end_time, max_concurrency, overlap_policy "SKIP"/"CANCEL_OLDEST",
        catchup_policy "SKIP"/"RUN_LATEST"/"RUN_ALL", catchup_window, disable_cache,
        schedule_id, request_id). The result lists its next ticks (upcoming_tick_times).

        Raises:
            RPCError: INVALID_ARGUMENT naming the field for an invalid cron expression, an
                unknown time zone, an interval of 0 or less, or bad parameters.
        """
        request = create_schedule_request(pipeline, parameters, **options)
        return Schedule.of(self._call(self._stub.CreateSchedule, request))

    def get_schedule(self, schedule: str) -> Schedule:
        """One schedule, "x" or "schedules/x"."""
        request = pipeline_service_pb2.GetScheduleRequest(name=schedule_name(schedule))
        return Schedule.of(self._call(self._stub.GetSchedule, request))

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        request = pipeline_service_pb2.ListSchedulesRequest()
        return [
            Schedule.of(item)
            for page in self._pages(self._stub.ListSchedules, request)
            for item in page.schedules
        ]

    def update_schedule(self, schedule: str, fields: list[str], **options: Any) -> Schedule:
        """Changes the `fields` of a schedule (e.g. ["trigger", "max_concurrency"]) to the
        values in `options` (create_schedule's keyword options)."""
        request = update_schedule_request(schedule, fields, **options)
        return Schedule.of(self._call(self._stub.UpdateSchedule, request))

    def pause_schedule(self, schedule: str, reason: str = "") -> Schedule:
        request = pipeline_service_pb2.PauseScheduleRequest(
            name=schedule_name(schedule), reason=reason
        )
        return Schedule.of(self._call(self._stub.PauseSchedule, request))

    def resume_schedule(self, schedule: str) -> Schedule:
        request = pipeline_service_pb2.ResumeScheduleRequest(name=schedule_name(schedule))
        return Schedule.of(self._call(self._stub.ResumeSchedule, request))

    def delete_schedule(self, schedule: str) -> None:
        request = pipeline_service_pb2.DeleteScheduleRequest(name=schedule_name(schedule))
        self._call(self._stub.DeleteSchedule, request)

    def backfill_schedule(
        self, schedule: str, start_time: datetime, end_time: datetime
    ) -> list[Run]:
        """The runs of every tick in [start_time, end_time): made now, or the tick's run
        made earlier (no tick makes two)."""
        response = self._call(
            self._stub.BackfillSchedule, backfill_request(schedule, start_time, end_time)
        )
        return [self._run(run) for run in response.runs]

    # Subscriptions (notifications)

    def create_subscription(self, **options: Any) -> Subscription:
        """Creates a subscription; the options are create_subscription_request's
        (notify_states, a Slack or webhook sink with its secret's NAME, the filter,
        subscription_id, request_id).

        Raises:
            RPCError: INVALID_ARGUMENT naming the field for a bad filter, no sink, an
                empty Slack channel, a URL that is not http(s), or an unknown secret.
        """
        request = create_subscription_request(**options)
        return Subscription.of(self._call(self._stub.CreateSubscription, request))

    def get_subscription(self, subscription: str) -> Subscription:
        """One subscription, "x" or "subscriptions/x", with its delivery health."""
        request = pipeline_service_pb2.GetSubscriptionRequest(name=subscription_name(subscription))
        return Subscription.of(self._call(self._stub.GetSubscription, request))

    def list_subscriptions(self) -> list[Subscription]:
        """Every subscription, by name."""
        request = pipeline_service_pb2.ListSubscriptionsRequest()
        return [
            Subscription.of(item)
            for page in self._pages(self._stub.ListSubscriptions, request)
            for item in page.subscriptions
        ]

    def delete_subscription(self, subscription: str) -> None:
        request = pipeline_service_pb2.DeleteSubscriptionRequest(
            name=subscription_name(subscription)
        )
        self._call(self._stub.DeleteSubscription, request)

    def list_deliveries(self, subscription: str, limit: int | None = None) -> list[Delivery]:
        """A subscription's deliveries, newest first (at most `limit`), with every attempt."""
        found: list[Delivery] = []
        request = pipeline_service_pb2.ListDeliveriesRequest(
            parent=subscription_name(subscription), page_size=min(limit or 1000, 1000)
        )
        for page in self._pages(self._stub.ListDeliveries, request):
            found.extend(Delivery.of(d) for d in page.deliveries)
            if limit is not None and len(found) >= limit:
                break
        return found[:limit] if limit is not None else found


def _create_run_request(
    pipeline: str,
    parameters: Mapping[str, Any],
    labels: Mapping[str, str],
    run_id: str | None,
    request_id: str | None,
    disable_cache: bool,
) -> pipeline_service_pb2.CreateRunRequest:
    run = run_pb2.Run(
        pipeline=pipeline_name(pipeline), labels=dict(labels), disable_cache=disable_cache
    )
    run.parameters.update(dict(parameters))
    return pipeline_service_pb2.CreateRunRequest(
        run=run, run_id=run_id or "", request_id=request_id or ""
    )


def _list_runs_request(
    pipeline: str | None,
    states: Iterable[RunState | int],
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    page_size: int | None,
) -> pipeline_service_pb2.ListRunsRequest:
    return pipeline_service_pb2.ListRunsRequest(
        page_size=page_size or 0,
        pipeline=pipeline_name(pipeline) if pipeline else "",
        states=[cast("run_pb2.RunState", int(state)) for state in states],
        labels=dict(labels or {}),
        create_time_after=_timestamp(created_after),
        create_time_before=_timestamp(created_before),
    )


def _watch_runs_request(
    pipeline: str | None,
    states: Iterable[RunState | int],
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    after_cursor: str,
    initial_snapshot: bool,
) -> pipeline_service_pb2.WatchRunsRequest:
    listing = _list_runs_request(pipeline, states, labels, created_after, created_before, None)
    request = pipeline_service_pb2.WatchRunsRequest(
        pipeline=listing.pipeline,
        states=listing.states,
        labels=listing.labels,
        after_cursor=after_cursor,
        initial_snapshot=initial_snapshot and not after_cursor,
    )
    if listing.HasField("create_time_after"):
        request.create_time_after.CopyFrom(listing.create_time_after)
    if listing.HasField("create_time_before"):
        request.create_time_before.CopyFrom(listing.create_time_before)
    return request


class _Resumption:
    """The state of a resuming watch: the last revision yielded and the failures in a row."""

    def __init__(self, run: str, after_revision: int, policy: ResumePolicy) -> None:
        self._run = run_name(run)
        self._policy = policy
        self.revision = after_revision
        self._failures = 0

    def is_new(self, snapshot: Run) -> bool:
        """Whether to yield `snapshot`. The contract already replays each revision once;
        this keeps the promise even against a server that replays from an older cursor."""
        self._failures = 0
        if snapshot.revision <= self.revision:
            return False
        self.revision = snapshot.revision
        return True

    def pause_after(self, error: RPCError) -> float:
        """Seconds to wait before reconnecting; re-raises `error` when it is not worth it."""
        if not error.retryable or self._failures >= self._policy.attempts:
            raise error
        delay = self._policy.delay(self._failures)
        self._failures += 1
        logger.info(
            "lost the stream of %s (%s); resuming after revision %s in %.1fs",
            self._run,
            error.code.name,
            self.revision,
            delay,
        )
        return delay


class AsyncPipelinesClient:
    """The asyncio PipelineService client (grpc.aio): PipelinesClient's calls, awaited, and
    its streams as async iterators. Use it as an async context manager, or await close().

    Args:
        target: "host:port" of the service.
        timeout: Deadline in seconds of every unary call. WatchRun has none.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(
                target, tls.credentials(), options=_CHANNEL_OPTIONS
            )
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        self._stub = async_stub(self._channel)
        self._types = _TypeCache()

    async def close(self) -> None:
        """Closes the channel; calls in flight, watches included, end with CANCELLED."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncPipelinesClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise RPCError.from_grpc(error) from error

    async def _pages(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_PageRequestT, _PageT],
        request: _PageRequestT,
    ) -> AsyncIterator[_PageT]:
        """Each page of a List call, following next_page_token until there is none."""
        while True:
            response = await self._call(method, request)
            yield response
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def _stream(
        self,
        method: grpc.aio.UnaryStreamMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
    ) -> AsyncIterator[_Response]:
        call = method(request, timeout=timeout, metadata=self._metadata)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise RPCError.from_grpc(error) from error
        finally:
            call.cancel()

    async def _run(self, message: run_pb2.Run) -> Run:
        """The message as a Run, its values typed (see PipelinesClient._run)."""
        types = self._types.known(message)
        if types is None:
            try:
                pipeline: Pipeline | RPCError = await self.get_pipeline(message.pipeline)
            except RPCError as error:
                pipeline = error
            types = self._types.learn(message, pipeline)
        return Run.of(message, types)

    async def list_pipelines(self) -> list[Pipeline]:
        """Every pipeline that can be run, sorted by name (without pipeline_spec)."""
        request = pipeline_service_pb2.ListPipelinesRequest()
        return [
            Pipeline.of(item)
            async for page in self._pages(self._stub.ListPipelines, request)
            for item in page.pipelines
        ]

    async def get_pipeline(self, pipeline: str) -> Pipeline:
        """One pipeline, "x" or "pipelines/x", with its compiled IR."""
        request = pipeline_service_pb2.GetPipelineRequest(name=pipeline_name(pipeline))
        found = Pipeline.of(await self._call(self._stub.GetPipeline, request))
        self._types.remember((found.name, found.version), found.value_types)
        return found

    async def create_run(
        self,
        pipeline: str,
        parameters: Mapping[str, Any],
        labels: Mapping[str, str],
        run_id: str | None = None,
        request_id: str | None = None,
        *,
        disable_cache: bool = False,
    ) -> Run:
        """Starts a run of `pipeline` (see PipelinesClient.create_run)."""
        request = _create_run_request(
            pipeline, parameters, labels, run_id, request_id, disable_cache
        )
        return await self._run(await self._call(self._stub.CreateRun, request))

    async def get_run(self, run: str) -> Run:
        """The current state of a run, "abc" or "runs/abc"."""
        request = pipeline_service_pb2.GetRunRequest(name=run_name(run))
        return await self._run(await self._call(self._stub.GetRun, request))

    async def list_runs(
        self,
        pipeline: str | None = None,
        states: Iterable[RunState | int] = (),
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Run]:
        """Runs matching all the given filters, newest first (see PipelinesClient.list_runs)."""
        request = _list_runs_request(
            pipeline, states, labels, created_after, created_before, page_size
        )
        async for page in self._pages(self._stub.ListRuns, request):
            for message in page.runs:
                yield await self._run(message)

    async def cancel_run(self, run: str) -> Run:
        """Asks the service to stop a run; returns it in CANCELLING (see
        PipelinesClient.cancel_run: FAILED_PRECONDITION once it has ended)."""
        request = pipeline_service_pb2.CancelRunRequest(name=run_name(run))
        return await self._run(await self._call(self._stub.CancelRun, request))

    async def retry_run(
        self, run: str, *, run_id: str | None = None, request_id: str | None = None
    ) -> Run:
        """Starts a new run of a failed or cancelled run, reusing its succeeded steps."""
        request = pipeline_service_pb2.RetryRunRequest(
            name=run_name(run), run_id=run_id or "", request_id=request_id or ""
        )
        return await self._run(await self._call(self._stub.RetryRun, request))

    async def delete_run(self, run: str) -> None:
        """Deletes a finished run with its events, step logs and artifacts (see
        PipelinesClient.delete_run)."""
        request = pipeline_service_pb2.DeleteRunRequest(name=run_name(run))
        await self._call(self._stub.DeleteRun, request)

    async def read_step_logs(
        self, run: str, step: str, *, follow: bool = False, attempt: int = 0
    ) -> AsyncIterator[LogLine]:
        """A step's log lines; with `follow`, until the step finishes (no deadline then)."""
        request = pipeline_service_pb2.ReadStepLogsRequest(
            run=run_name(run), step=step, follow=follow, attempt=attempt
        )
        timeout = None if follow else self.timeout
        async for response in self._stream(self._stub.ReadStepLogs, request, timeout):
            for line in response.lines:
                yield LogLine.of(line)

    async def watch_run(self, run: str, after_revision: int = 0) -> AsyncIterator[Run]:
        """Full snapshots of a run as it changes, until it reaches a terminal state (see
        PipelinesClient.watch_run)."""
        request = pipeline_service_pb2.WatchRunRequest(
            name=run_name(run), after_revision=after_revision
        )
        async for response in self._stream(self._stub.WatchRun, request, None):
            yield await self._run(response.run)

    async def watch(
        self,
        run: str,
        after_revision: int = 0,
        *,
        resume: ResumePolicy = ResumePolicy(),
        on_resume: Callable[[RPCError, float], None] | None = None,
    ) -> AsyncIterator[Run]:
        """Like `watch_run`, but survives dropped streams and server restarts: each
        revision exactly once, in order (see PipelinesClient.watch).

        Raises:
            RPCError: any other error, or UNAVAILABLE `resume.attempts` times in a row.
        """
        watching = _Resumption(run, after_revision, resume)
        while True:
            try:
                async for snapshot in self.watch_run(run, watching.revision):
                    if watching.is_new(snapshot):
                        yield snapshot
                return
            except RPCError as error:
                delay = watching.pause_after(error)
                if on_resume is not None:
                    on_resume(error, delay)
                await asyncio.sleep(delay)

    async def watch_runs(
        self,
        pipeline: str | None = None,
        states: Iterable[RunState | int] = (),
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        *,
        after_cursor: str = "",
        initial_snapshot: bool = False,
        resume: ResumePolicy = ResumePolicy(),
        on_resume: Callable[[RPCError, float], None] | None = None,
    ) -> AsyncIterator[RunChange]:
        """The changes of every matching run, resuming on UNAVAILABLE (see
        PipelinesClient.watch_runs)."""
        watching = FeedResumption(
            _watch_runs_request(
                pipeline,
                states,
                labels,
                created_after,
                created_before,
                after_cursor,
                initial_snapshot,
            ),
            resume,
        )
        while True:
            try:
                async for message in self._stream(self._stub.WatchRuns, watching.request, None):
                    watching.received(message)
                    yield RunChange(
                        ChangeKind(message.kind),
                        message.cursor,
                        await self._run(message.run) if message.HasField("run") else None,
                    )
                return
            except RPCError as error:
                delay = watching.pause_after(error)
                if on_resume is not None:
                    on_resume(error, delay)
                await asyncio.sleep(delay)

    # Schedules

    async def create_schedule(
        self, pipeline: str, parameters: Mapping[str, Any], **options: Any
    ) -> Schedule:
        """Creates a schedule of `pipeline`: pass cron= (and time_zone=) or
        interval_seconds=; the other options are create_schedule_request's (labels,
        start_time, end_time, max_concurrency, overlap_policy "SKIP"/"CANCEL_OLDEST",
        catchup_policy "SKIP"/"RUN_LATEST"/"RUN_ALL", catchup_window, disable_cache,
        schedule_id, request_id). The result lists its next ticks (upcoming_tick_times).

        Raises:
            RPCError: INVALID_ARGUMENT naming the field for an invalid cron expression, an
                unknown time zone, an interval of 0 or less, or bad parameters.
        """
        request = create_schedule_request(pipeline, parameters, **options)
        return Schedule.of(await self._call(self._stub.CreateSchedule, request))

    async def get_schedule(self, schedule: str) -> Schedule:
        """One schedule, "x" or "schedules/x"."""
        request = pipeline_service_pb2.GetScheduleRequest(name=schedule_name(schedule))
        return Schedule.of(await self._call(self._stub.GetSchedule, request))

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        request = pipeline_service_pb2.ListSchedulesRequest()
        return [
            Schedule.of(item)
            async for page in self._pages(self._stub.ListSchedules, request)
            for item in page.schedules
        ]

    async def update_schedule(self, schedule: str, fields: list[str], **options: Any) -> Schedule:
        """Changes the `fields` of a schedule (e.g. ["trigger", "max_concurrency"]) to the
        values in `options` (create_schedule's keyword options)."""
        request = update_schedule_request(schedule, fields, **options)
        return Schedule.of(await self._call(self._stub.UpdateSchedule, request))

    async def pause_schedule(self, schedule: str, reason: str = "") -> Schedule:
        request = pipeline_service_pb2.PauseScheduleRequest(
            name=schedule_name(schedule), reason=reason
        )
        return Schedule.of(await self._call(self._stub.PauseSchedule, request))

    async def resume_schedule(self, schedule: str) -> Schedule:
        request = pipeline_service_pb2.ResumeScheduleRequest(name=schedule_name(schedule))
        return Schedule.of(await self._call(self._stub.ResumeSchedule, request))

    async def delete_schedule(self, schedule: str) -> None:
        request = pipeline_service_pb2.DeleteScheduleRequest(name=schedule_name(schedule))
        await self._call(self._stub.DeleteSchedule, request)

    async def backfill_schedule(
        self, schedule: str, start_time: datetime, end_time: datetime
    ) -> list[Run]:
        """The runs of every tick in [start_time, end_time): made now, or the tick's run
        made earlier (no tick makes two)."""
        response = await self._call(
            self._stub.BackfillSchedule, backfill_request(schedule, start_time, end_time)
        )
        return [await self._run(run) for run in response.runs]

    # Subscriptions (notifications)

    async def create_subscription(self, **options: Any) -> Subscription:
        """As PipelinesClient.create_subscription."""
        request = create_subscription_request(**options)
        return Subscription.of(await self._call(self._stub.CreateSubscription, request))

    async def get_subscription(self, subscription: str) -> Subscription:
        request = pipeline_service_pb2.GetSubscriptionRequest(name=subscription_name(subscription))
        return Subscription.of(await self._call(self._stub.GetSubscription, request))

    async def list_subscriptions(self) -> list[Subscription]:
        request = pipeline_service_pb2.ListSubscriptionsRequest()
        return [
            Subscription.of(item)
            async for page in self._pages(self._stub.ListSubscriptions, request)
            for item in page.subscriptions
        ]

    async def delete_subscription(self, subscription: str) -> None:
        request = pipeline_service_pb2.DeleteSubscriptionRequest(
            name=subscription_name(subscription)
        )
        await self._call(self._stub.DeleteSubscription, request)

    async def list_deliveries(self, subscription: str, limit: int | None = None) -> list[Delivery]:
        """As PipelinesClient.list_deliveries."""
        found: list[Delivery] = []
        request = pipeline_service_pb2.ListDeliveriesRequest(
            parent=subscription_name(subscription), page_size=min(limit or 1000, 1000)
        )
        async for page in self._pages(self._stub.ListDeliveries, request):
            found.extend(Delivery.of(d) for d in page.deliveries)
            if limit is not None and len(found) >= limit:
                break
        return found[:limit] if limit is not None else found
