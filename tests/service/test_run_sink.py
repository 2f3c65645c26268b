"""What a backend reports through the RunSink reaches clients as the controller stores it:
the backend's own run id and link, and a cancel that came from the backend's side."""

from __future__ import annotations

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import run_pb2


async def _created(service) -> str:
    request = pb.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/typed"))
    request.run.parameters.update({"greeting": "hi"})
    run = await service.stub.CreateRun(request)
    return run.name.removeprefix("runs/")


async def test_the_backend_run_id_and_link_are_stored_on_the_run(service) -> None:
    run_id = await _created(service)
    await service.backend.sinks[run_id].backend_run_assigned(
        run_id, "kfp-123", "https://kfp.example.com/#/runs/details/kfp-123"
    )
    run = await service.stub.GetRun(pb.GetRunRequest(name=f"runs/{run_id}"))
    assert run.backend_run_id == "kfp-123"
    assert run.backend_run_url == "https://kfp.example.com/#/runs/details/kfp-123"
    assert run.state == run_pb2.RUN_STATE_QUEUED


async def test_a_cancel_from_the_backend_side_makes_the_run_cancelling_once(service) -> None:
    run_id = await _created(service)
    sink = service.backend.sinks[run_id]
    await sink.run_started(run_id)
    await sink.cancel_requested_remotely(run_id)
    cancelling = await service.stub.GetRun(pb.GetRunRequest(name=f"runs/{run_id}"))
    assert cancelling.state == run_pb2.RUN_STATE_CANCELLING
    await sink.cancel_requested_remotely(run_id)  # reported again by the next poll
    again = await service.stub.GetRun(pb.GetRunRequest(name=f"runs/{run_id}"))
    assert again.revision == cancelling.revision
    assert service.backend.cancelled == [], "the backend is stopping it already"

    await sink.run_cancelled(run_id)
    await sink.cancel_requested_remotely(run_id)  # a late report changes nothing
    ended = await service.stub.GetRun(pb.GetRunRequest(name=f"runs/{run_id}"))
    assert ended.state == run_pb2.RUN_STATE_CANCELLED
