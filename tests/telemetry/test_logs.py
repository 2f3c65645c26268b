"""JSON log lines: run and step ids, trace ids, and no secrets."""

from __future__ import annotations

import asyncio
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from skit_pipelines import jsonlog
from skit_pipelines.telemetry import Telemetry


def _line(message: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("skit_pipelines.x", logging.INFO, "", 0, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return json.loads(jsonlog.JsonFormatter().format(record))


def test_fields_bound_in_a_context_reach_every_line_also_from_tasks_started_inside() -> None:
    async def main() -> dict[str, object]:
        with jsonlog.context(run="r1"):
            return await asyncio.get_running_loop().create_task(_in_task())

    async def _in_task() -> dict[str, object]:
        with jsonlog.context(step="train"):
            return _line("step %s is %s", "train", "RUNNING")

    entry = asyncio.run(main())

    assert (entry["run"], entry["step"], entry["message"]) == (
        "r1",
        "train",
        "step train is RUNNING",
    )
    assert "run" not in _line("outside")


def test_secrets_never_reach_a_line() -> None:
    entry = _line(
        "cannot connect to %s",
        "postgresql://skit:hunter2@db:5432/runs",
        kfp_token="abc",
        authorization="Bearer xyz",
        url="s3://key:secret@bucket/x",
    )

    text = json.dumps(entry)
    assert "hunter2" not in text and "abc" not in text and "xyz" not in text
    assert "secret" not in entry["url"]
    assert entry["message"] == "cannot connect to postgresql://skit:[redacted]@db:5432/runs"
    assert entry["kfp_token"] == jsonlog.REDACTED


async def test_lines_logged_inside_a_span_carry_its_trace_and_span_ids() -> None:
    provider = TracerProvider()
    telemetry = Telemetry(tracer_provider=provider)
    try:
        with provider.get_tracer("t").start_as_current_span("work") as span:
            entry = _line("inside")
        context = span.get_span_context()
        assert entry["trace_id"] == f"{context.trace_id:032x}"
        assert entry["span_id"] == f"{context.span_id:016x}"
    finally:
        await telemetry.shutdown()
    assert "trace_id" not in _line("after shutdown")
