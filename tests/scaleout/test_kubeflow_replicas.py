"""Two `serve --backend kubeflow` processes on one PostgreSQL database, against the local
KFP v2beta1 stand-in: one poller per run across the replicas, watchers on the other
replica, and takeover when the polling replica is killed."""

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
from skit_testing.kubeflow_fake import FakeKfpServer

pytest_plugins = ["skit_testing.postgres"]

TOKEN = "kfp-bearer-token"
TICK = "registry.example.com/ml/skit-pipelines/t-tick:0.1.0"
DIGEST = "sha256:" + "7" * 64


@pytest.fixture
def fake() -> Iterator[FakeKfpServer]:
    server = FakeKfpServer(token=TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def states(stream: AsyncIterator[api.WatchRunResponse]) -> list[run_pb2.Run]:
    return [message.run async for message in stream]


async def test_one_poller_per_run_and_takeover_across_processes(
    start_replicas, postgres_dsn: str, fake: FakeKfpServer, tmp_path: Path
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
        fake.url,
        env=[
            {
                "SKIT_KFP_TOKEN": TOKEN,
                "SKIT_KFP_COOKIE": f"replica={name}",
                "SKIT_KFP_POLL_SECONDS": "0.1",
                "SKIT_LEASE_SECONDS": "1.5",
                "SKIT_KFP_IMAGES_LOCK": str(lock),
            }
            for name in ("a", "b")
        ],
    )

    def polls(kfp_id: str, replica: str) -> int:
        return sum(
            r.headers.get("cookie") == f"replica={replica}"
            for r in fake.calls("GET", f"/runs/{kfp_id}")
        )

    async with a.channel() as channel_a, b.channel() as channel_b:
        on_a, on_b = a.stub(channel_a), b.stub(channel_b)
        request = api.CreateRunRequest(run=run_pb2.Run(pipeline="pipelines/ticker"))
        request.run.parameters.update({"text": "hello", "seconds": 2})
        run = await on_a.CreateRun(request, timeout=30)
        stored = await on_b.GetRun(api.GetRunRequest(name=run.name), timeout=10)
        kfp_id = stored.backend_run_id
        assert stored.backend == "kubeflow" and kfp_id
        assert stored.backend_run_url == f"{fake.url}/#/runs/details/{kfp_id}"
        assert fake.run(kfp_id).runtime_config.parameters == {"text": "hello", "seconds": 2.0}

        watch = asyncio.create_task(states(on_b.WatchRun(api.WatchRunRequest(name=run.name))))
        fake.set_state(kfp_id, "RUNNING", {"start": "RUNNING"})
        fake.set_state(kfp_id, "RUNNING", {"start": "SUCCEEDED", "tick": "RUNNING"})
        await asyncio.sleep(0.5)
        fake.set_state(
            kfp_id, "SUCCEEDED", {"start": "SUCCEEDED", "tick": "SUCCEEDED", "tick-2": "SUCCEEDED"}
        )
        seen = await asyncio.wait_for(watch, 30)
        assert seen[-1].state == run_pb2.RUN_STATE_SUCCEEDED
        assert [s.name for s in seen[-1].steps] == ["start", "tick", "tick-2"]
        assert polls(kfp_id, "a") > 0 and polls(kfp_id, "b") == 0

        # The replica polling a run dies without a word: the other one takes over.
        second = await on_a.CreateRun(request, timeout=30)
        second_id = (await on_b.GetRun(api.GetRunRequest(name=second.name))).backend_run_id
        fake.set_state(second_id, "RUNNING", {"start": "RUNNING"})
        watch = asyncio.create_task(states(on_b.WatchRun(api.WatchRunRequest(name=second.name))))
        while polls(second_id, "a") == 0:
            await asyncio.sleep(0.05)
        a.kill()
        killed = time.monotonic()
        while polls(second_id, "b") == 0:
            assert time.monotonic() - killed < 10, "no takeover"
            await asyncio.sleep(0.05)
        takeover = time.monotonic() - killed
        fake.set_state(second_id, "SUCCEEDED", {"start": "SUCCEEDED"})
        seen = await asyncio.wait_for(watch, 30)
        assert seen[-1].state == run_pb2.RUN_STATE_SUCCEEDED
    assert fake.rejected == []
    [version] = fake.versions()  # one upload per IR hash
    executors = yaml.safe_load(fake.package(version.pipeline_version_id))["deploymentSpec"]
    assert {e["container"]["image"] for e in executors["executors"].values()} == {
        f"{TICK}@{DIGEST}"
    }
    print(f"replica B took over {takeover:.2f}s after A was killed (lease 1.5s)")
