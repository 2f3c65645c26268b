"""`python -m benchmarks [name ...]`: runs the benchmarks, prints a table of figures and,
when all of them ran, writes it to docs/benchmarks.md.

A missed target is a figure marked "target missed", and a benchmark that cannot run
becomes a figure saying why: the exit status is 0 either way, so a slow machine never
fails a build."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc

from benchmarks.report import Figure, render

BENCHMARKS = {
    "getrun": "benchmarks.getrun",
    "createrun": "benchmarks.createrun",
    "watch": "benchmarks.watch_fanout",
    "listruns": "benchmarks.listruns",
    "executor": "benchmarks.executor_overhead",
    "kfp-local": "benchmarks.kfp_local",
    "cold-start": "benchmarks.cold_start",
    "slu": "benchmarks.retrain_slu",
    "fetch_calls": "benchmarks.fetch_calls_psql",
}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- figures: begin -->", "<!-- figures: end -->"


def _machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return (
        f"{os.cpu_count()} cores ({cpu}); Python {platform.python_version()},"
        f" grpcio {grpc.__version__}"
    )


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def write_docs(table: str, context: str, path: Path = DOCS) -> None:
    """Replaces the figures between the markers of `path` (the notes around them stay),
    or creates the file."""
    block = f"{BEGIN}\n{context}\n\n{table}\n{END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{END}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        re.sub(f"{re.escape(BEGIN)}.*?{re.escape(END)}", lambda _: block, text, flags=re.S)
    )


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part)


def _options(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Keyword arguments of each benchmark's run() from the command line."""
    return {
        "watch": {
            "sizes": args.watch_sizes,
            "held_streams": args.held_streams,
            "processes": args.watch_clients,
        },
        "listruns": {"runs": args.runs},
        "getrun": {"processes": args.getrun_clients},
    }


def _run_one(
    name: str, run: Callable[..., list[Figure]], kwargs: dict[str, object]
) -> list[Figure]:
    """The benchmark's figures, each with the load average it ran at; a failure becomes a
    figure that says so."""
    load, started = _load(), time.perf_counter()
    try:
        figures = run(**kwargs)
    except Exception as exc:
        traceback.print_exc()
        figures = [
            Figure(
                name=f"{name}: could not run",
                value=float("nan"),
                unit="",
                baseline=None,
                detail=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                target="-",
                met=False,
            )
        ]
    elapsed = time.perf_counter() - started
    print(f"{name}: {elapsed:.0f} s", file=sys.stderr, flush=True)
    suffix = f" [load {load} -> {_load()}, {elapsed:.0f} s]"
    return [dataclasses.replace(f, detail=f.detail + suffix) for f in figures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument(
        "--watch-sizes",
        type=_sizes,
        default=(100, 1_000, 5_000),
        help="watchers of the WatchRun fan-out, comma-separated (default 100,1000,5000)",
    )
    parser.add_argument(
        "--held-streams",
        type=int,
        default=10_000,
        help="WatchRun streams held for the memory figure, 0 for none (default 10000)",
    )
    parser.add_argument(
        "--watch-clients", type=int, default=2, help="client processes of the watchers (default 2)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1_000_000,
        help="runs in the ListRuns stores (default 1000000; 100000 for a quick run)",
    )
    parser.add_argument(
        "--getrun-clients",
        type=_sizes,
        default=(1, 2, 3),
        help="GetRun client process counts, comma-separated (default 1,2,3)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started, load_before = datetime.now(UTC), _load()
    clock = time.perf_counter()
    options = _options(args)
    figures = []
    for name in args.names or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(BENCHMARKS[name])
        figures.extend(_run_one(name, module.run, options.get(name, {})))
    table = render(figures)
    missed = [f.name for f in figures if not f.met]
    summary = (
        f"{len(figures) - len(missed)} of {len(figures)} targets met"
        + (f"; target missed: {'; '.join(missed)}" if missed else "")
        + f". The whole bench took {(time.perf_counter() - clock) / 60:.0f} min."
    )
    print(table)
    print(summary)
    if not args.names:
        write_docs(
            f"{table}\n\n{summary}",
            f"`make bench` on {started:%Y-%m-%d %H:%M} UTC: {_machine()}; load average"
            f" (1/5/15 min) {load_before} at the start, {_load()} at the end; each"
            " figure's detail ends with the load average before and after its benchmark.",
        )
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
