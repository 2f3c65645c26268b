"""kill -9 of the service with runs in flight: after a restart every run finishes, steps
that had completed are not run again, and a watcher reconnecting with after_revision gets
every later revision exactly once."""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_pipelines.executor._orphans import start_time

pytestmark = pytest.mark.e2e

PIPELINE = '''
from kfp import components, dsl

nap = components.load_component_from_text("""
name: Nap
inputs:
- {name: seconds, type: Float}
- {name: tag, type: String}
- {name: step, type: String}
- {name: previous, type: String, default: ""}
outputs:
- {name: note, type: String}
implementation:
  container:
    image: skit-pipelines/nap:0.1.0
    command: [python3, nap.py]
    args: [{inputValue: seconds}, {inputValue: tag}, {inputValue: step}, {outputPath: note}]
""")


@dsl.pipeline(name="naps")
def pipeline(tag: str = "x", seconds: float = 1.0) -> str:
    """Three naps in a row.

    Args:
        tag: Names this run's executions.
        seconds: How long each nap lasts.
    """
    first = nap(seconds=seconds, tag=tag, step="first")
    second = nap(seconds=seconds, tag=tag, step="second", previous=first.outputs["note"])
    third = nap(seconds=seconds, tag=tag, step="third", previous=second.outputs["note"])
    for task in (first, second, third):
        task.set_caching_options(False)
    return third.outputs["note"]
'''

NAP = """
import os, sys, time
seconds, tag, step, out = sys.argv[1:5]
label = tag + "-" + step
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "executions.log"), "a") as f:
    f.write(label + "\\n")
with open(os.path.join(here, "pids.log"), "a") as f:
    f.write(label + " " + str(os.getpid()) + "\\n")
time.sleep(float(seconds))
open(out, "w").write(label)
"""

COMPONENT = "name: Nap\nimplementation: {container: {image: skit-pipelines/nap:0.1.0}}\n"


def make_project(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "naps.py").write_text(PIPELINE)
    folder = root / "images" / "nap"
    folder.mkdir(parents=True)
    (folder / "component.yaml").write_text(COMPONENT)
    (folder / "VERSION").write_text("0.1.0\n")
    (folder / "nap.py").write_text(NAP)
    return root


@pytest.fixture
def naps(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """The naps project, the server environment that serves it, and the server's home."""
    project = make_project(tmp_path / "project")
    return project, {"SKIT_PROJECT_ROOT": str(project), "SKIT_DEMO_DATA": "0"}, tmp_path / "home"


def executions(root: Path) -> collections.Counter[str]:
    log = root / "images" / "nap" / "executions.log"
    return collections.Counter(log.read_text().split())


def step_pids(root: Path, label: str) -> list[int]:
    log = root / "images" / "nap" / "pids.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [int(line.split()[1]) for line in lines if line.split()[0] == label]


def alive(pid: int) -> bool:
    return start_time(pid) is not None


def step_states(run: run_pb2.Run) -> dict[str, int]:
    return {s.name: s.state for s in run.steps}


@pytest.mark.parametrize("runs_in_flight", [1, 3])
def test_kill_9_mid_run_then_every_run_finishes(server_control, naps, runs_in_flight: int) -> None:
    start, stop = server_control
    project, env, home = naps
    first_server = start(home, env=env)
    names = []
    with grpc.insecure_channel(first_server.address) as channel:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        for i in range(runs_in_flight):
            parameters = struct_pb2.Struct()
            parameters.update({"tag": f"r{i}", "seconds": 1.5})
            run = stub.CreateRun(
                pb.CreateRunRequest(
                    run=run_pb2.Run(pipeline="pipelines/naps", parameters=parameters)
                )
            )
            names.append(run.name)
        deadline = time.monotonic() + 60
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            runs = [stub.GetRun(pb.GetRunRequest(name=n)) for n in names]
            if all(step_states(r).get("nap") == run_pb2.STEP_STATE_SUCCEEDED for r in runs):
                seen = {r.name: r.revision for r in runs}
                break
            time.sleep(0.05)
        assert seen, "the first steps never finished"
    first_server.process.kill()
    first_server.process.wait(10)

    second_server = start(home, env=env)
    try:
        with grpc.insecure_channel(second_server.address) as channel:
            stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
            for name in names:
                stream = stub.WatchRun(
                    pb.WatchRunRequest(name=name, after_revision=seen[name]), timeout=120
                )
                snapshots = [message.run for message in stream]
                revisions = [r.revision for r in snapshots]
                assert revisions == list(range(seen[name] + 1, seen[name] + 1 + len(revisions)))
                final = snapshots[-1]
                assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final.error
                assert set(step_states(final).values()) == {run_pb2.STEP_STATE_SUCCEEDED}
    finally:
        assert stop(second_server) == 0
    counts = executions(project)
    for i in range(runs_in_flight):
        assert counts[f"r{i}-first"] == 1, counts
        assert counts[f"r{i}-third"] == 1, counts


def test_a_step_orphaned_by_kill_9_is_killed_before_its_rerun(server_control, naps) -> None:
    start, stop = server_control
    project, env, home = naps
    first_server = start(home, env=env)
    with grpc.insecure_channel(first_server.address) as channel:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        parameters = struct_pb2.Struct()
        parameters.update({"tag": "long", "seconds": 60})
        stub.CreateRun(
            pb.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/naps", parameters=parameters))
        )
    deadline = time.monotonic() + 30
    while not step_pids(project, "long-first") and time.monotonic() < deadline:
        time.sleep(0.05)
    [orphan] = step_pids(project, "long-first")
    first_server.process.kill()
    first_server.process.wait(10)
    try:
        time.sleep(0.5)
        assert alive(orphan), "the step should outlive a server killed with SIGKILL"
        second_server = start(home, env=env)
        try:
            deadline = time.monotonic() + 10
            while alive(orphan) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(orphan)
            deadline = time.monotonic() + 30
            while len(step_pids(project, "long-first")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            rerun = step_pids(project, "long-first")[1]
            assert rerun != orphan and alive(rerun)
        finally:
            assert stop(second_server) == 0
    finally:
        if alive(orphan):
            os.kill(orphan, signal.SIGKILL)
