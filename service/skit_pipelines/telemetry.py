"""Observability: OpenTelemetry traces and metrics of one service process.

Traces: a server span for every PipelineService RPC (OpenTelemetry's grpc.aio
interceptor), one span per run from its creation to its terminal state, and a child span
per step. A step's process gets its step span's W3C trace context as TRACEPARENT (and
TRACESTATE), so the spans a component makes itself join the run's trace.

Metrics: runs created and finished (by pipeline and state), run and step durations, runs
queued and running, open watchers, and the latency of every RPC (by method and status
code); served to Prometheus at /metrics and/or pushed over OTLP.

Everything is off by default: `Telemetry()` records nothing and costs a flag check per
hook, and OpenTelemetry is only imported when something is on, which keeps cold start
short.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc

from skit_pipelines import jsonlog
from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.domain import Run, RunState, Step, StepState
from skit_pipelines.grpc_types import MethodHandler, ServicerContext

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.metrics import CallbackOptions, Meter, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

TRACES_EXPORTERS = ("none", "console", "otlp")
SERVICE_NAME = "skit-pipelines"
_SCOPE = "skit_pipelines"

# Runs and steps last from milliseconds (a cached step) to hours (training).
_RUN_SECONDS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_RPC_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_STEP_OUTCOMES = (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED)
# Server spans count these as errors (OpenTelemetry's gRPC semantic conventions); the
# others are the caller's mistake.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _nanos(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1_000_000_000)


@dataclass
class _RunTrace:
    """The spans of one unfinished run."""

    span: Span | None
    steps: dict[str, Span] = field(default_factory=dict)


class Telemetry:
    """Traces and metrics of one service process; `Telemetry()` is the disabled one.

    It is the runs controller's RunObserver (runs.py): the controller calls the run_*
    and step_changed hooks after each state change it stores; the local backend asks
    `step_trace_env` for each step process it starts. All of it runs on the event loop's
    thread, except the gauges' callbacks, which the metric readers call from theirs
    (they only read sizes).

    Args:
        tracer_provider: Where spans go; None turns tracing off.
        meter_provider: Where measurements go; None turns metrics off.
        prometheus: (host, port, registry) of the /metrics endpoint `start` opens; the
            registry must be the one a PrometheusMetricReader of `meter_provider` fills.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        prometheus: tuple[str, int, CollectorRegistry] | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._prometheus = prometheus
        self._tracer: Tracer | None = None
        self._instruments: _Instruments | None = None
        self._runs: dict[str, _RunTrace] = {}
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._watchers: Callable[[], int] = lambda: 0
        self._metrics_server: WSGIServer | None = None
        self._remove_log_source: Callable[[], None] | None = None
        self._shut_down = False
        if tracer_provider is not None:
            self._tracer = tracer_provider.get_tracer(_SCOPE)
            self._remove_log_source = jsonlog.add_source(_trace_ids)
        if meter_provider is not None:
            self._instruments = _Instruments(meter_provider.get_meter(_SCOPE), self)

    @classmethod
    def from_config(
        cls, config: ServerConfig, *, span_exporter: SpanExporter | None = None
    ) -> Telemetry:
        """The exporters the configuration asks for; `span_exporter` overrides
        traces_exporter (tests pass an in-memory one, exported synchronously)."""
        if config.traces_exporter not in TRACES_EXPORTERS:
            raise ConfigError(
                f"--traces-exporter must be one of {', '.join(TRACES_EXPORTERS)},"
                f" not {config.traces_exporter!r}"
            )
        tracing = span_exporter is not None or config.traces_exporter != "none"
        if not (tracing or config.metrics_port is not None or config.metrics_otlp):
            return cls()
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create({"service.name": SERVICE_NAME})
        tracer_provider = None
        if tracing:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

            tracer_provider = TracerProvider(resource=resource)
            if span_exporter is not None:
                tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
            else:
                tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(config)))
        readers: list[Any] = []
        prometheus = None
        if config.metrics_port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import (
                GC_COLLECTOR,
                PLATFORM_COLLECTOR,
                PROCESS_COLLECTOR,
                CollectorRegistry,
            )

            # A registry of our own, so that several servers in one process (tests) do not
            # report each other's runs; with the process's CPU, memory, file descriptors
            # and garbage collection, as the default registry would have.
            registry = CollectorRegistry()
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
            readers.append(PrometheusMetricReader(registry=registry))
            prometheus = (config.metrics_host, config.metrics_port, registry)
        if config.metrics_otlp:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=config.otlp_endpoint or None)
                )
            )
        meter_provider = None
        if readers:
            from opentelemetry.sdk.metrics import MeterProvider

            meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        return cls(
            tracer_provider=tracer_provider, meter_provider=meter_provider, prometheus=prometheus
        )

    @property
    def tracing(self) -> bool:
        return self._tracer is not None

    @property
    def metrics_address(self) -> str | None:
        """host:port of the /metrics endpoint once started (the port chosen for port 0)."""
        if self._metrics_server is None:
            return None
        host = str(self._metrics_server.server_address[0])
        return f"{host}:{self._metrics_server.server_port}"

    def count_watchers(self, source: Callable[[], int]) -> None:
        """Where the open-watchers gauge reads its value (e.g. RevisionHub.watcher_count)."""
        self._watchers = source

    def start(self) -> None:
        """Opens the /metrics endpoint, when configured."""
        if self._prometheus is None or self._metrics_server is not None:
            return
        from prometheus_client import start_http_server

        host, port, registry = self._prometheus
        try:
            self._metrics_server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}); pick another"
                " --metrics-port"
            ) from None
        logger.info("serving metrics on http://%s/metrics", self.metrics_address)

    async def shutdown(self) -> None:
        """Closes /metrics, ends the spans of runs still going (marked interrupted: they
        resume in the next process, under a new span) and flushes the exporters."""
        if self._shut_down:
            return
        self._shut_down = True
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        for trace in self._runs.values():
            for span in trace.steps.values():
                span.set_attribute("skit.interrupted", True)
                span.end()
            if trace.span is not None:
                trace.span.set_attribute("skit.interrupted", True)
                trace.span.end()
        self._runs.clear()
        if self._remove_log_source is not None:
            self._remove_log_source()
            self._remove_log_source = None
        # Exporters block on the network (an OTLP collector may be down): off the loop.
        if self._tracer_provider is not None:
            await asyncio.to_thread(self._tracer_provider.shutdown)
        if self._meter_provider is not None:
            await asyncio.to_thread(self._meter_provider.shutdown, 5_000)

    # gRPC

    def server_interceptors(self, service: str) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
        """Interceptors for the gRPC server: a span and a latency measurement per call of
        `service`'s methods."""
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if self._tracer_provider is not None:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor
            from opentelemetry.instrumentation.grpc.filters import service_name

            # Only our service: the interceptor reads every streaming handler with
            # `async for`, which breaks health's Watch (it writes with context.write),
            # and probes every few seconds would bury the runs' traces anyway.
            # The instrumentation's factory is unannotated.
            interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=self._tracer_provider, filter_=service_name(service)
            )
            interceptors.append(interceptor)
        if self._tracer is not None or self._instruments is not None:
            interceptors.append(_RpcInterceptor(service, self))
        return interceptors

    def rpc_finished(
        self, method: str, code: grpc.StatusCode, seconds: float, span: Span | None
    ) -> None:
        """Records a call of `method` that ended with `code` after `seconds`."""
        if self._instruments is not None:
            self._instruments.rpc_duration.record(
                seconds, {"rpc.method": method, "rpc.grpc.status_code": code.value[0]}
            )
        # OpenTelemetry's interceptor sees context.abort() but not abort_with_status(),
        # which is how every error of ours leaves: without this, failed calls look OK.
        if span is not None and code is not grpc.StatusCode.OK:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))

    # Runs, as the controller stores their changes

    def run_created(self, run: Run) -> None:
        """A new run was stored (QUEUED). Its span starts here, as a child of the current
        span (the CreateRun or RetryRun call)."""
        if self._instruments is not None:
            self._instruments.runs_created.add(1, {"pipeline": run.pipeline})
        if self._instruments is None and self._tracer is None:
            return
        self._queued.add(run.id)
        self._track(run)

    def run_started(self, run: Run) -> None:
        if self._instruments is None and self._tracer is None:
            return
        trace = self._track(run)
        if run.state is RunState.RUNNING:
            self._queued.discard(run.id)
            self._running.add(run.id)
            if trace.span is not None:
                trace.span.add_event("running", timestamp=_nanos(run.start_time))

    def step_changed(self, run: Run, step: Step, previous: Step | None) -> None:
        """`step` was stored in `run`, replacing `previous` (None for a new step)."""
        if self._instruments is None and self._tracer is None:
            return
        repeated = (
            previous is not None
            and previous.state is step.state
            and previous.attempt == step.attempt
        )
        if (
            self._instruments is not None
            and step.state in _STEP_OUTCOMES
            and not repeated
            and step.start_time is not None
            and step.end_time is not None
        ):
            self._instruments.step_duration.record(
                (step.end_time - step.start_time).total_seconds(),
                {"pipeline": run.pipeline, "component": step.component, "state": step.state.name},
            )
        if self._tracer is None or repeated:
            return
        trace = self._track(run)
        span = trace.steps.get(step.name)
        if step.state is StepState.RUNNING and span is None:
            span = self._start_step_span(run.id, trace, step.name, step.start_time)
        if span is not None:
            span.set_attributes(_step_attributes(step))
            if step.state is StepState.PENDING and step.error is not None:
                span.add_event(
                    "retry",
                    {"skit.step.failed_attempt": step.attempt - 1, "message": step.error.message},
                )
        if step.state.terminal:
            if span is None:
                # CACHED, SKIPPED, or reported only at its end (a polled backend).
                span = self._start_step_span(
                    run.id, trace, step.name, step.start_time or step.end_time
                )
                span.set_attributes(_step_attributes(step))
            del trace.steps[step.name]
            if step.state is StepState.FAILED:
                _set_error(span, step.error.message if step.error else "step failed")
            span.end(end_time=_nanos(step.end_time))

    def run_finished(self, run: Run) -> None:
        """`run` reached a terminal state."""
        self._queued.discard(run.id)
        self._running.discard(run.id)
        if self._instruments is not None:
            self._instruments.runs_finished.add(
                1, {"pipeline": run.pipeline, "state": run.state.name}
            )
            if run.start_time is not None and run.end_time is not None:
                self._instruments.run_duration.record(
                    (run.end_time - run.start_time).total_seconds(),
                    {"pipeline": run.pipeline, "state": run.state.name},
                )
        trace = self._runs.pop(run.id, None)
        if trace is None:
            return
        end = _nanos(run.end_time)
        for span in trace.steps.values():
            span.end(end_time=end)
        if trace.span is not None:
            trace.span.set_attribute("skit.run.state", run.state.name)
            if run.state is RunState.FAILED:
                _set_error(trace.span, run.error.message if run.error else "run failed")
            trace.span.end(end_time=end)

    def step_trace_env(self, run_id: str, step_name: str) -> Mapping[str, str]:
        """The trace context of the step's span, as environment variables for its process
        (TRACEPARENT, and TRACESTATE when there is one); opens the span if need be."""
        if self._tracer is None:
            return {}
        from opentelemetry.trace import set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        trace = self._runs.get(run_id)
        if trace is None:
            trace = self._runs[run_id] = _RunTrace(span=None)
        span = trace.steps.get(step_name) or self._start_step_span(run_id, trace, step_name, None)
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
        return {key.upper(): value for key, value in carrier.items()}

    def _track(self, run: Run) -> _RunTrace:
        trace = self._runs.get(run.id)
        if trace is None:
            trace = self._runs[run.id] = _RunTrace(span=None)
        if self._tracer is not None and trace.span is None:
            # Not created here (resumed after a restart, or created by another replica):
            # the span still starts when the run was created.
            trace.span = self._tracer.start_span(
                f"run {run.pipeline}",
                attributes={
                    "skit.run.id": run.id,
                    "skit.pipeline": run.pipeline,
                    "skit.pipeline.version": run.pipeline_version,
                    "skit.run.retry_of": run.retry_of,
                },
                start_time=_nanos(run.create_time),
            )
        return trace

    def _start_step_span(
        self, run_id: str, trace: _RunTrace, step_name: str, start: datetime | None
    ) -> Span:
        from opentelemetry.trace import set_span_in_context

        assert self._tracer is not None
        parent = set_span_in_context(trace.span) if trace.span is not None else None
        span = self._tracer.start_span(
            f"step {step_name}",
            context=parent,
            attributes={"skit.run.id": run_id, "skit.step.name": step_name},
            start_time=_nanos(start),
        )
        trace.steps[step_name] = span
        return span


def _step_attributes(step: Step) -> dict[str, Any]:
    return {
        "skit.step.component": step.component,
        "skit.step.image": step.image,
        "skit.step.state": step.state.name,
        "skit.step.attempt": step.attempt,
        "skit.step.cached": step.cached,
    }


def _set_error(span: Span, message: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, message))


def _trace_ids() -> Mapping[str, str]:
    """The current span's ids, for log lines (correlates logs with traces)."""
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _span_exporter(config: ServerConfig) -> SpanExporter:
    if config.traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.otlp_endpoint or None)


class _Instruments:
    def __init__(self, meter: Meter, telemetry: Telemetry) -> None:
        self.runs_created = meter.create_counter(
            "skit_pipelines.runs.created", "{run}", "Runs accepted, by pipeline."
        )
        self.runs_finished = meter.create_counter(
            "skit_pipelines.runs.finished",
            "{run}",
            "Runs that reached a terminal state, by pipeline and state.",
        )
        self.run_duration = meter.create_histogram(
            "skit_pipelines.run.duration",
            "s",
            "From start to end of each finished run, by pipeline and state.",
            explicit_bucket_boundaries_advisory=_RUN_SECONDS,
        )
        self.step_duration = meter.create_histogram(
            "skit_pipelines.step.duration",
            "s",
            "From start to end of each step that ran, by pipeline, component and state.",
            explicit_bucket_boundaries_advisory=_RUN_SECONDS,
        )
        self.rpc_duration = meter.create_histogram(
            "rpc.server.duration",
            "s",
            "Time to answer each call (streams: until they end), by method and status code.",
            explicit_bucket_boundaries_advisory=_RPC_SECONDS,
        )
        meter.create_observable_gauge(
            "skit_pipelines.runs.queued",
            [_gauge(lambda: len(telemetry._queued))],
            "{run}",
            "Runs waiting to start: the queue length.",
        )
        meter.create_observable_gauge(
            "skit_pipelines.runs.running",
            [_gauge(lambda: len(telemetry._running))],
            "{run}",
            "Runs executing.",
        )
        meter.create_observable_gauge(
            "skit_pipelines.watchers",
            [_gauge(lambda: telemetry._watchers())],
            "{watcher}",
            "Open WatchRun streams (and followed step logs).",
        )


def _gauge(value: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value())]

    return observe


_Behavior = Callable[[Any, ServicerContext], Any]


class _RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # see grpc_types
    """Measures every call of one service and gives its span the final status code.

    Placed after OpenTelemetry's interceptor, so the call's span is the current one.
    """

    def __init__(self, service: str, telemetry: Telemetry) -> None:
        self._prefix = f"/{service}/"
        self._telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        name = method.removeprefix(self._prefix)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(name, handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(name, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        # PipelineService has no client-streaming methods.
        return handler

    def _finished(
        self,
        name: str,
        context: ServicerContext,
        started: float,
        error: BaseException | None,
    ) -> None:
        # code() is what abort/abort_with_status/set_code left; None means OK, unless the
        # handler raised (then gRPC answers UNKNOWN, or the client went away).
        code = _status_code(context.code())
        if code is None and error is not None:
            cancelled = isinstance(error, (asyncio.CancelledError, GeneratorExit))
            code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN
        span = None
        if self._telemetry.tracing:
            from opentelemetry.trace import get_current_span

            span = get_current_span()
        self._telemetry.rpc_finished(
            name, code or grpc.StatusCode.OK, time.perf_counter() - started, span
        )

    def _unary(self, name: str, behavior: _Behavior) -> _Behavior:
        async def unary(request: Any, context: ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except BaseException as error:
                self._finished(name, context, started, error)
                raise
            self._finished(name, context, started, None)
            return response

        return unary

    def _stream(self, name: str, behavior: _Behavior) -> _Behavior:
        if not inspect.isasyncgenfunction(behavior):
            return behavior

        async def stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as error:
                self._finished(name, context, started, error)
                raise
            self._finished(name, context, started, None)

        return stream


def _status_code(code: grpc.StatusCode | int | None) -> grpc.StatusCode | None:
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
