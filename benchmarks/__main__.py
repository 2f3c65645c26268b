"""`python -m benchmarks [name ...]`: runs the benchmarks and prints a table of figures."""

from __future__ import annotations

import argparse
import importlib
import sys

from benchmarks.report import render

BENCHMARKS = {
    "executor": "benchmarks.executor_overhead",
    "watch": "benchmarks.watch_fanout",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    figures = []
    for name in args.names or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        figures.extend(importlib.import_module(BENCHMARKS[name]).run())
    print(render(figures))
    return 0 if all(f.met for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
