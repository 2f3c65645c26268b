"""Under Bazel, only what a target declares is importable.

`make` installs the project's packages into .venv in editable mode, so the venv's Python
(Bazel's toolchain) finds every package of the checkout, declared or not: a test importing
an undeclared package would pass, and would not rerun when that package changes. Keeping
only the runfiles tree and the interpreter's own directories makes such an import fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_EDITABLE_PREFIX = "__editable__"
"""setuptools' editable installs: `__editable__.*.pth` paths and `__editable___*_finder`s."""


def keep_declared_only() -> None:
    """Drops the checkout's editable installs from sys.path and sys.meta_path (a no-op
    outside Bazel)."""
    runfiles = os.environ.get("TEST_SRCDIR") or os.environ.get("RUNFILES_DIR")
    if not runfiles:
        return
    allowed = [Path(p).absolute() for p in (runfiles, sys.prefix, sys.base_prefix)]

    def declared(entry: str) -> bool:
        path = Path(entry or os.getcwd()).absolute()
        return any(path.is_relative_to(root) for root in allowed)

    sys.path[:] = [entry for entry in sys.path if declared(entry)]
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not getattr(finder, "__module__", "").startswith(_EDITABLE_PREFIX)
    ]
