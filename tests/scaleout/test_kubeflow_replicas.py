"""Two `serve --backend kubeflow` processes on one PostgreSQL database, against the KFP
2.17 stand-in (skit_testing.kfp, each GET of a run moving its Argo workflow by one node):
one poller per run across the replicas, watchers on the other replica, a burst of KFP
5xx answers, and takeover when the polling replica is killed; every run ends exactly
once, on exactly one KFP run."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from skit.pipelines.v1 import pipeline_service_pb2 as api
from skit.pipelines.v1 import run_pb2
from skit_testing.kfp import KfpServer

pytest_plugins = ["skit_testing.postgres"]

TOKEN = "kfp-bearer-token"
TICK = "registry.example.com/ml/skit-pipelines/t-tick:0.1.0"
DIGEST = "sha256:" + "7" * 64
TERMINAL = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}
TAKEOVER_SECONDS = 10.0


@pytest.fixture
def kfp() -> Iterator[KfpServer]:
    with KfpServer(token=TOKEN, auto_advance=True) as server:
        yield server


async def states(stream: AsyncIterator[api.WatchRunResponse]) -> list[run_pb2.Run]:
    return [message.run async for message in stream]


async def test_runs_end_once_through_5xx_bursts_and_a_killed_replica(
    start_replicas, postgres_dsn: str, kfp: KfpServer, tmp_path: Path
) -> None:
    # The project's one image, released (as `skit-release release` records it).
    lock = tmp_path / "images.lock.json"
    lock.write_text(json.dumps({"t_tick": {"version": "0.1.0", "image": TICK, "digest": DIGEST}}))
    a, b = start_replicas(
        2,
        "--store",
        postgres_dsn,
        "--backend",
        "kubeflow",
        "--kfp-host",
        kfp.url,
        env=[
            {
                "SKIT_KFP_TOKEN": TOKEN,
                "SKIT_KFP_COOKIE": f"replica={name}",
                "SKIT_KFP_POLL_SECONDS": "0.05",
                "SKIT_LEASE_SECONDS": "1.5",
                "SKIT_KFP_IMAGES_LOCK": str(lock),
            }
            for name in ("a", "b")
        ],
    )

    def polls(kfp_id: str, replica: str) -> int:
        return sum(
            r.headers.get("cookie") == f"replica={replica}"
            for r in kfp.calls("GET", f"/runs/{kfp_id}")
        )

    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)
        request = api.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/ticker"))
        request.run.parameters.update({"text": "hello", "seconds": 2})

        # A burst of 5xx: the upload, a create whose answer is lost, then polls.
        kfp.fail_next("POST", "/pipelines/upload_version", status=503, times=2)
        kfp.fail_next("POST", "/runs", status=502, times=1, after=True)
        kfp.fail_next("GET", r"/runs/[^/:]+", status=500, times=2)
        kfp.fail_next("GET", r"/runs/[^/:]+", status=504, times=2)
        run = await on_a.CreateRun(request, timeout=60)
        stored = await on_b.GetRun(api.GetRunRequest(name=run.name), timeout=10)
        kfp_id = stored.backend_run_id
        assert stored.backend == "kubeflow" and kfp_id
        assert stored.backend_run_url == f"{kfp.url}/#/runs/details/{kfp_id}"
        assert kfp.run(kfp_id).runtime_config.parameters == {"text": "hello", "seconds": 2}
        seen = await asyncio.wait_for(states(on_b.WatchRun(api.WatchRunRequest(name=run.name))), 60)
        assert seen[-1].state == run_pb2.RUN_STATE_SUCCEEDED
        assert [s.name for s in seen[-1].steps] == ["start", "tick", "tick-2"]
        assert {s.state for s in seen[-1].steps} == {run_pb2.STEP_STATE_SUCCEEDED}
        # One poller: A retried its polls through the burst, and renewed its lease on its
        # own clock meanwhile, so B never took the run over.
        assert polls(kfp_id, "a") > 0 and polls(kfp_id, "b") == 0

        # The replica polling a run dies without a word: the other one takes over.
        second = await on_a.CreateRun(request, timeout=60)
        second_id = (await on_b.GetRun(api.GetRunRequest(name=second.name))).backend_run_id
        watch = asyncio.create_task(states(on_b.WatchRun(api.WatchRunRequest(name=second.name))))
        while polls(second_id, "a") == 0:
            await asyncio.sleep(0.02)
        a.kill()
        killed = time.monotonic()
        while polls(second_id, "b") == 0:
            assert time.monotonic() - killed < TAKEOVER_SECONDS, "no takeover"
            await asyncio.sleep(0.05)
        takeover = time.monotonic() - killed
        seen = await asyncio.wait_for(watch, 60)
        assert seen[-1].state == run_pb2.RUN_STATE_SUCCEEDED

        # Each run ended once: one terminal revision in its whole history.
        for name in (run.name, second.name):
            history = await asyncio.wait_for(
                states(on_b.WatchRun(api.WatchRunRequest(name=name, after_revision=1))), 30
            )
            revisions = [r.revision for r in history]
            assert revisions == sorted(set(revisions))
            assert [r.state for r in history if r.state in TERMINAL] == [
                run_pb2.RUN_STATE_SUCCEEDED
            ]

    # One KFP run per run of ours, created once (the lost answer was found, not retried).
    assert sorted(r.display_name for r in kfp.runs()) == sorted(
        n.removeprefix("runs/") for n in (run.name, second.name)
    )
    assert len(kfp.calls("POST", "/runs")) == 2
    [version] = kfp.versions()  # one upload per IR hash
    executors = yaml.safe_load(kfp.package(version.pipeline_version_id))["deploymentSpec"]
    assert {e["container"]["image"] for e in executors["executors"].values()} == {
        f"{TICK}@{DIGEST}"
    }
    print(f"replica B took over {takeover:.2f}s after A was killed (lease 1.5s)")
