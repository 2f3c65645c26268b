"""`NAME SECONDS OUT`: prints that it started, sleeps, writes NAME to OUT.

It ignores SIGTERM, as a step busy finishing its work would: a cancel then waits for the
executor's grace period before the step stops.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    name, seconds, out = argv
    signal.signal(signal.SIGTERM, lambda *_: print(f"{name}: SIGTERM ignored", flush=True))
    print(f"{name}: started as pid {os.getpid()}", flush=True)
    time.sleep(float(seconds))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(name)
    print(f"{name}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
