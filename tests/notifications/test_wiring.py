"""The configuration of notifications: secrets from the environment and a directory,
never printed; the server builds the controller and worker from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit_pipelines.config import ConfigError, ServerConfig
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.server import build_notifications
from skit_pipelines.store.sqlite import SqliteRunStore


def test_secrets_come_from_the_environment_and_never_print(tmp_path: Path) -> None:
    config = ServerConfig.from_env(
        {
            "SKIT_SECRET_HOOK_KEY": "whsec-from-env",
            "SKIT_SECRETS_DIR": str(tmp_path),
            "SKIT_SLACK_API_URL": "http://127.0.0.1:1/api/",
            "SKIT_NOTIFY_RETRY_BASE_SECONDS": "0.5",
        }
    )
    assert config.secrets == {"SKIT_SECRET_HOOK_KEY": "whsec-from-env"}
    assert config.secrets_dir == tmp_path
    assert config.slack_api_url == "http://127.0.0.1:1/api/"
    assert config.notify_retry_base_seconds == 0.5
    assert "whsec-from-env" not in repr(config)


async def test_the_server_builds_notifications_from_its_configuration(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "slack-token").write_text("xoxb-file\n")
    store = SqliteRunStore(tmp_path / "runs.db")
    try:
        config = ServerConfig(
            home=tmp_path,
            secrets_dir=tmp_path / "secrets",
            secrets={"SKIT_SECRET_HOOK_KEY": "k"},
        )
        controller, worker = build_notifications(config, store)
        for sink in (
            SinkSpec(kind="slack", channel="C1", token_secret="slack-token"),
            SinkSpec(kind="webhook", url="https://h.test/", signing_secret="hook-key"),
        ):
            await controller.create_subscription(SubscriptionSpec(notify_states=(3,), sink=sink))
        worker.start()
        await worker.stop()
        with pytest.raises(ConfigError):
            build_notifications(ServerConfig(secrets_dir=tmp_path / "missing"), store)
    finally:
        await store.close()
