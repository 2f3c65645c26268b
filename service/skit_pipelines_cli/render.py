"""Turning messages into text: state labels, times, tables, descriptions of pipelines and
runs, the live frame, change lines, errors; JSON output; the exit codes.

Pure functions from messages to lines, except the few that print them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from skit.pipelines.v1 import pipeline_pb2, run_pb2
from skit_pipelines_client import RPCError

# Exit codes: success; a failed call or a run that did not succeed; bad usage; Ctrl-C.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

TERMINAL_RUN_STATES = frozenset(
    {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}
)

# The step symbols: Unicode where the output can encode it, else ASCII.
_UNICODE_SYMBOLS = {
    run_pb2.STEP_STATE_PENDING: "·",
    run_pb2.STEP_STATE_RUNNING: "▶",
    run_pb2.STEP_STATE_SUCCEEDED: "✓",
    run_pb2.STEP_STATE_FAILED: "✗",
    run_pb2.STEP_STATE_SKIPPED: "↷",
    run_pb2.STEP_STATE_CACHED: "✓",
    run_pb2.STEP_STATE_CANCELLED: "⊘",
}
_ASCII_SYMBOLS = {
    run_pb2.STEP_STATE_PENDING: ".",
    run_pb2.STEP_STATE_RUNNING: ">",
    run_pb2.STEP_STATE_SUCCEEDED: "+",
    run_pb2.STEP_STATE_FAILED: "x",
    run_pb2.STEP_STATE_SKIPPED: "-",
    run_pb2.STEP_STATE_CACHED: "+",
    run_pb2.STEP_STATE_CANCELLED: "/",
}


def run_state_label(state: int) -> str:
    """RUN_STATE_RUNNING -> "RUNNING"; unknown numbers (a newer server) print as numbers."""
    return _enum_label(run_pb2.RunState, state, "RUN_STATE_")


def step_state_label(state: int) -> str:
    """STEP_STATE_CACHED -> "CACHED"."""
    return _enum_label(run_pb2.StepState, state, "STEP_STATE_")


def _enum_label(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def format_time(timestamp: timestamp_pb2.Timestamp) -> str:
    """2026-11-26T10:00:01Z, or "-" when unset."""
    if not timestamp.seconds and not timestamp.nanos:
        return "-"
    return timestamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    """4.2s, 3m07s, 2h05m."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _is_set(timestamp: timestamp_pb2.Timestamp) -> bool:
    return bool(timestamp.seconds or timestamp.nanos)


def _span(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, now: datetime) -> str:
    """The time from start to end (or to now, while it lasts); "" before it starts."""
    if not _is_set(start):
        return ""
    finish = end.ToDatetime(tzinfo=UTC) if _is_set(end) else now
    return format_duration((finish - start.ToDatetime(tzinfo=UTC)).total_seconds())


def short_version(version: str) -> str:
    """sha256:3f2a9c1b4d5e... -> 3f2a9c1b4d5e."""
    return version.partition(":")[2][:12] if ":" in version else version[:12]


def _plain(value: Any) -> Any:
    # Struct numbers are doubles; whole ones read better without ".0".
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def format_value(value: struct_pb2.Value) -> str:
    """A parameter value as compact JSON: 5, "en", [1, 2]."""
    return json.dumps(_plain(json_format.MessageToDict(value)), ensure_ascii=False)


def _struct_items(struct: struct_pb2.Struct) -> list[str]:
    return [f"{key}={format_value(struct.fields[key])}" for key in sorted(struct.fields)]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def pipelines_table(pipelines: Sequence[pipeline_pb2.Pipeline]) -> list[str]:
    """`pipelines list`: name, short version, parameter count, first line of the description."""
    rows = [
        [
            pipeline.name,
            short_version(pipeline.version),
            str(len(pipeline.parameters)),
            pipeline.description.strip().partition("\n")[0],
        ]
        for pipeline in pipelines
    ]
    return table(["NAME", "VERSION", "PARAMS", "DESCRIPTION"], rows)


def describe_pipeline(pipeline: pipeline_pb2.Pipeline) -> list[str]:
    """`pipelines get`: the pipeline, then its parameters as a table."""
    lines = [f"name:     {pipeline.name}"]
    if pipeline.display_name:
        lines.append(f"title:    {pipeline.display_name}")
    lines.append(f"version:  {pipeline.version}")
    description = pipeline.description.strip()
    if description:
        lines += ["", *description.splitlines()]
    rows = [
        [
            parameter.name,
            _enum_label(pipeline_pb2.ParameterType, parameter.type, "PARAMETER_TYPE_").lower(),
            "yes" if parameter.required else "no",
            format_value(parameter.default_value) if parameter.HasField("default_value") else "-",
            parameter.description.strip().partition("\n")[0],
        ]
        for parameter in pipeline.parameters
    ]
    lines.append("")
    if rows:
        lines += table(["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"], rows)
    else:
        lines.append("no parameters")
    return lines


def runs_table(runs: Sequence[run_pb2.Run]) -> list[str]:
    """`runs list`: name, pipeline, state, creation time, labels."""
    rows = [
        [
            run.name,
            run.pipeline,
            run_state_label(run.state),
            format_time(run.create_time),
            ",".join(f"{key}={run.labels[key]}" for key in sorted(run.labels)),
        ]
        for run in runs
    ]
    return table(["NAME", "PIPELINE", "STATE", "CREATED", "LABELS"], rows)


def step_lines(run: run_pb2.Run, now: datetime, *, ascii_only: bool = False) -> list[str]:
    """One line per step: state symbol, name, state, duration, cached flag, attempt."""
    symbols = _ASCII_SYMBOLS if ascii_only else _UNICODE_SYMBOLS
    width = max((len(step.name) for step in run.steps), default=0)
    lines = []
    for step in run.steps:
        flags = []
        if step.cached:
            flags.append("cached")
        if step.attempt > 1:
            flags.append(f"attempt {step.attempt}")
        state = step_state_label(step.state).lower()
        duration = _span(step.start_time, step.end_time, now)
        line = (
            f"  {symbols.get(step.state, '?')} {step.name:<{width}}  {state:<9}  {duration:>7}"
            f"  {' '.join(flags)}"
        )
        lines.append(line.rstrip())
    return lines


def render_frame(run: run_pb2.Run, now: datetime, *, ascii_only: bool = False) -> list[str]:
    """The live view of a run: a header with state and elapsed time, then its steps."""
    start = run.start_time if _is_set(run.start_time) else run.create_time
    elapsed = _span(start, run.end_time, now)
    header = f"{run.name}  {run.pipeline}  {run_state_label(run.state)}  r{run.revision}"
    if elapsed:
        header += f"  elapsed {elapsed}"
    return [header, *step_lines(run, now, ascii_only=ascii_only)]


def redraw(previous_height: int, lines: Sequence[str], width: int) -> str:
    """ANSI text replacing the previous frame, `previous_height` lines above the cursor.

    Lines are clipped to the terminal width: a wrapped line would take two rows and the
    next redraw would move up too few.
    """
    up = f"\x1b[{previous_height}A\r" if previous_height else ""
    clipped = [line[: max(width, 1)] for line in lines]
    return up + "\x1b[J" + "".join(f"{line}\n" for line in clipped)


def _step_key(step: run_pb2.Step) -> tuple[int, int, bool]:
    return (step.state, step.attempt, step.cached)


def _step_change(head: str, step: run_pb2.Step) -> str:
    line = f"{head} step {step.name} {step_state_label(step.state)}"
    if step.cached and step.state != run_pb2.STEP_STATE_CACHED:
        line += " cached"
    if step.attempt > 1:
        line += f" attempt {step.attempt}"
    if step.HasField("error") and step.error.message:
        line += f": {step.error.message}"
    return line


def change_lines(previous: run_pb2.Run | None, current: run_pb2.Run) -> list[str]:
    """Append-only lines for what changed from `previous` to `current` (None: the first).

    Each line is "<update time> <run> r<revision> <run state>", followed for a step by
    "step <name> <step state>". A run-state change is listed before the step changes of
    the same snapshot, except a terminal one, which comes last so a log ends with it.
    """
    timestamp = current.update_time if _is_set(current.update_time) else current.create_time
    state = run_state_label(current.state)
    head = f"{format_time(timestamp)} {current.name} r{current.revision} {state}"
    before = {step.name: _step_key(step) for step in previous.steps} if previous else {}
    steps = [
        _step_change(head, step)
        for step in current.steps
        if before.get(step.name) != _step_key(step)
    ]
    if previous is not None and previous.state == current.state:
        return steps
    run_line = head
    if current.HasField("error") and current.error.message:
        run_line += f": {current.error.message}"
    if current.state in TERMINAL_RUN_STATES:
        return [*steps, run_line]
    return [run_line, *steps]


def _status_code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


def outcome_lines(run: run_pb2.Run) -> list[str]:
    """What a finished run left behind: its outputs, or why it failed."""
    lines: list[str] = []
    if run.state == run_pb2.RUN_STATE_SUCCEEDED:
        if run.outputs:
            width = max(len(artifact.name) for artifact in run.outputs)
            lines.append("outputs:")
            lines += [f"  {artifact.name:<{width}}  {artifact.uri}" for artifact in run.outputs]
        if run.output_parameters.fields:
            lines.append("output parameters:")
            lines += [f"  {item}" for item in _struct_items(run.output_parameters)]
        if not lines:
            lines.append("no outputs")
    elif run.state == run_pb2.RUN_STATE_FAILED:
        if run.HasField("error"):
            lines.append(
                f"error: {_status_code_name(run.error.code)}: {run.error.message or 'run failed'}"
            )
        else:
            lines.append("error: run failed")
        lines += [
            f"  step {step.name}: {step.error.message}"
            for step in run.steps
            if step.state == run_pb2.STEP_STATE_FAILED and step.error.message
        ]
    elif run.state == run_pb2.RUN_STATE_CANCELLED:
        lines.append("cancelled")
    if run.backend_run_url:
        lines.append(f"backend: {run.backend_run_url}")
    return lines


def describe_run(run: run_pb2.Run, now: datetime, *, ascii_only: bool = False) -> list[str]:
    """`runs get`: the run's fields, its steps, and its outcome once finished."""
    pipeline = run.pipeline
    if run.pipeline_version:
        pipeline += f" @ {short_version(run.pipeline_version)}"
    lines = [
        f"name:        {run.name}",
        f"pipeline:    {pipeline}",
        f"state:       {run_state_label(run.state)} (r{run.revision})",
        f"created:     {format_time(run.create_time)}",
        f"started:     {format_time(run.start_time)}",
        f"ended:       {format_time(run.end_time)}",
    ]
    if run.labels:
        labels = ", ".join(f"{key}={run.labels[key]}" for key in sorted(run.labels))
        lines.append(f"labels:      {labels}")
    if run.parameters.fields:
        lines.append(f"parameters:  {', '.join(_struct_items(run.parameters))}")
    if run.request_id:
        lines.append(f"request id:  {run.request_id}")
    if run.retry_of:
        lines.append(f"retry of:    {run.retry_of}")
    if run.backend:
        lines.append(f"backend:     {run.backend} {run.backend_run_id}".rstrip())
    if run.steps:
        lines += ["steps:", *step_lines(run, now, ascii_only=ascii_only)]
    if run.state in TERMINAL_RUN_STATES:
        lines += outcome_lines(run)
    return lines


def error_lines(error: RPCError, server: str) -> list[str]:
    """A failed call as one line, then the BadRequest field violations and ErrorInfo metadata."""
    code = error.code.name
    if code == "UNAVAILABLE" and not error.reason:
        # No ErrorInfo: the transport failed before reaching the service.
        return [
            f"error: cannot reach the service at {server} ({code}: {error.message})",
            "  is it running? start it with: skit-pipelines serve",
        ]
    if code == "DEADLINE_EXCEEDED" and not error.reason:
        return [f"error: the service at {server} did not answer in time ({code}); see --timeout"]
    label = code if error.reason in ("", code) else f"{code}: {error.reason}"
    lines = [f"error: {error.message or code.lower()} ({label})"]
    lines += [f"  {violation.field}: {violation.description}" for violation in error.violations]
    lines += [f"  {key}: {error.metadata[key]}" for key in sorted(error.metadata)]
    return lines


def emit(lines: Sequence[str], out: TextIO) -> None:
    """Prints each line."""
    for line in lines:
        print(line, file=out)


def print_json(messages: Message | Sequence[Message], out: TextIO) -> None:
    """Prints a message as a JSON object, or messages as a JSON array."""
    if isinstance(messages, Message):
        print(json_format.MessageToJson(messages), file=out)
    else:
        print(json.dumps([json_format.MessageToDict(m) for m in messages], indent=2), file=out)


def needs_ascii(stream: TextIO) -> bool:
    """Whether `stream` cannot encode the step symbols, so the ASCII ones must do."""
    try:
        "".join(_UNICODE_SYMBOLS.values()).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return True
    return False
