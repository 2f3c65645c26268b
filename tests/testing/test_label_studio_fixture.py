"""skit_testing.label_studio when Label Studio cannot be had: the tests that use it skip,
or fail where a skip would hide a broken setup (CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

USES_FIXTURE = """
pytest_plugins = ["skit_testing.label_studio"]

def test_needs_label_studio(label_studio):
    raise AssertionError("must not run without a Label Studio")

def test_other():
    pass
"""


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_uses_label_studio.py").write_text(USES_FIXTURE)
    # A regular file where the venv's parent directory should be: nothing can be built.
    (tmp_path / "not-a-directory").write_text("")
    clean = {
        k: v for k, v in os.environ.items() if k not in ("CI", "SKIT_TEST_REQUIRE_LABEL_STUDIO")
    }
    clean["SKIT_TEST_LABEL_STUDIO_VENV"] = str(tmp_path / "not-a-directory" / "venv")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_skips_when_label_studio_cannot_be_built(tmp_path):
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "no Label Studio for tests" in result.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"SKIT_TEST_REQUIRE_LABEL_STUDIO": "1"}])
def test_fails_instead_in_ci(tmp_path, env):
    result = run_pytest(tmp_path, **env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout and "1 error" in result.stdout
    assert "no Label Studio for tests" in result.stdout
