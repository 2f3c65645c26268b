"""A slow step: `start OUT TEXT SECONDS` writes TEXT; `next IN OUT SECONDS` appends "+"."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "start":
        out, text, seconds = args
        content = text
    elif command == "next":
        source, out, seconds = args
        content = Path(source).read_text() + "+"
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    time.sleep(float(seconds))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
