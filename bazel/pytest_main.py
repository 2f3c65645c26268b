"""The main of every pytest_test: runs pytest on the paths in argv under `bazel test`.

Bazel starts tests in the workspace root of their runfiles tree, so pyproject.toml (the
pytest configuration) and the conftest.py files sit where they do in the checkout.
"""

from __future__ import annotations

import os
import sys

import declared_imports
import pytest


def main(argv: list[str]) -> int:
    declared_imports.keep_declared_only()
    args = ["-c", "pyproject.toml", "--rootdir", ".", *argv]
    if xml := os.environ.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={xml}")
    # `bazel test --test_filter=EXPR` selects tests like `pytest -k EXPR`.
    if selected := os.environ.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", selected]
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
