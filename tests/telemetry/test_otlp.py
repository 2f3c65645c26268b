"""The OTLP exporters, against a stand-in collector: spans and metrics arrive."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Run, RunState
from skit_pipelines.telemetry import Telemetry


class _Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    def __init__(self) -> None:
        self.spans: list[str] = []
        self.metrics: list[str] = []

    def Export(self, request, context):
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans += [
                span.name
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metrics += [
            metric.name
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        ]
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, str]]:
    servicer = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    server.stop(None)


async def test_spans_and_metrics_reach_the_otlp_collector(collector) -> None:
    received, endpoint = collector
    telemetry = Telemetry.from_config(
        ServerConfig(traces_exporter="otlp", metrics_otlp=True, otlp_endpoint=endpoint)
    )
    now = datetime.now(UTC)
    run = Run(
        id="r1",
        pipeline="p",
        pipeline_version="v",
        parameters={},
        labels={},
        state=RunState.QUEUED,
        create_time=now,
        update_time=now,
        revision=1,
    )
    telemetry.run_created(run)
    telemetry.run_finished(replace(run, state=RunState.SUCCEEDED, end_time=now))

    await telemetry.shutdown()  # flushes both exporters

    assert received.spans == ["run p"]
    assert {"skit_pipelines.runs.created", "skit_pipelines.runs.finished"} <= set(received.metrics)
