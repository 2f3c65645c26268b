"""A small project (one image folder, one pipeline) for the catalog's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit_testing.projects import write_traced_project


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_traced_project(tmp_path_factory.mktemp("project"))
