"""Attempts are history: a step that a crash of the server interrupted runs again as the
next attempt, and the log of the interrupted attempt stays readable beside the new one."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from skit.pipelines.v1 import pipeline_service_pb2 as api
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2
from skit_testing.waiting import until

pytestmark = pytest.mark.xdist_group("faults-crash")

STEP_SECONDS = 2.0
"""Long enough to kill the server while the first step runs, short enough for its rerun."""


async def _log_texts(
    service: pipeline_service_pb2_grpc.PipelineServiceStub, run: str, attempt: int
) -> list[str]:
    request = api.ReadStepLogsRequest(run=run, step="step", attempt=attempt)
    return [
        line.text
        async for message in service.ReadStepLogs(request, timeout=10)
        for line in message.lines
    ]


async def test_a_step_interrupted_by_a_crash_reruns_as_attempt_2(
    start_servers, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    [server] = start_servers([home])
    async with server.channel() as channel:
        service = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        request = api.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/steps"))
        request.run.parameters.update({"seconds": STEP_SECONDS})
        run = await service.CreateRun(request, timeout=30)

        async def first_step_printed() -> bool:
            try:
                return any("started" in text for text in await _log_texts(service, run.name, 1))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return False  # the attempt has no log yet

        await until(first_step_printed, 30, what="the first step printed that it started")
    server.kill()

    [restarted] = start_servers([home])
    async with restarted.channel() as channel:
        service = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        snapshots = [
            message.run
            async for message in service.WatchRun(api.WatchRunRequest(name=run.name), timeout=60)
        ]
        final = snapshots[-1]
        assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final.error
        first = next(s for s in final.steps if s.name == "step")
        assert first.attempt == 2
        before_crash = await _log_texts(service, run.name, 1)
        rerun = await _log_texts(service, run.name, 2)
        every_attempt = await _log_texts(service, run.name, 0)
    assert len(before_crash) == 1 and before_crash[0].startswith("first: started as pid ")
    assert rerun[0].startswith("first: started as pid ") and rerun[-1] == "first: done"
    assert rerun[0] != before_crash[0], "a new process"
    assert every_attempt == before_crash + rerun
