"""A test component with one subcommand per behaviour the executor tests need."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "write":  # write OUT TEXT
        _write(args[0], args[1])
    elif command == "append":  # append IN OUT TEXT: OUT = IN's content + TEXT
        _write(args[1], Path(args[0]).read_text() + args[2])
    elif command == "square":  # square OUT N
        _write(args[0], str(int(args[1]) ** 2))
    elif command == "sum":  # sum OUT JSON_LIST
        _write(args[0], str(sum(json.loads(args[1]))))
    elif command == "join":  # join OUT JSON_PATHS: concatenates the files, sorted
        paths = json.loads(args[1])
        _write(args[0], "".join(sorted(Path(p).read_text() for p in paths)))
    elif command == "executor-output":  # executor-output EXECUTOR_INPUT: as kfp's executor does
        executor_input = json.loads(args[0])
        text = executor_input["inputs"]["parameterValues"]["text"]
        _write(
            executor_input["outputs"]["outputFile"],
            json.dumps({"parameterValues": {"out": text.upper()}}),
        )
    elif command == "interval":  # interval OUT SECONDS: sleeps, writes "start end"
        start = time.time()
        time.sleep(float(args[1]))
        _write(args[0], f"{start} {time.time()}")
    elif command == "argv":  # argv OUT ARGS...: writes ARGS as JSON
        _write(args[0], json.dumps(args[1:]))
    elif command == "env":  # env OUT: writes the environment as JSON
        _write(args[0], json.dumps(dict(os.environ)))
    elif command == "count":  # count LOG OUT TEXT: appends a line to LOG, writes TEXT
        with open(args[0], "a") as log:
            log.write("ran\n")
        _write(args[1], args[2])
    elif command == "fail":  # fail MESSAGE: noise, then MESSAGE as the last stderr line
        print("some progress", file=sys.stderr)
        print(f"RuntimeError: {args[0]}\n\n", file=sys.stderr)
        return 3
    elif command == "sleeper":  # sleeper PIDFILE: a child sleeper; both ignore SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
            ]
        )
        _write(args[0] + ".tmp", f"{os.getpid()} {child.pid}")
        os.replace(args[0] + ".tmp", args[0])
        time.sleep(120)
    elif command == "flaky":  # flaky COUNTER FAILURES OUT: fails FAILURES times, then writes
        counter = Path(args[0])
        runs = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(runs))
        with open(args[0] + ".times", "a") as times:
            times.write(f"{time.time()}\n")
        print(f"attempt {runs} starting")
        if runs <= int(args[1]):
            print(f"flaky: attempt {runs} failed", file=sys.stderr)
            return 1
        _write(args[2], f"ok after {runs}")
    elif command == "hang-then":  # hang-then COUNTER HANGS OUT: hangs the first HANGS runs
        counter = Path(args[0])
        runs = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(runs))
        if runs <= int(args[1]):
            time.sleep(120)
        _write(args[2], f"done on run {runs}")
    elif command == "chatty":  # chatty LINES DELAY: interleaved stdout/stderr lines, slowly
        for i in range(int(args[0])):
            print(f"out {i}", flush=True)
            print(f"err {i}", file=sys.stderr, flush=True)
            time.sleep(float(args[1]))
    elif command == "nothing":
        pass
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
