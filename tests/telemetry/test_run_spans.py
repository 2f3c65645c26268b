"""The run and step spans the controller's hooks produce, without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from skit_pipelines.domain import ErrorInfo, Run, RunState, Step, StepState
from skit_pipelines.telemetry import Telemetry

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RUN = Run(
    id="r1",
    pipeline="p",
    pipeline_version="v",
    parameters={},
    labels={},
    state=RunState.RUNNING,
    create_time=T0,
    update_time=T0,
    revision=1,
    start_time=T0,
)


@pytest.fixture
async def traced() -> AsyncIterator[tuple[Telemetry, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=provider)
    yield telemetry, exporter
    await telemetry.shutdown()


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_retried_step_is_one_span_with_an_event_per_failed_attempt(traced) -> None:
    telemetry, exporter = traced
    telemetry.run_started(RUN)
    env = telemetry.step_trace_env("r1", "train")
    running = Step(name="train", state=StepState.RUNNING, start_time=_at(1))
    telemetry.step_changed(RUN, running, None)
    failed = ErrorInfo(code=2, message="exited with code 1")
    pending = replace(running, state=StepState.PENDING, attempt=2, error=failed)
    telemetry.step_changed(RUN, pending, running)
    assert telemetry.step_trace_env("r1", "train") == env
    done = replace(pending, state=StepState.SUCCEEDED, error=None, end_time=_at(5))
    telemetry.step_changed(RUN, done, pending)
    telemetry.run_finished(replace(RUN, state=RunState.SUCCEEDED, end_time=_at(6)))

    step, run = exporter.get_finished_spans()
    assert (step.name, run.name) == ("step train", "run p")
    assert [(e.name, e.attributes["skit.step.failed_attempt"]) for e in step.events] == [
        ("retry", 1)
    ]
    assert step.attributes["skit.step.attempt"] == 2
    assert env["TRACEPARENT"].split("-")[2] == f"{step.context.span_id:016x}"
    assert run.start_time == int(T0.timestamp() * 1e9)
    assert run.end_time == int(_at(6).timestamp() * 1e9)


def test_cached_and_skipped_steps_get_spans_of_their_own_times(traced) -> None:
    telemetry, exporter = traced
    telemetry.run_started(RUN)
    cached = Step(
        name="fetch", state=StepState.CACHED, cached=True, start_time=_at(1), end_time=_at(1)
    )
    telemetry.step_changed(RUN, cached, Step(name="fetch"))
    telemetry.step_changed(RUN, Step(name="report", state=StepState.SKIPPED, end_time=_at(2)), None)

    fetch, report = exporter.get_finished_spans()
    assert fetch.attributes["skit.step.cached"] is True
    assert fetch.start_time == fetch.end_time == int(_at(1).timestamp() * 1e9)
    assert report.attributes["skit.step.state"] == "SKIPPED"


async def test_shutdown_ends_the_spans_of_unfinished_runs_as_interrupted(traced) -> None:
    telemetry, exporter = traced
    telemetry.run_started(RUN)
    telemetry.step_trace_env("r1", "train")

    await telemetry.shutdown()

    assert {s.name: s.attributes["skit.interrupted"] for s in exporter.get_finished_spans()} == {
        "step train": True,
        "run p": True,
    }
