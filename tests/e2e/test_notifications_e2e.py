"""Notifications through the real `serve` process: a signed webhook for a run's end,
retried across a SIGKILL of the server, delivered once after the restart; secrets from
the environment and --secrets-dir, never in the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

from skit_pipelines.notifications.sinks.webhook import verify
from skit_pipelines_client import PipelinesClient, RunState
from skit_testing.waiting import until
from skit_testing.webhook import webhook_receiver

HOOK_KEY = "whsec_e2e_9b8a7c6d5e4f"
SLACK_TOKEN = "xoxb-e2e-never-logged"


async def test_a_webhook_retried_across_a_server_crash_is_delivered_once(
    tmp_path: Path, server_control
) -> None:
    start_server, stop_server = server_control
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "slack-token").write_text(SLACK_TOKEN + "\n")
    # Retries 2-4 s apart, so the kill below falls between two attempts (a send in flight
    # at a crash is claimed for 2 minutes before another process sends it again).
    env = {"SKIT_SECRET_HOOK_KEY": HOOK_KEY, "SKIT_NOTIFY_RETRY_BASE_SECONDS": "2"}
    home = tmp_path / "home"
    flags = ("--secrets-dir", str(secrets))
    with webhook_receiver([503]) as receiver:
        server = start_server(home, *flags, env=env)
        try:
            with PipelinesClient(server.address) as client:
                subscription = client.create_subscription(
                    notify_states=["SUCCEEDED", "FAILED"],
                    webhook_url=receiver.url,
                    webhook_signing_secret="hook-key",
                )
                client.create_subscription(
                    notify_states=["FAILED"],
                    slack_channel="#never",
                    slack_token_secret="slack-token",
                )
                run = client.create_run("random-sample-calls", {"call_quantity": 5}, {})
                await until(
                    lambda: client.get_run(run.name).state.terminal, 120, what="the run's end"
                )

                def recorded_twice() -> bool:
                    deliveries = client.list_deliveries(subscription.name)
                    return bool(deliveries) and len(deliveries[0].attempts) == 2

                await until(recorded_twice, 30, what="two failed tries recorded")
        finally:
            server.kill()
        tries_before = len(receiver.received())
        receiver.statuses = [200]

        server = start_server(home, *flags, env=env)
        try:
            await until(lambda: receiver.accepted(), 30, what="delivery after the restart")
            with PipelinesClient(server.address) as client:

                def delivered() -> bool:
                    return client.get_subscription(subscription.name).delivered_deliveries == 1

                await until(delivered, 30, what="DELIVERED")
                (delivery,) = client.list_deliveries(subscription.name)
                assert delivery.run == run.name
                assert delivery.run_state in (RunState.SUCCEEDED, RunState.FAILED)
                assert len(delivery.attempts) == len(receiver.received()) >= tries_before + 1
                assert delivery.attempts[0].outcome == "HTTP 503"
            await asyncio.sleep(1)  # nothing more may come
            (accepted,) = receiver.accepted()
            assert verify(HOOK_KEY, accepted.body, accepted.headers["Skit-Signature"])
            assert len({r.headers["Skit-Delivery"] for r in receiver.received()}) == 1
        finally:
            assert stop_server(server) == 0
    log = server.log.read_text()
    assert "HTTP 503" in log
    assert HOOK_KEY not in log and SLACK_TOKEN not in log
