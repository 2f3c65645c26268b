"""Terminal means terminal: a run that ends, whatever ends it, keeps no step that looks
active. Here the server is killed with SIGKILL just after CancelRun, while the step it is
stopping still runs (it ignores SIGTERM, so the executor is waiting out its grace period):
after a restart the run is CANCELLED, and so is every step that had not ended."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit.pipelines.v1 import pipeline_service_pb2 as api
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_testing.waiting import until

pytestmark = pytest.mark.xdist_group("faults-crash")

ACTIVE = {run_pb2.STEP_STATE_UNSPECIFIED, run_pb2.STEP_STATE_PENDING, run_pb2.STEP_STATE_RUNNING}
STEP_SECONDS = 60
"""Longer than the test: the run only ends because it is cancelled."""


async def test_a_crash_while_cancelling_leaves_no_step_active(
    start_servers, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    [server] = start_servers([home])
    async with server.channel() as channel:
        service = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        request = api.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/steps"))
        request.run.parameters.update({"seconds": STEP_SECONDS})
        run = await service.CreateRun(request, timeout=30)
        get = api.GetRunRequest(name=run.name)

        async def first_step_running() -> bool:
            steps = {s.name: s.state for s in (await service.GetRun(get, timeout=10)).steps}
            return steps.get("step") == run_pb2.STEP_STATE_RUNNING

        await until(first_step_running, 30, what="the first step is RUNNING")
        cancelling = await service.CancelRun(api.CancelRunRequest(name=run.name), timeout=10)
        assert cancelling.state == run_pb2.RUN_STATE_CANCELLING
    server.kill()
    stored = {s.name: s.state for s in cancelling.steps}
    assert run_pb2.STEP_STATE_RUNNING in stored.values(), "killed before the step stopped"

    [restarted] = start_servers([home])
    async with restarted.channel() as channel:
        service = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        snapshots = [
            message.run
            async for message in service.WatchRun(api.WatchRunRequest(name=run.name), timeout=60)
        ]
    final = snapshots[-1]
    assert final.state == run_pb2.RUN_STATE_CANCELLED
    assert final.steps, "the run had started its steps"
    left_active = {
        s.name: run_pb2.StepState.Name(s.state) for s in final.steps if s.state in ACTIVE
    }
    assert not left_active, left_active
    assert {s.state for s in final.steps} == {run_pb2.STEP_STATE_CANCELLED}
    assert all(s.HasField("end_time") for s in final.steps)
