"""The skit-pipelines command: serve PipelineService, and drive it from a terminal.

Exit codes: 0 success, 1 a failed call or a run that did not succeed, 2 bad usage,
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from skit.pipelines.v1 import pipeline_pb2, pipeline_service_pb2, run_pb2
from skit_pipelines.config import ServerConfig
from skit_pipelines.errors import PipelinesError
from skit_pipelines_client import PipelinesClient, RPCError, TlsOptions, run_name

DEFAULT_SERVER = "127.0.0.1:50051"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

TERMINAL_RUN_STATES = frozenset(
    {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}
)

# The live view redraws at least this often (seconds) so elapsed times keep moving.
_LIVE_REFRESH = 0.5

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

_HOME_HELP = "state directory (SKIT_HOME; default .skit-pipelines)"

_T = TypeVar("_T")


class UsageError(Exception):
    """Bad input found after argument parsing (e.g. an unreadable --param-json file)."""


# Parsing command-line values.


def parse_value(text: str) -> Any:
    """A --param value: JSON when it parses (5, true, [1,2], {"a":1}, null), else the text.

    NaN and Infinity stay text: Python's json accepts them, but they are not JSON and
    no parameter type takes them.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE with the value parsed by parse_value."""
    key, value = _split_assignment(text)
    return key, parse_value(value)


def parse_label(text: str) -> tuple[str, str]:
    """KEY=VALUE with the value kept as text."""
    return _split_assignment(text)


def _split_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_run_state(text: str) -> run_pb2.RunState.ValueType:
    """A RunState from "running", "RUNNING" or "RUN_STATE_RUNNING"."""
    label = text.strip().upper().removeprefix("RUN_STATE_")
    names = run_pb2.RunState.keys()
    if label != "UNSPECIFIED" and f"RUN_STATE_{label}" in names:
        return run_pb2.RunState.Value(f"RUN_STATE_{label}")
    choices = ", ".join(
        name.removeprefix("RUN_STATE_").lower() for name in names if name != "RUN_STATE_UNSPECIFIED"
    )
    raise argparse.ArgumentTypeError(f"unknown state {text!r}; choose from {choices}")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-26T10:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Formatting: pure functions from messages to lines.


def run_state_label(state: int) -> str:
    """RUN_STATE_RUNNING -> "RUNNING"; unknown numbers (a newer server) print as numbers."""
    return _enum_label(run_pb2.RunState, state, "RUN_STATE_")


def step_state_label(state: int) -> str:
    """STEP_STATE_CACHED -> "CACHED"."""
    return _enum_label(run_pb2.StepState, state, "STEP_STATE_")


def _enum_label(enum: Any, value: int, prefix: str) -> str:
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


# Output.


def _emit(lines: Sequence[str], out: TextIO) -> None:
    for line in lines:
        print(line, file=out)


def _print_json(messages: Message | Sequence[Message], out: TextIO) -> None:
    if isinstance(messages, Message):
        print(json_format.MessageToJson(messages), file=out)
    else:
        print(json.dumps([json_format.MessageToDict(m) for m in messages], indent=2), file=out)


def _ascii_only(stream: TextIO) -> bool:
    try:
        "".join(_UNICODE_SYMBOLS.values()).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return True
    return False


class _LiveView:
    """Redraws a frame in place on a terminal; a note goes to stderr below the current
    frame, and the next frame is drawn below the note."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._height = 0

    def show(self, lines: Sequence[str]) -> None:
        width = shutil.get_terminal_size().columns
        self._out.write(redraw(self._height, lines, width))
        self._out.flush()
        self._height = len(lines)

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self._height = 0


# Watching.


@dataclass(frozen=True)
class _Note:
    text: str


class _Ticking(Generic[_T]):
    """The items of an iterator consumed on a thread, with None whenever `interval` passes
    without one (so a live view can refresh its clock while the stream is quiet), and the
    notes that thread makes in their place among the items.

    The thread is a daemon: on Ctrl-C, closing the client's channel ends its stream.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def note(self, text: str) -> None:
        """From the consuming thread: `text` comes out after the items before it."""
        self._events.put(("note", _Note(text)))

    def __call__(self, items: Iterator[_T]) -> Iterator[_T | _Note | None]:
        def pump() -> None:
            try:
                for item in items:
                    self._events.put(("item", item))
            except Exception as error:
                self._events.put(("error", error))
            else:
                self._events.put(("end", None))

        threading.Thread(target=pump, name="watch-stream", daemon=True).start()
        while True:
            try:
                kind, value = self._events.get(timeout=self._interval)
            except queue.Empty:
                yield None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value


def watch(
    client: PipelinesClient,
    name: str,
    out: TextIO,
    *,
    after_revision: int = 0,
    output: str = "text",
    live: bool = False,
) -> int:
    """Prints a run's progress until it finishes; EXIT_OK only if it SUCCEEDED."""
    name = run_name(name)
    # The live view draws on this thread; the stream is read on another, which also makes
    # the notes, so they travel with the snapshots to be shown in order.
    ticking: _Ticking[run_pb2.Run] | None = _Ticking(_LIVE_REFRESH) if live else None

    def on_resume(error: RPCError, delay: float) -> None:
        text = f"lost the stream of {name} ({error.code.name}); resuming in {delay:.1f}s"
        if ticking is None:
            print(text, file=sys.stderr)
        else:
            ticking.note(text)

    # The client resumes a dropped stream (or a restarted server) after the last revision.
    snapshots = client.watch(name, after_revision, on_resume=on_resume)
    try:
        if ticking is None:
            last = _show_progress(snapshots, out, json_output=output == "json")
        else:
            last = _show_live(ticking(snapshots), _LiveView(out), out)
    except KeyboardInterrupt:
        print(
            f"\nstopped watching; {name} keeps running"
            f" (`skit-pipelines runs cancel {name}` stops it)",
            file=sys.stderr,
        )
        raise
    if last is None or last.state not in TERMINAL_RUN_STATES:
        print(f"error: the stream of {name} ended before the run finished", file=sys.stderr)
        return EXIT_FAILURE
    if output != "json":
        _emit(outcome_lines(last), out)
    return EXIT_OK if last.state == run_pb2.RUN_STATE_SUCCEEDED else EXIT_FAILURE


def _show_progress(
    snapshots: Iterator[run_pb2.Run], out: TextIO, *, json_output: bool
) -> run_pb2.Run | None:
    """Prints each snapshot as it comes; returns the last one."""
    last: run_pb2.Run | None = None
    for run in snapshots:
        if json_output:
            print(json_format.MessageToJson(run, indent=None), file=out, flush=True)
        else:
            _emit(change_lines(last, run), out)
            out.flush()
        last = run
    return last


def _show_live(
    events: Iterator[run_pb2.Run | _Note | None], view: _LiveView, out: TextIO
) -> run_pb2.Run | None:
    """Redraws the last snapshot on every event; returns the last one."""
    last: run_pb2.Run | None = None
    ascii_only = _ascii_only(out)
    out.write("\x1b[?25l")  # hide the cursor while redrawing
    try:
        for event in events:
            if isinstance(event, _Note):
                view.note(event.text)
                continue
            if event is not None:
                last = event
            if last is not None:
                view.show(render_frame(last, datetime.now(UTC), ascii_only=ascii_only))
    finally:
        out.write("\x1b[?25h")
        out.flush()
    return last


# Commands. Remote ones take (client, args, out); local ones take (args, out).


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: the client commands need neither the server nor its dependencies.
    from skit_pipelines.server import serve

    config = _config_from_env().with_overrides(
        host=args.host,
        port=args.port,
        home=args.home,
        tokens_file=args.tokens_file,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        insecure=args.insecure,
        store_url=args.store,
        artifacts_url=args.artifacts,
        s3_endpoint_url=args.s3_endpoint_url,
        backend=args.backend,
        kfp_host=args.kfp_host,
        kfp_ui_url=args.kfp_ui_url,
        kfp_images_lock=args.kfp_images_lock,
        traces_exporter=args.traces_exporter,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_otlp=args.metrics_otlp,
        otlp_endpoint=args.otlp_endpoint,
    )
    return serve(config)


def _tokens_add(args: argparse.Namespace, out: TextIO) -> int:
    from skit_pipelines.auth import add_token

    token = add_token(args.tokens_file, args.name, args.role)
    print(token, file=out)
    print(
        f"created a {args.role} token for {args.name}; it is shown only now"
        f" (the file keeps its hash): {args.tokens_file}",
        file=sys.stderr,
    )
    return EXIT_OK


def _config_from_env() -> ServerConfig:
    try:
        return ServerConfig.from_env()
    except ValueError as error:
        raise UsageError(f"bad SKIT_* environment variable: {error}") from error


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _demo_data(args: argparse.Namespace, out: TextIO) -> int:
    from skit_demo import generate

    config = _config_from_env().with_overrides(home=args.home)
    if not (args.calls_db_url and args.metrics_db_url and args.annotations_db_url):
        config.demo_root.mkdir(parents=True, exist_ok=True)
    calls_db_url = args.calls_db_url or _sqlite_url(config.demo_root / "calls.db")
    metrics_db_url = args.metrics_db_url or _sqlite_url(config.demo_root / "metrics.db")
    # With databases named elsewhere, an annotation store appears only where it is named too.
    annotations_db_url = args.annotations_db_url or (
        None
        if args.calls_db_url or args.metrics_db_url
        else _sqlite_url(config.demo_root / "annotations.db")
    )
    # Only what was given: generate's own defaults apply otherwise.
    given = {"seed": args.seed, "calls": args.calls}
    options = {key: value for key, value in given.items() if value is not None}
    summary = generate(
        calls_db_url, metrics_db_url, annotations_db_url=annotations_db_url, **options
    )
    if isinstance(summary, Mapping):
        _emit([f"{key}: {value}" for key, value in summary.items()], out)
    else:
        print(summary, file=out)
    return EXIT_OK


def _show(
    args: argparse.Namespace,
    out: TextIO,
    messages: Message | Sequence[Message],
    text: Callable[[], Sequence[str]],
) -> int:
    """Prints the messages as JSON with --output json, else the text lines."""
    if args.output == "json":
        _print_json(messages, out)
    else:
        _emit(text(), out)
    return EXIT_OK


def _pipelines_list(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    pipelines = client.list_pipelines()
    return _show(args, out, pipelines, lambda: pipelines_table(pipelines))


def _pipelines_get(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    pipeline = client.get_pipeline(args.name)
    return _show(args, out, pipeline, lambda: describe_pipeline(pipeline))


def _read_param_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        values = json.loads(text)
    except (OSError, ValueError) as error:
        raise UsageError(f"--param-json {path}: {error}") from error
    if not isinstance(values, dict):
        raise UsageError(f"--param-json {path}: expected a JSON object")
    return values


def _runs_create(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    parameters = _read_param_file(args.param_json) if args.param_json else {}
    parameters.update(args.params)
    run = client.create_run(
        args.pipeline,
        parameters,
        dict(args.labels),
        run_id=args.run_id,
        request_id=args.request_id,
    )
    if args.output == "json" and not args.watch:
        _print_json(run, out)
        return EXIT_OK
    if args.output != "json":
        print(run.name, file=out, flush=True)
    if not args.watch:
        return EXIT_OK
    return watch(client, run.name, out, output=args.output, live=_is_live(args, out))


def _runs_get(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    run = client.get_run(args.name)
    return _show(
        args, out, run, lambda: describe_run(run, datetime.now(UTC), ascii_only=_ascii_only(out))
    )


def _runs_list(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    runs_iter = client.list_runs(
        pipeline=args.pipeline,
        states=args.states,
        labels=dict(args.labels),
        created_after=args.created_after,
        created_before=args.created_before,
        page_size=min(args.limit, 1000) if args.limit else None,
    )
    runs = list(itertools.islice(runs_iter, args.limit or None))
    return _show(args, out, runs, lambda: runs_table(runs))


def _runs_cancel(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    run = client.cancel_run(args.name)
    return _show(args, out, run, lambda: [f"{run.name} {run_state_label(run.state)}"])


def _runs_retry(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    run = client.retry_run(args.name, run_id=args.run_id, request_id=args.request_id)
    if not args.watch:
        return _show(args, out, run, lambda: [run.name])
    if args.output != "json":
        print(run.name, file=out, flush=True)
    return watch(client, run.name, out, output=args.output, live=_is_live(args, out))


def _runs_logs(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    lines = client.read_step_logs(args.name, args.step, follow=args.follow, attempt=args.attempt)
    for line in lines:
        if args.output == "json":
            _print_json(line, out)
            continue
        marker = "!" if line.stream == pipeline_service_pb2.LOG_STREAM_STDERR else " "
        print(f"{format_time(line.time)} #{line.attempt}{marker} {line.text}", file=out, flush=True)
    return EXIT_OK


def _runs_watch(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    return watch(
        client,
        args.name,
        out,
        after_revision=args.after_revision,
        output=args.output,
        live=_is_live(args, out),
    )


def _is_live(args: argparse.Namespace, out: TextIO) -> bool:
    return args.output == "text" and out.isatty()


# The parser.


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser; `environ` supplies the default of --server (SKIT_SERVER)."""
    parser = argparse.ArgumentParser(
        prog="skit-pipelines",
        description="Run reusable ML pipelines through the skit-pipelines service.",
    )
    # The connection options are accepted before the command and after it; the copies
    # on subcommands default to SUPPRESS so they never overwrite an earlier value.
    _add_connection_options(parser, environ)
    common = argparse.ArgumentParser(add_help=False)
    _add_connection_options(common, None)

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Serve PipelineService. Flags override SKIT_HOST, SKIT_PORT and SKIT_HOME.",
    )
    serve.add_argument("--host", help="address to listen on (SKIT_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="port to listen on, 0 for any (SKIT_PORT; default 50051)"
    )
    serve.add_argument("--home", type=Path, help=_HOME_HELP)
    serve.add_argument(
        "--tokens-file",
        type=Path,
        help="turn authentication on with this tokens file (SKIT_TOKENS_FILE)",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain (SKIT_TLS_CERT)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key (SKIT_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help="require client certificates signed by this CA: mutual TLS (SKIT_TLS_CLIENT_CA)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback address without authentication (SKIT_INSECURE)",
    )
    scale_out = serve.add_argument_group(
        "scale-out",
        "several replicas share a PostgreSQL run store and S3 artifacts, and may run"
        " pipelines on Kubeflow; the KFP credentials come from SKIT_KFP_TOKEN or"
        " SKIT_KFP_COOKIE, never from flags",
    )
    scale_out.add_argument(
        "--store",
        metavar="URL",
        help="run store: sqlite:///path or postgresql://user@host/db (SKIT_STORE;"
        " default sqlite under --home)",
    )
    scale_out.add_argument(
        "--artifacts",
        metavar="URL",
        help="artifact store: file:///path or s3://bucket/prefix (SKIT_ARTIFACTS;"
        " default a directory under --home)",
    )
    scale_out.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="S3 endpoint override, e.g. MinIO (SKIT_S3_ENDPOINT_URL; default: the AWS"
        " configuration's)",
    )
    scale_out.add_argument(
        "--backend",
        choices=("local", "kubeflow"),
        help="where runs execute (SKIT_BACKEND; default local)",
    )
    scale_out.add_argument(
        "--kfp-host", metavar="URL", help="Kubeflow Pipelines API endpoint (SKIT_KFP_HOST)"
    )
    scale_out.add_argument(
        "--kfp-ui-url",
        metavar="URL",
        help="Kubeflow Pipelines UI base URL for run links (SKIT_KFP_UI_URL; default --kfp-host)",
    )
    scale_out.add_argument(
        "--kfp-images-lock",
        type=Path,
        metavar="PATH",
        help="the images lock whose digests pin the images of pipelines run on Kubeflow"
        " (SKIT_KFP_IMAGES_LOCK; default images/images.lock.json)",
    )
    observability = serve.add_argument_group(
        "observability", "OpenTelemetry traces and metrics (README.md: Observability)"
    )
    observability.add_argument(
        "--traces-exporter",
        choices=("none", "console", "otlp"),
        help="where spans go (SKIT_TRACES_EXPORTER; default none)",
    )
    observability.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://--metrics-host:PORT/metrics, 0 for any port"
        " (SKIT_METRICS_PORT; default off)",
    )
    observability.add_argument(
        "--metrics-host", help="address of /metrics (SKIT_METRICS_HOST; default 127.0.0.1)"
    )
    observability.add_argument(
        "--metrics-otlp",
        action="store_true",
        default=None,
        help="also push metrics over OTLP (SKIT_METRICS_OTLP)",
    )
    observability.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="OTLP/gRPC collector, e.g. http://collector:4317 (SKIT_OTLP_ENDPOINT; default"
        " OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317)",
    )
    serve.set_defaults(local=_serve)

    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="COMMAND"
    )
    tokens_add = tokens.add_parser(
        "add",
        help="create a token, print it once, store only its hash",
        description="Create a token for a principal. The token is printed once; the tokens "
        "file keeps only its SHA-256 hash, the principal name and the role.",
    )
    tokens_add.add_argument("name", help="the principal, e.g. reports-service")
    tokens_add.add_argument(
        "--role",
        required=True,
        choices=("viewer", "runner", "admin"),
        help="viewer: read and watch; runner: also create, cancel and retry its own runs;"
        " admin: everything",
    )
    tokens_add.add_argument("--tokens-file", type=Path, required=True)
    tokens_add.set_defaults(local=_tokens_add)

    demo = commands.add_parser(
        "demo-data",
        help="generate the demo calls and metrics databases",
        description="Generate demo databases; by default SQLite files under <home>/demo/.",
    )
    demo.add_argument("--home", type=Path, help=_HOME_HELP)
    demo.add_argument("--calls", type=int, help="how many calls to generate")
    demo.add_argument("--seed", type=int, help="random seed, for reproducible data")
    demo.add_argument(
        "--calls-db-url", help="calls database (default sqlite:///<home>/demo/calls.db)"
    )
    demo.add_argument(
        "--metrics-db-url", help="metrics database (default sqlite:///<home>/demo/metrics.db)"
    )
    demo.add_argument(
        "--annotations-db-url",
        help="annotation store (default sqlite:///<home>/demo/annotations.db)",
    )
    demo.set_defaults(local=_demo_data)

    pipelines = commands.add_parser("pipelines", help="list and inspect pipelines").add_subparsers(
        dest="pipelines_command", required=True, metavar="COMMAND"
    )
    pipelines_list = pipelines.add_parser("list", parents=[common], help="list the pipelines")
    pipelines_list.set_defaults(remote=_pipelines_list)
    pipelines_get = pipelines.add_parser(
        "get", parents=[common], help="show a pipeline and its parameters"
    )
    pipelines_get.add_argument("name", help='"x" or "pipelines/x"')
    pipelines_get.set_defaults(remote=_pipelines_get)

    runs = commands.add_parser("runs", help="start, inspect and watch runs").add_subparsers(
        dest="runs_command", required=True, metavar="COMMAND"
    )
    create = runs.add_parser(
        "create",
        parents=[common],
        help="start a run",
        description="Start a run and print its name. --param values are JSON when they parse "
        '(5, true, [1,2], {"a":1}), else text; quote to force text: --param \'id="007"\'.',
    )
    create.add_argument("pipeline", help='"x" or "pipelines/x"')
    create.add_argument(
        "--param",
        dest="params",
        action="append",
        type=parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (repeatable)",
    )
    create.add_argument(
        "--param-json",
        metavar="FILE",
        help="a JSON object of parameters (- for stdin); --param overrides it",
    )
    create.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label (repeatable)",
    )
    create.add_argument("--run-id", help="the new run's id (default: chosen by the service)")
    create.add_argument(
        "--request-id", help="idempotency key: repeating the command returns the same run"
    )
    create.add_argument(
        "--watch", action="store_true", help="watch the run; exit 0 only if it succeeds"
    )
    create.set_defaults(remote=_runs_create)

    get = runs.add_parser("get", parents=[common], help="show a run")
    get.add_argument("name", help='"abc" or "runs/abc"')
    get.set_defaults(remote=_runs_get)

    list_ = runs.add_parser("list", parents=[common], help="list runs, newest first")
    list_.add_argument("--pipeline", help="only runs of this pipeline")
    list_.add_argument(
        "--state",
        dest="states",
        action="extend",
        nargs="+",
        type=parse_run_state,
        default=[],
        metavar="STATE",
        help="only runs in one of these states (queued, running, succeeded, ...)",
    )
    list_.add_argument(
        "--label",
        dest="labels",
        action="append",
        type=parse_label,
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable)",
    )
    list_.add_argument(
        "--created-after", type=parse_time, metavar="TIME", help="only runs created at or after"
    )
    list_.add_argument(
        "--created-before", type=parse_time, metavar="TIME", help="only runs created before"
    )
    list_.add_argument(
        "--limit",
        type=_count,
        default=50,
        metavar="N",
        help="at most N runs (default 50; 0 for all)",
    )
    list_.set_defaults(remote=_runs_list)

    cancel = runs.add_parser("cancel", parents=[common], help="cancel a run")
    cancel.add_argument("name", help='"abc" or "runs/abc"')
    cancel.set_defaults(remote=_runs_cancel)

    retry = runs.add_parser(
        "retry",
        parents=[common],
        help="start a new run of a failed or cancelled run, reusing its succeeded steps",
    )
    retry.add_argument("name", help='"abc" or "runs/abc"')
    retry.add_argument("--run-id", help="id of the new run (default: chosen by the server)")
    retry.add_argument("--request-id", help="idempotency key: a retry with the same id is a no-op")
    retry.add_argument("--watch", action="store_true", help="follow the new run until it ends")
    retry.set_defaults(remote=_runs_retry)

    logs = runs.add_parser("logs", parents=[common], help="print a step's output")
    logs.add_argument("name", help='"abc" or "runs/abc"')
    logs.add_argument("step", help='the step name as `runs get` shows it, e.g. "fetch-calls"')
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the step finishes"
    )
    logs.add_argument(
        "--attempt", type=_count, default=0, metavar="N", help="only attempt N (default: all)"
    )
    logs.set_defaults(remote=_runs_logs)

    watch_ = runs.add_parser(
        "watch",
        parents=[common],
        help="follow a run until it finishes",
        description="Follow a run: a live view on a terminal, one line per change otherwise. "
        "Exits 0 if the run succeeds, 1 if it fails or is cancelled.",
    )
    watch_.add_argument("name", help='"abc" or "runs/abc"')
    watch_.add_argument(
        "--after-revision",
        type=_count,
        default=0,
        metavar="N",
        help="resume after revision N instead of starting from the current state",
    )
    watch_.set_defaults(remote=_runs_watch)
    return parser


def _add_connection_options(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None
) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if environ is None else value

    server = environ.get("SKIT_SERVER", DEFAULT_SERVER) if environ is not None else None
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default(server),
        help=f"the service (SKIT_SERVER; default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default=default("text"),
        help="text for people, json for scripts (default text)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(30.0),
        help="deadline of each call, watches excepted (default 30)",
    )
    parser.add_argument(
        "--token",
        default=default(environ.get("SKIT_TOKEN") if environ is not None else None),
        help="bearer token (SKIT_TOKEN)",
    )
    for flag, env, what in (
        ("--tls-ca", "SKIT_TLS_CA", "PEM roots to trust; turns TLS on"),
        ("--tls-cert", "SKIT_TLS_CLIENT_CERT", "client certificate for mutual TLS"),
        ("--tls-key", "SKIT_TLS_CLIENT_KEY", "client key for mutual TLS"),
    ):
        parser.add_argument(
            flag,
            type=Path,
            default=default(Path(environ[env]) if environ and environ.get(env) else None),
            help=f"{what} ({env})",
        )


def main(argv: list[str] | None = None) -> int:
    """Runs the command in `argv` (default sys.argv[1:]) and returns the exit code."""
    parser = build_parser(os.environ)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    out = sys.stdout
    try:
        if hasattr(args, "local"):
            return args.local(args, out)
        tls = None
        if args.tls_ca or args.tls_cert or args.tls_key:
            tls = TlsOptions(
                ca_cert=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key
            )
        with PipelinesClient(
            args.server, timeout=args.timeout, token=args.token, tls=tls
        ) as client:
            return args.remote(client, args, out)
    except RPCError as error:
        _emit(error_lines(error, args.server), sys.stderr)
        return EXIT_FAILURE
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PipelinesError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; point stdout at devnull so the flush at
        # exit does not raise again (the recipe in the `signal` module's docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
