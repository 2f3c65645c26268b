"""Following a run: one line per change, or a live view redrawn in place on a terminal."""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TextIO, TypeVar

from skit_pipelines_cli.exits import EXIT_FAILURE, EXIT_OK
from skit_pipelines_cli.render import (
    change_lines,
    emit,
    needs_ascii,
    outcome_lines,
    print_json,
    redraw,
    render_frame,
    run_change_json,
    run_change_line,
)
from skit_pipelines_client import PipelinesClient, RPCError, Run, RunState, run_name

# The live view redraws at least this often (seconds) so elapsed times keep moving.
_LIVE_REFRESH = 0.5

_T = TypeVar("_T")


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
    ticking: _Ticking[Run] | None = _Ticking(_LIVE_REFRESH) if live else None

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
    if last is None or not last.state.terminal:
        print(f"error: the stream of {name} ended before the run finished", file=sys.stderr)
        return EXIT_FAILURE
    if output != "json":
        emit(outcome_lines(last), out)
    return EXIT_OK if last.state is RunState.SUCCEEDED else EXIT_FAILURE


def watch_all(client: PipelinesClient, args: argparse.Namespace, out: TextIO) -> int:
    """`runs watch --all`: a line (or JSON object) per change of every matching run, until
    interrupted; a lost connection is resumed from the last cursor (by the client)."""

    def on_resume(error: RPCError, delay: float) -> None:
        print(f"lost the stream ({error.code.name}); resuming in {delay:.1f}s", file=sys.stderr)

    changes = client.watch_runs(
        pipeline=args.pipeline,
        states=args.states,
        labels=dict(args.labels),
        created_after=args.created_after,
        created_before=args.created_before,
        after_cursor=args.after_cursor,
        initial_snapshot=args.initial,
        on_resume=on_resume,
    )
    last = args.after_cursor
    try:
        for change in changes:
            last = change.cursor or last
            if args.output == "json":
                print(json.dumps(run_change_json(change), ensure_ascii=False), file=out)
            else:
                line = run_change_line(change)
                if line is None:
                    continue
                print(line, file=out)
            out.flush()
    except KeyboardInterrupt:
        resume = f" (resume with --after-cursor {last})" if last else ""
        print(f"\nstopped watching{resume}", file=sys.stderr)
        raise
    return EXIT_OK


def _show_progress(snapshots: Iterator[Run], out: TextIO, *, json_output: bool) -> Run | None:
    """Prints each snapshot as it comes; returns the last one."""
    last: Run | None = None
    for run in snapshots:
        if json_output:
            print_json(run, out, indent=None)
            out.flush()
        else:
            emit(change_lines(last, run), out)
            out.flush()
        last = run
    return last


def _show_live(events: Iterator[Run | _Note | None], view: _LiveView, out: TextIO) -> Run | None:
    """Redraws the last snapshot on every event; returns the last one."""
    last: Run | None = None
    ascii_only = needs_ascii(out)
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
