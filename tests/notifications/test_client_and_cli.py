"""The Python clients' subscription calls and the `skit-pipelines subscriptions` commands."""

from __future__ import annotations

import asyncio
import json

import pytest

from skit_pipelines_cli.main import main
from skit_pipelines_client import (
    AsyncPipelinesClient,
    PipelinesClient,
    RPCError,
    RunState,
    Subscription,
)
from skit_testing.waiting import until
from skit_testing.webhook import webhook_receiver

from .conftest import NotifyService


async def test_sync_and_async_clients_manage_subscriptions(notify_service: NotifyService) -> None:
    harness = notify_service.harness

    def sync_calls(url: str) -> tuple[Subscription, list[str]]:
        with PipelinesClient(notify_service.address) as client:
            created = client.create_subscription(
                notify_states=["succeeded", RunState.FAILED],
                webhook_url=url,
                webhook_signing_secret="hook-key",
                labels={"team": "slu"},
                subscription_id="slu-hooks",
            )
            with pytest.raises(RPCError) as error:
                client.create_subscription(notify_states=["FAILED"], webhook_url="ftp://x")
            fields = [v.field for v in error.value.violations]
            return created, fields

    with webhook_receiver([500, 200]) as receiver:
        created, fields = await asyncio.to_thread(sync_calls, receiver.url)
        assert created.name == "subscriptions/slu-hooks" and created.sink == "webhook"
        assert created.notify_states == (RunState.SUCCEEDED, RunState.FAILED)
        assert created.secret_name == "hook-key" and created.labels == {"team": "slu"}
        assert fields == [
            "subscription.sink.webhook.url",
            "subscription.sink.webhook.signing_secret",
        ]
        run = await harness.new_run({"team": "slu"})
        await harness.finish(run)
        harness.worker.start()
        await until(lambda: receiver.accepted(), what="the delivery")
        async with AsyncPipelinesClient(notify_service.address) as client:

            async def delivered() -> bool:
                got = await client.get_subscription("slu-hooks")
                return got.delivered_deliveries == 1

            await until(delivered, what="delivered_deliveries == 1")
            (delivery,) = await client.list_deliveries("subscriptions/slu-hooks")
            assert delivery.run == run.name and delivery.run_state == RunState.SUCCEEDED
            assert delivery.state == "DELIVERED"
            assert [a.outcome for a in delivery.attempts] == ["HTTP 500", "HTTP 200"]
            assert [s.name for s in await client.list_subscriptions()] == [created.name]
            await client.delete_subscription("slu-hooks")
            assert await client.list_subscriptions() == []


async def test_cli_subscriptions_commands(
    notify_service: NotifyService, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*argv: str) -> tuple[int, str]:
        code = main(["--server", notify_service.address, *argv])
        return code, capsys.readouterr().out

    code, text = await asyncio.to_thread(
        cli,
        "subscriptions",
        "create",
        "--slack-channel",
        "#ml-runs",
        "--slack-token-secret",
        "slack-token",
        "--notify",
        "failed",
        "--label",
        "team=slu",
        "--subscription-id",
        "failures",
    )
    assert code == 0, text
    assert "subscriptions/failures  slack #ml-runs  on FAILED" in text
    assert "slack-token (by name)" in text
    code, text = await asyncio.to_thread(cli, "subscriptions", "list")
    assert code == 0 and "subscriptions/failures" in text
    code, text = await asyncio.to_thread(
        cli, "subscriptions", "get", "failures", "--output", "json"
    )
    assert code == 0, text
    assert json.loads(text)["sink"]["slack"]["tokenSecret"] == "slack-token"
    code, text = await asyncio.to_thread(cli, "subscriptions", "deliveries", "failures")
    assert code == 0 and text == ""
    code, text = await asyncio.to_thread(
        cli, "subscriptions", "create", "--webhook-url", "ftp://x", "--signing-secret", "nope"
    )
    assert code != 0
    code, text = await asyncio.to_thread(cli, "subscriptions", "delete", "failures")
    assert code == 0 and "deleted failures" in text
