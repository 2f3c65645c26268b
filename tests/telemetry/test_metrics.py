"""Metrics: scraped from a real server's /metrics, and the hooks' bookkeeping."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from skit_pipelines.domain import Run, RunState, Step, StepState
from skit_pipelines.telemetry import Telemetry

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at /metrics: (name, labels without otel_scope_*) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if not k.startswith("otel_scope")}
            samples[sample.name, frozenset(labels.items())] = sample.value
    return samples


def _value(samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


async def test_metrics_endpoint_counts_runs_steps_watchers_and_calls(app, stub, run_to_end):
    assert app.telemetry.metrics_address is not None
    assert app.telemetry.metrics_address.startswith("127.0.0.1:")
    await run_to_end(stub)
    await run_to_end(stub, mode="fail")

    samples = await asyncio.to_thread(_scrape, app.telemetry.metrics_address)

    assert _value(samples, "skit_pipelines_runs_created_total", pipeline="traced") == 2
    assert _value(samples, "skit_pipelines_runs_finished_total", state="SUCCEEDED") == 1
    assert _value(samples, "skit_pipelines_runs_finished_total", state="FAILED") == 1
    assert _value(samples, "skit_pipelines_step_duration_seconds_count", state="SUCCEEDED") == 3
    assert _value(samples, "skit_pipelines_step_duration_seconds_count", state="FAILED") == 1
    assert _value(samples, "skit_pipelines_run_duration_seconds_count", pipeline="traced") == 2
    assert _value(samples, "skit_pipelines_runs_queued") == 0
    assert _value(samples, "skit_pipelines_runs_running") == 0
    assert _value(samples, "skit_pipelines_watchers") == 0
    created = _value(
        samples,
        "rpc_server_duration_seconds_count",
        rpc_method="CreateRun",
        rpc_grpc_status_code="0",
    )
    assert created == 2
    assert _value(samples, "rpc_server_duration_seconds_count", rpc_method="WatchRun") == 2
    assert _value(samples, "process_resident_memory_bytes") > 0


def _telemetry() -> tuple[Telemetry, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return Telemetry(meter_provider=MeterProvider(metric_readers=[reader])), reader


def _points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def _run(state: RunState = RunState.QUEUED, **changes) -> Run:
    return replace(
        Run(
            id="r1",
            pipeline="p",
            pipeline_version="v",
            parameters={},
            labels={},
            state=state,
            create_time=T0,
            update_time=T0,
            revision=1,
        ),
        **changes,
    )


def test_queue_length_and_running_runs_follow_the_run_states() -> None:
    telemetry, reader = _telemetry()
    telemetry.run_created(_run())
    telemetry.run_created(_run(id="r2"))
    telemetry.run_started(_run(RunState.RUNNING, start_time=T0))

    points = _points(reader)
    assert points["skit_pipelines.runs.queued"][0].value == 1
    assert points["skit_pipelines.runs.running"][0].value == 1

    telemetry.run_finished(_run(RunState.SUCCEEDED, start_time=T0, end_time=T0))
    telemetry.run_finished(_run(RunState.CANCELLED, id="r2", end_time=T0))
    points = _points(reader)
    assert points["skit_pipelines.runs.queued"][0].value == 0
    assert points["skit_pipelines.runs.running"][0].value == 0


def test_a_step_duration_is_recorded_once_though_its_state_is_reported_again() -> None:
    telemetry, reader = _telemetry()
    done = Step(
        name="s",
        component="c",
        state=StepState.SUCCEEDED,
        start_time=T0,
        end_time=T0 + timedelta(seconds=2),
    )
    telemetry.step_changed(_run(RunState.RUNNING), done, replace(done, state=StepState.RUNNING))
    # A resumed run reports its completed steps unchanged.
    telemetry.step_changed(_run(RunState.RUNNING), done, done)
    telemetry.step_changed(
        _run(RunState.RUNNING), replace(done, name="cached", state=StepState.CACHED), None
    )

    (point,) = _points(reader)["skit_pipelines.step.duration"]
    assert (point.count, point.sum) == (1, 2.0)
    assert dict(point.attributes) == {"pipeline": "p", "component": "c", "state": "SUCCEEDED"}


def test_the_watchers_gauge_reads_its_source() -> None:
    telemetry, reader = _telemetry()
    telemetry.count_watchers(lambda: 7)

    assert _points(reader)["skit_pipelines.watchers"][0].value == 7


def test_disabled_telemetry_records_nothing_and_gives_no_trace_context() -> None:
    telemetry = Telemetry()
    telemetry.run_created(_run())
    telemetry.step_changed(_run(), Step(name="s", state=StepState.RUNNING, start_time=T0), None)
    telemetry.run_finished(_run(RunState.SUCCEEDED))

    assert telemetry.step_trace_env("r1", "s") == {}
    assert telemetry.server_interceptors("skit.pipelines.v1.PipelineService") == []
