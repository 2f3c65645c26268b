"""`python -m benchmarks [name ...]`: runs the benchmarks, prints a table of figures and,
when all of them ran, writes it to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc

from benchmarks.report import render

BENCHMARKS = {
    "getrun": "benchmarks.getrun",
    "createrun": "benchmarks.createrun",
    "watch": "benchmarks.watch_fanout",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started, load_before = datetime.now(UTC), _load()
    figures = []
    for name in args.names or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        figures.extend(importlib.import_module(BENCHMARKS[name]).run())
    table = render(figures)
    print(table)
    if not args.names:
        write_docs(
            table,
            f"`make bench` on {started:%Y-%m-%d %H:%M} UTC: {_machine()}; load average"
            f" (1/5/15 min) {load_before} at the start, {_load()} at the end.",
        )
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
