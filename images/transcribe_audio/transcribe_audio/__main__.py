"""`python3 -m transcribe_audio`: the image's entrypoint (component.yaml's command)."""

from __future__ import annotations

import logging
import sys

# Absolute: this file may also be run by path (outside the package), not only with -m.
from transcribe_audio.cli import main

if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
