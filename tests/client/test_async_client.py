"""AsyncPipelinesClient: the same calls as PipelinesClient on grpc.aio, and a watch that
resumes across a server restart with every revision exactly once."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from skit.pipelines.v1 import run_pb2
from skit_pipelines_client import AsyncPipelinesClient, ResumePolicy, RPCError

FAST = ResumePolicy(attempts=3, first_delay=0.01, max_delay=0.02)


async def test_a_run_is_created_listed_watched_across_a_restart_and_its_logs_read(serve) -> None:
    server = serve()
    port = int(server.address.rsplit(":", 1)[1])
    resumed: list[grpc.StatusCode] = []
    restarting: asyncio.Task[object] | None = None

    async with AsyncPipelinesClient(server.address) as client:
        assert [p.name for p in await client.list_pipelines()] == ["pipelines/naps"]
        run = await client.create_run("naps", {"seconds": 0.4}, {"team": "asr"}, request_id="k1")
        assert (
            await client.create_run("naps", {"seconds": 0.4}, {"team": "asr"}, None, "k1")
        ).name == run.name
        assert [r.name async for r in client.list_runs(labels={"team": "asr"})] == [run.name]

        revisions, last = [], run
        async for snapshot in client.watch(run.name, on_resume=lambda e, _: resumed.append(e.code)):
            revisions.append(snapshot.revision)
            last = snapshot
            running = any(s.state == run_pb2.STEP_STATE_RUNNING for s in snapshot.steps)
            if running and restarting is None:
                # Drained with SIGTERM (streams end UNAVAILABLE); the new process starts on
                # the same port while the client backs off.
                server.process.terminate()
                await asyncio.to_thread(server.process.wait, 30)
                restarting = asyncio.create_task(asyncio.to_thread(serve, port))
        assert restarting is not None
        await restarting

        assert last.state == run_pb2.RUN_STATE_SUCCEEDED
        assert resumed and set(resumed) == {grpc.StatusCode.UNAVAILABLE}
        assert revisions == list(range(revisions[0], last.revision + 1))
        assert (await client.get_run(run.name)).revision == last.revision
        # Every attempt's lines: when the restart interrupted the step after it printed,
        # its rerun is the next attempt, with a line of its own.
        lines = [(line.attempt, line.text) async for line in client.read_step_logs(run.name, "nap")]
        assert lines and {text for _, text in lines} == {"napping for 0.4 s"}
        attempts = [attempt for attempt, _ in lines]
        assert len(set(attempts)) == len(attempts)  # one line per attempt, none written twice

        await client.delete_run(run.name)
        for gone in (client.get_run(run.name), client.delete_run(run.name)):
            with pytest.raises(RPCError) as deleted:
                await gone
            assert deleted.value.code is grpc.StatusCode.NOT_FOUND

        with pytest.raises(RPCError) as missing:
            await client.get_run("runs/no-such-run")
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
        assert missing.value.reason == "RUN_NOT_FOUND"


async def test_a_server_replaying_from_an_older_cursor_yields_nothing_twice(scripted) -> None:
    servicer, address = scripted
    servicer.replay_all = True
    unavailable = grpc.StatusCode.UNAVAILABLE
    servicer.scripts = [([1, 2, 3], unavailable), ([1, 2, 3, 4, 5], None)]

    async with AsyncPipelinesClient(address) as client:
        revisions = [run.revision async for run in client.watch("abc", resume=FAST)]

    assert revisions == [1, 2, 3, 4, 5]
    assert servicer.cursors == [0, 3]


async def test_it_gives_up_after_the_failures_in_a_row_the_policy_allows(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [([1], grpc.StatusCode.UNAVAILABLE)] + [
        ((), grpc.StatusCode.UNAVAILABLE)
    ] * 3

    seen: list[int] = []
    async with AsyncPipelinesClient(address) as client:
        with pytest.raises(RPCError) as failure:
            async for run in client.watch("abc", resume=FAST):
                seen.append(run.revision)

    assert failure.value.code is grpc.StatusCode.UNAVAILABLE
    assert seen == [1]
    assert servicer.cursors == [0, 1, 1, 1]


async def test_errors_other_than_unavailable_are_raised_at_once(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [([1], grpc.StatusCode.PERMISSION_DENIED)]

    async with AsyncPipelinesClient(address, token="t0ken") as client:
        with pytest.raises(RPCError) as failure:
            [run async for run in client.watch("abc", resume=FAST)]

    assert failure.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert servicer.cursors == [0]
    assert servicer.authorization == ["Bearer t0ken"]
