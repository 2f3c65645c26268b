"""One function per command, and `dispatch`, which runs the parsed one.

Each takes (client, args, out): the local ones, which need no service, are in `local`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from skit_pipelines_cli.exits import EXIT_OK
from skit_pipelines_cli.live import watch, watch_all
from skit_pipelines_cli.render import (
    Printable,
    describe_pipeline,
    describe_run,
    emit,
    format_time,
    needs_ascii,
    pipelines_table,
    print_json,
    runs_table,
)
from skit_pipelines_cli.schedule_commands import (  # noqa: F401  (dispatched by name)
    schedules_backfill,
    schedules_create,
    schedules_delete,
    schedules_get,
    schedules_list,
    schedules_pause,
    schedules_resume,
    schedules_update,
)
from skit_pipelines_cli.subscription_commands import (  # noqa: F401  (dispatched by name)
    subscriptions_create,
    subscriptions_delete,
    subscriptions_deliveries,
    subscriptions_get,
    subscriptions_list,
)
from skit_pipelines_cli.values import UsageError
from skit_pipelines_client import PipelinesClient, TlsOptions, run_name

# The service caps ListRuns pages at this many runs (skit_pipelines.runs.MAX_PAGE_SIZE).
_MAX_PAGE_SIZE = 1000

RemoteCommand = Callable[[PipelinesClient, argparse.Namespace, TextIO], int]


def dispatch(args: argparse.Namespace, out: TextIO) -> int:
    """Runs the parsed remote command (named by the parser) on a client connected as the
    options say."""
    remote: RemoteCommand = globals()[args.remote]
    with _connect(args) as client:
        return remote(client, args, out)


def _connect(args: argparse.Namespace) -> PipelinesClient:
    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        tls = TlsOptions(ca_cert=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key)
    return PipelinesClient(args.server, timeout=args.timeout, token=args.token, tls=tls)


def _show(
    args: argparse.Namespace,
    out: TextIO,
    items: Printable | Sequence[Printable],
    text: Callable[[], Sequence[str]],
) -> int:
    """Prints the objects as JSON with --output json, else the text lines."""
    if args.output == "json":
        print_json(items, out)
    else:
        emit(text(), out)
    return EXIT_OK


def pipelines_list(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`pipelines list`."""
    pipelines = client.list_pipelines()
    return _show(args, out, pipelines, lambda: pipelines_table(pipelines))


def pipelines_get(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`pipelines get`."""
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


def runs_create(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs create`: --param-json, then each --param over it; --watch follows the run."""
    parameters = _read_param_file(args.param_json) if args.param_json else {}
    parameters.update(args.params)
    run = client.create_run(
        args.pipeline,
        parameters,
        dict(args.labels),
        run_id=args.run_id,
        request_id=args.request_id,
        disable_cache=args.disable_cache,
    )
    if args.output == "json" and not args.watch:
        print_json(run, out)
        return EXIT_OK
    if args.output != "json":
        print(run.name, file=out, flush=True)
    if not args.watch:
        return EXIT_OK
    return watch(client, run.name, out, output=args.output, live=_is_live(args, out))


def runs_get(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs get`."""
    run = client.get_run(args.name)
    return _show(
        args, out, run, lambda: describe_run(run, datetime.now(UTC), ascii_only=needs_ascii(out))
    )


def runs_list(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs list`: at most --limit runs, fetched page by page."""
    runs_iter = client.list_runs(
        pipeline=args.pipeline,
        states=args.states,
        labels=dict(args.labels),
        created_after=args.created_after,
        created_before=args.created_before,
        page_size=min(args.limit, _MAX_PAGE_SIZE) if args.limit else None,
    )
    runs = list(itertools.islice(runs_iter, args.limit or None))
    return _show(args, out, runs, lambda: runs_table(runs))


def runs_cancel(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs cancel`: the run, CANCELLING; an error (exit 1) for a run that has ended."""
    run = client.cancel_run(args.name)
    return _show(args, out, run, lambda: [f"{run.name} {run.state.name}"])


def runs_delete(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs delete`: a finished run, with its events, step logs and artifacts."""
    name = run_name(args.name)
    client.delete_run(name)
    if args.output == "json":
        print(json.dumps({"name": name, "deleted": True}), file=out)
    else:
        print(f"{name} deleted", file=out)
    return EXIT_OK


def runs_retry(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs retry`: prints the new run; --watch follows it."""
    run = client.retry_run(args.name, run_id=args.run_id, request_id=args.request_id)
    if not args.watch:
        return _show(args, out, run, lambda: [run.name])
    if args.output != "json":
        print(run.name, file=out, flush=True)
    return watch(client, run.name, out, output=args.output, live=_is_live(args, out))


def runs_logs(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs logs`: a line per log line, "!" marking stderr."""
    lines = client.read_step_logs(args.name, args.step, follow=args.follow, attempt=args.attempt)
    for line in lines:
        if args.output == "json":
            print_json(line, out)
            continue
        marker = "!" if line.stream == "stderr" else " "
        print(f"{format_time(line.time)} #{line.attempt}{marker} {line.text}", file=out, flush=True)
    return EXIT_OK


def runs_watch(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs watch NAME`, or `runs watch --all [filters]`."""
    filtering = (
        args.pipeline
        or args.states
        or args.labels
        or args.created_after
        or args.created_before
        or args.after_cursor
        or args.initial
    )
    if args.all_runs:
        if args.name:
            raise UsageError("runs watch: give a run or --all, not both")
        return watch_all(client, args, out)
    if not args.name:
        raise UsageError("runs watch: give a run to follow, or --all for every run")
    if filtering:
        raise UsageError(
            "runs watch: --pipeline, --state, --label, --created-*, --after-cursor and"
            " --initial go with --all"
        )
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
