"""PipelinesClient.watch: every revision exactly once, in order, across dropped streams
and server restarts (real server processes, killed and restarted mid-watch)."""

from __future__ import annotations

import threading

import grpc
import pytest

from skit.pipelines.v1 import run_pb2
from skit_pipelines_client import PipelinesClient, ResumePolicy, RPCError

FAST = ResumePolicy(attempts=3, first_delay=0.01, max_delay=0.02)


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_a_watch_resumes_across_a_server_restart_and_misses_nothing(serve, stop: str) -> None:
    server = serve()
    port = int(server.address.rsplit(":", 1)[1])
    restarted: list[object] = []
    restarter: threading.Thread | None = None
    resumed: list[grpc.StatusCode] = []

    with PipelinesClient(server.address) as client:
        run = client.create_run("naps", {"seconds": 0.4}, {})
        revisions, last = [], run
        for snapshot in client.watch(run.name, on_resume=lambda e, _: resumed.append(e.code)):
            revisions.append(snapshot.revision)
            last = snapshot
            running = any(s.state == run_pb2.STEP_STATE_RUNNING for s in snapshot.steps)
            # Once: the watch can resume on the new process before its start returns.
            if running and restarter is None:
                # kill -9 (streams reset) or SIGTERM (streams end UNAVAILABLE, reason
                # SHUTTING_DOWN); the new process starts while the client backs off.
                getattr(server.process, stop)()
                server.process.wait(timeout=30)
                restarter = threading.Thread(target=lambda: restarted.append(serve(port)))
                restarter.start()
        assert restarter is not None
        restarter.join()

    assert restarted and last.state == run_pb2.RUN_STATE_SUCCEEDED
    assert resumed and set(resumed) == {grpc.StatusCode.UNAVAILABLE}
    # The first snapshot is the current one; every later revision comes from the store's
    # event log, so exactly once and nothing missed means contiguous from there.
    assert revisions == list(range(revisions[0], last.revision + 1))


def test_a_server_replaying_from_an_older_cursor_yields_nothing_twice(scripted) -> None:
    servicer, address = scripted
    servicer.replay_all = True
    unavailable = grpc.StatusCode.UNAVAILABLE
    servicer.scripts = [([1, 2, 3], unavailable), ([1, 2, 3, 4, 5], None)]

    with PipelinesClient(address) as client:
        revisions = [run.revision for run in client.watch("abc", resume=FAST)]

    assert revisions == [1, 2, 3, 4, 5]
    assert servicer.cursors == [0, 3]


def test_it_gives_up_after_the_failures_in_a_row_the_policy_allows(scripted) -> None:
    servicer, address = scripted
    unavailable = grpc.StatusCode.UNAVAILABLE
    # A revision in between resets the count: 3 failures, a revision, then 4 failures.
    servicer.scripts = [([1], unavailable), *[((), unavailable)] * 2, ([1, 2], unavailable)]
    servicer.scripts += [((), unavailable)] * 4

    seen: list[int] = []
    with PipelinesClient(address) as client, pytest.raises(RPCError) as failure:
        seen.extend(run.revision for run in client.watch("abc", resume=FAST))

    assert failure.value.code is unavailable
    assert seen == [1, 2]
    assert servicer.cursors == [0, 1, 1, 1, 2, 2, 2]


def test_errors_other_than_unavailable_are_raised_at_once(scripted) -> None:
    servicer, address = scripted
    servicer.scripts = [([1], grpc.StatusCode.PERMISSION_DENIED)]

    with PipelinesClient(address) as client, pytest.raises(RPCError) as failure:
        list(client.watch("abc", resume=FAST))

    assert failure.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert servicer.cursors == [0]


def test_the_backoff_doubles_up_to_its_limit_and_jitter_only_shortens_it() -> None:
    policy = ResumePolicy(first_delay=0.5, max_delay=4.0, jitter=0.2)

    for failures, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        assert base * 0.8 <= policy.delay(failures) <= base
