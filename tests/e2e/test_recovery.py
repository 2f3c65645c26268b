"""kill -9 of the service with runs in flight: after a restart every run finishes, steps
that had completed are not run again, and a watcher reconnecting with after_revision gets
every later revision exactly once."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2

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
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "executions.log"), "a") as f:
    f.write(label + "\\n")
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


def executions(root: Path) -> collections.Counter[str]:
    log = root / "images" / "nap" / "executions.log"
    return collections.Counter(log.read_text().split())


def step_states(run: run_pb2.Run) -> dict[str, int]:
    return {s.name: s.state for s in run.steps}


@pytest.mark.parametrize("runs_in_flight", [1, 3])
def test_kill_9_mid_run_then_every_run_finishes(
    server_control, tmp_path: Path, runs_in_flight: int
) -> None:
    start, stop = server_control
    project = make_project(tmp_path / "project")
    env = {"SKIT_PROJECT_ROOT": str(project), "SKIT_DEMO_DATA": "0"}
    home = tmp_path / "home"
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
