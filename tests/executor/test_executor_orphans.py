"""The ledger of running step processes: a starting executor kills the process groups a
dead server left running, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skit_pipelines.executor._orphans import ProcessLedger, start_time

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

# A server that starts a step (a process group of a shell and its sleeping child), records
# it, prints the pids and dies without cleaning up, as a kill -9 would leave it.
DYING_SERVER = """
import subprocess, sys
from pathlib import Path
from skit_pipelines.executor._orphans import ProcessLedger
ledger = ProcessLedger(Path(sys.argv[1]))
step = subprocess.Popen(
    ["sh", "-c", "sleep 300 & echo $!; wait"],
    start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
)
child = step.stdout.readline().strip()
ledger.record(step.pid, run="runs/r1", step="nap")
print(step.pid, child, flush=True)
import os
os._exit(0)
"""


def alive(pid: int) -> bool:
    return start_time(pid) is not None


def wait_until_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def orphaned_step(tmp_path: Path):
    """(ledger root, step pid, its child's pid), left behind by a server that exited."""
    root = tmp_path / "processes"
    out = subprocess.run(
        [sys.executable, "-c", DYING_SERVER, str(root)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    step, child = int(out[0]), int(out[1])
    yield root, step, child
    for pid in (step, child):
        if alive(pid):
            os.kill(pid, 9)


def test_a_dead_servers_step_group_is_killed_and_forgotten(orphaned_step):
    root, step, child = orphaned_step
    assert alive(step) and alive(child)
    assert len(list(root.glob("*.json"))) == 1

    assert ProcessLedger(root).reap_orphans() == 1

    assert wait_until_dead(step)
    assert wait_until_dead(child)
    assert list(root.glob("*.json")) == []


def test_children_are_killed_even_when_the_step_itself_has_exited(orphaned_step):
    root, step, child = orphaned_step
    os.kill(step, 9)
    assert wait_until_dead(step)
    assert alive(child)

    ProcessLedger(root).reap_orphans()

    assert wait_until_dead(child)


def test_steps_of_a_live_server_are_left_alone(tmp_path: Path):
    root = tmp_path / "processes"
    ledger = ProcessLedger(root)
    step = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ledger.record(step.pid, run="runs/r1", step="nap")
        # Another executor of the same live server (or a replica sharing the work root).
        assert ProcessLedger(root).reap_orphans() == 0
        assert step.poll() is None
        assert len(list(root.glob("*.json"))) == 1
        ledger.forget(step.pid)
        assert list(root.glob("*.json")) == []
    finally:
        step.kill()
        step.wait()


def test_a_reused_pid_is_not_signalled(tmp_path: Path):
    """An entry whose pid now belongs to another process (another start time) is dropped
    without killing it."""
    root = tmp_path / "processes"
    root.mkdir()
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        entry = {
            "pid": bystander.pid,
            "started": start_time(bystander.pid) + 1,
            "owner": bystander.pid,
            "owner_started": 1,
            "run": "runs/r1",
            "step": "nap",
        }
        (root / f"1-{bystander.pid}.json").write_text(json.dumps(entry))
        (root / "garbage.json").write_text("{not json")

        assert ProcessLedger(root).reap_orphans() == 0

        assert bystander.poll() is None
        assert list(root.glob("*.json")) == []
    finally:
        bystander.kill()
        bystander.wait()
