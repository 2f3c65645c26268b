"""Turning the client's objects into text: state labels, times, tables, descriptions of
pipelines and runs, the live frame, change lines, errors; JSON output; the exit codes.

Pure functions from runs and pipelines (skit_pipelines_client's dataclasses, their values
already typed) to lines, except the few that print them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from skit_pipelines_client import (
    Artifact,
    ChangeKind,
    Pipeline,
    RPCError,
    Run,
    RunChange,
    RunState,
    Step,
    StepState,
)

# The step symbols: Unicode where the output can encode it, else ASCII.
_UNICODE_SYMBOLS = {
    StepState.PENDING: "·",
    StepState.RUNNING: "▶",
    StepState.SUCCEEDED: "✓",
    StepState.FAILED: "✗",
    StepState.SKIPPED: "↷",
    StepState.CACHED: "✓",
    StepState.CANCELLED: "⊘",
}
_ASCII_SYMBOLS = {
    StepState.PENDING: ".",
    StepState.RUNNING: ">",
    StepState.SUCCEEDED: "+",
    StepState.FAILED: "x",
    StepState.SKIPPED: "-",
    StepState.CACHED: "+",
    StepState.CANCELLED: "/",
}


def format_time(value: datetime | None) -> str:
    """2026-11-26T10:00:01Z, or "-" when unset."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(seconds: float) -> str:
    """4.2s, 3m07s, 2h05m."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _span(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """The time from start to end (or to now, while it lasts); "" before it starts."""
    if start is None:
        return ""
    return format_duration(((end or now) - start).total_seconds())


def short_version(version: str) -> str:
    """sha256:3f2a9c1b4d5e... -> 3f2a9c1b4d5e."""
    return version.partition(":")[2][:12] if ":" in version else version[:12]


def format_value(value: Any) -> str:
    """A (typed) parameter value as compact JSON: 5, 0.5, "en", [1, 2]."""
    return json.dumps(value, ensure_ascii=False)


def _items(values: Any) -> list[str]:
    return [f"{key}={format_value(values[key])}" for key in sorted(values)]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def pipelines_table(pipelines: Sequence[Pipeline]) -> list[str]:
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


def describe_pipeline(pipeline: Pipeline) -> list[str]:
    """`pipelines get`: the pipeline, its parameters as a table, then their rules."""
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
            parameter.type.name.lower(),
            "yes" if parameter.required else "no",
            "-" if parameter.default is None else format_value(parameter.default),
            parameter.description.strip().partition("\n")[0],
        ]
        for parameter in pipeline.parameters
    ]
    lines.append("")
    if not rows:
        lines.append("no parameters")
        return lines
    lines += table(["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"], rows)
    ruled = [
        [parameter.name, "; ".join(rule.description for rule in parameter.rules)]
        for parameter in pipeline.parameters
        if parameter.rules
    ]
    if ruled:
        # CreateRun refuses a value that breaks one of these (INVALID_ARGUMENT).
        lines += ["", *table(["PARAMETER", "MUST BE"], ruled)]
    return lines


def runs_table(runs: Sequence[Run]) -> list[str]:
    """`runs list`: name, pipeline, state, creation time, labels."""
    rows = [
        [
            run.name,
            run.pipeline,
            run.state.name,
            format_time(run.create_time),
            ",".join(f"{key}={run.labels[key]}" for key in sorted(run.labels)),
        ]
        for run in runs
    ]
    return table(["NAME", "PIPELINE", "STATE", "CREATED", "LABELS"], rows)


def step_lines(run: Run, now: datetime, *, ascii_only: bool = False) -> list[str]:
    """One line per step, in execution order: state symbol, name, state, duration, cached
    flag, attempt."""
    symbols = _ASCII_SYMBOLS if ascii_only else _UNICODE_SYMBOLS
    width = max((len(step.name) for step in run.steps), default=0)
    lines = []
    for step in run.steps:
        flags = []
        if step.cached:
            flags.append("cached")
        if step.attempt > 1:
            flags.append(f"attempt {step.attempt}")
        state = step.state.name.lower()
        duration = _span(step.start_time, step.end_time, now)
        line = (
            f"  {symbols.get(step.state, '?')} {step.name:<{width}}  {state:<9}  {duration:>7}"
            f"  {' '.join(flags)}"
        )
        lines.append(line.rstrip())
    return lines


def render_frame(run: Run, now: datetime, *, ascii_only: bool = False) -> list[str]:
    """The live view of a run: a header with state and elapsed time, then its steps."""
    elapsed = _span(run.start_time or run.create_time, run.end_time, now)
    header = f"{run.name}  {run.pipeline}  {run.state.name}  r{run.revision}"
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


def _step_key(step: Step) -> tuple[int, int, bool]:
    return (step.state, step.attempt, step.cached)


def _step_change(head: str, step: Step) -> str:
    line = f"{head} step {step.name} {step.state.name}"
    if step.cached and step.state is not StepState.CACHED:
        line += " cached"
    if step.attempt > 1:
        line += f" attempt {step.attempt}"
    if step.error is not None and step.error.message:
        line += f": {step.error.message}"
    return line


def change_lines(previous: Run | None, current: Run) -> list[str]:
    """Append-only lines for what changed from `previous` to `current` (None: the first).

    Each line is "<update time> <run> r<revision> <run state>", followed for a step by
    "step <name> <step state>". A run-state change is listed before the step changes of
    the same snapshot, except a terminal one, which comes last so a log ends with it.
    """
    head = (
        f"{format_time(current.update_time or current.create_time)} {current.name}"
        f" r{current.revision} {current.state.name}"
    )
    before = {step.name: _step_key(step) for step in previous.steps} if previous else {}
    steps = [
        _step_change(head, step)
        for step in current.steps
        if before.get(step.name) != _step_key(step)
    ]
    if previous is not None and previous.state == current.state:
        return steps
    run_line = head
    if current.error is not None and current.error.message:
        run_line += f": {current.error.message}"
    if current.state.terminal:
        return [*steps, run_line]
    return [run_line, *steps]


def outcome_lines(run: Run) -> list[str]:
    """What a finished run left behind: its outputs, or why it failed."""
    lines: list[str] = []
    if run.state is RunState.SUCCEEDED:
        if run.outputs:
            width = max(len(artifact.name) for artifact in run.outputs)
            lines.append("outputs:")
            lines += [f"  {artifact.name:<{width}}  {artifact.uri}" for artifact in run.outputs]
        if run.output_parameters:
            lines.append("output parameters:")
            lines += [f"  {item}" for item in _items(run.output_parameters)]
        if not lines:
            lines.append("no outputs")
    elif run.state is RunState.FAILED:
        error = run.error
        lines.append(
            f"error: {error.code.name}: {error.message or 'run failed'}"
            if error
            else "error: run failed"
        )
        # A step's error the run's already says (a run fails with its failed step's) is
        # not said again.
        said = error.message if error else ""
        lines += [
            f"  step {step.name}: {step.error.message}"
            for step in run.steps
            if step.state is StepState.FAILED
            and step.error is not None
            and step.error.message
            and step.error.message not in said
        ]
    elif run.state is RunState.CANCELLED:
        lines.append("cancelled")
    if run.backend_run_url:
        lines.append(f"backend: {run.backend_run_url}")
    return lines


_REPORT_TYPES = {
    "system.ClassificationMetrics": "classification metrics",
    "system.SlicedClassificationMetrics": "sliced classification metrics",
    "system.HTML": "HTML",
    "system.Markdown": "Markdown",
}
"""Artifact types `runs get` lists as reports (KFP's UI renders them as visualizations)."""


def _number(value: float) -> str:
    return format(value, ".6g")


def metric_lines(run: Run) -> list[str]:
    """`runs get`: each step's logged metrics (its Metrics outputs), one line per step."""
    rows = []
    for step in run.steps:
        if not step.metrics:
            continue
        several = len({metric.artifact for metric in step.metrics}) > 1
        values = [
            f"{metric.artifact + '.' if several else ''}{metric.name}={_number(metric.value)}"
            for metric in step.metrics
        ]
        rows.append((step.name, "  ".join(values)))
    if not rows:
        return []
    width = max(len(name) for name, _ in rows)
    return ["metrics:", *(f"  {name:<{width}}  {values}" for name, values in rows)]


def _report_summary(artifact: Artifact) -> str:
    """What a report artifact holds, in a few words: "3 classes, accuracy 0.9"."""
    metadata = artifact.metadata
    if artifact.type == "system.ClassificationMetrics":
        parts = []
        matrix = metadata.get("confusionMatrix") or {}
        rows = [row.get("row") or [] for row in matrix.get("rows") or []]
        if rows:
            total = sum(sum(row) for row in rows)
            hits = sum(row[i] for i, row in enumerate(rows) if i < len(row))
            parts.append(f"{len(rows)} classes")
            if total:
                parts.append(f"accuracy {_number(hits / total)}")
        if metadata.get("confidenceMetrics"):
            parts.append(f"{len(metadata['confidenceMetrics'])} thresholds")
        return ", ".join(parts)
    if artifact.type == "system.SlicedClassificationMetrics":
        return f"{len(metadata.get('evaluationSlices') or [])} slices"
    return ""


def report_lines(run: Run) -> list[str]:
    """`runs get`: the steps' report artifacts (classification metrics, HTML, Markdown)."""
    rows: list[tuple[str, str, str]] = []
    for step in run.steps:
        for artifact in step.output_artifacts:
            label = _REPORT_TYPES.get(artifact.type)
            if label is None:
                continue
            summary = _report_summary(artifact)
            kind = f"{label}: {summary}" if summary else label
            rows.append((f"{step.name}/{artifact.name}", kind, artifact.uri))
    if not rows:
        return []
    name_width = max(len(row[0]) for row in rows)
    kind_width = max(len(row[1]) for row in rows)
    return [
        "reports:",
        *(f"  {name:<{name_width}}  {kind:<{kind_width}}  {uri}" for name, kind, uri in rows),
    ]


def describe_run(run: Run, now: datetime, *, ascii_only: bool = False) -> list[str]:
    """`runs get`: the run's fields, its steps, and its outcome once finished."""
    pipeline = run.pipeline
    if run.pipeline_version:
        pipeline += f" @ {short_version(run.pipeline_version)}"
    lines = [
        f"name:        {run.name}",
        f"pipeline:    {pipeline}",
        f"state:       {run.state.name} (r{run.revision})",
        f"created:     {format_time(run.create_time)}",
        f"started:     {format_time(run.start_time)}",
        f"ended:       {format_time(run.end_time)}",
    ]
    if run.labels:
        labels = ", ".join(f"{key}={run.labels[key]}" for key in sorted(run.labels))
        lines.append(f"labels:      {labels}")
    if run.parameters:
        lines.append(f"parameters:  {', '.join(_items(run.parameters))}")
    if run.request_id:
        lines.append(f"request id:  {run.request_id}")
    if run.retry_of:
        lines.append(f"retry of:    {run.retry_of}")
    if run.disable_cache:
        lines.append("cache:       off")
    if run.backend:
        lines.append(f"backend:     {run.backend} {run.backend_run_id}".rstrip())
    if run.steps:
        lines += ["steps:", *step_lines(run, now, ascii_only=ascii_only)]
    lines += metric_lines(run)
    lines += report_lines(run)
    if run.state.terminal:
        lines += outcome_lines(run)
    return lines


def error_lines(error: RPCError, server: str) -> list[str]:
    """A failed call as one line, then the BadRequest field violations and ErrorInfo
    metadata, each once: the service's message often says them already ("invalid
    parameters for X: run.parameters.a: ...; run.parameters.b: ..."), and what it says is
    not repeated below it."""
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
    message = error.message or code.lower()
    violations = [f"{v.field}: {v.description}" for v in error.violations]
    if violations and violations[0] in message:
        # The message lists the violations after a headline: keep the headline, and the
        # violations one per line below it.
        message = message[: message.index(violations[0])].rstrip(": ;") or message
    else:
        violations = [
            text
            for text, violation in zip(violations, error.violations, strict=True)
            if violation.description not in message
        ]
    lines = [f"error: {message} ({label})"]
    lines += [f"  {text}" for text in violations]
    lines += [
        f"  {key}: {error.metadata[key]}"
        for key in sorted(error.metadata)
        if error.metadata[key] not in message
    ]
    return lines


def emit(lines: Sequence[str], out: TextIO) -> None:
    """Prints each line."""
    for line in lines:
        print(line, file=out)


class Printable(Protocol):
    """A client object that has a JSON form (Run, Pipeline, LogLine)."""

    def to_json(self) -> dict[str, Any]: ...


def print_json(
    items: Printable | Sequence[Printable], out: TextIO, *, indent: int | None = 2
) -> None:
    """Prints an object as a JSON object, or objects as a JSON array: the API's JSON (as
    grpcurl prints it), with values typed (20, not 20.0, for an integer)."""
    data: Any = items.to_json() if not isinstance(items, Sequence) else [i.to_json() for i in items]
    print(json.dumps(data, indent=indent, ensure_ascii=False), file=out)


def needs_ascii(stream: TextIO) -> bool:
    """Whether `stream` cannot encode the step symbols, so the ASCII ones must do."""
    try:
        "".join(_UNICODE_SYMBOLS.values()).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return True
    return False


def run_change_line(change: RunChange) -> str | None:
    """`runs watch --all`: one line per change (time, kind, run, pipeline, state,
    revision, labels); None for a heartbeat, which people need not see."""
    if change.kind is ChangeKind.HEARTBEAT:
        return None
    if change.kind is ChangeKind.SNAPSHOT_COMPLETE:
        return "-- the runs above match now; their changes follow --"
    if change.kind is ChangeKind.RELIST:
        return (
            "-- changes were lost (the resume point was too old to replay): list the runs"
            " again (`runs list`); changes from now follow --"
        )
    run = change.run
    if run is None:
        return None
    kind = {ChangeKind.SNAPSHOT: "now", ChangeKind.DELETED: "deleted"}.get(change.kind, "")
    labels = ",".join(f"{key}={run.labels[key]}" for key in sorted(run.labels))
    return (
        f"{format_time(run.update_time)}  {run.name}  {run.pipeline}  {run.state.name}"
        f"  r{run.revision}{f'  {kind}' if kind else ''}{f'  {labels}' if labels else ''}"
    )


def run_change_json(change: RunChange) -> dict[str, Any]:
    """`runs watch --all --output json`: one object per message, heartbeats included (their
    cursor is where to resume from)."""
    data: dict[str, Any] = {"kind": change.kind.name, "cursor": change.cursor}
    if change.run is not None:
        data["run"] = change.run.to_json()
    return data
