"""The Slack bot against the real gRPC service (in process, port 0, the `typed` pipeline
on a fake backend the tests drive), the Slack Web API stand-in, and signed events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from skit_pipelines import auth
from skit_pipelines.config import ServerConfig
from skit_slackbot.app import RunningBot, start_bot
from skit_slackbot.config import SlackBotConfig, UserMap
from skit_testing.slack import FakeSlack, SlackEventSender

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-slackbot-test"
CHANNEL = "C0000000001"
DM = "D0000000001"
ALICE = "U00000ALICE"
"""Mapped to the runner principal alice (token in a file)."""
VIEWER = "U0000VIEWER"
"""Mapped to a viewer principal (token inline)."""
STRANGER = "U000STRANGE"
"""Not in the user map."""


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "tokens.json"
    return {
        "alice": auth.add_token(path, "alice", "runner"),
        "vic": auth.add_token(path, "vic", "viewer"),
    }


@pytest.fixture
def service_config(tmp_path: Path, tokens: dict[str, str]) -> ServerConfig:
    return ServerConfig(port=0, home=tmp_path, tokens_file=tmp_path / "tokens.json")


@pytest.fixture
def users_file(tmp_path: Path, tokens: dict[str, str]) -> Path:
    secrets = tmp_path / "bot-secrets"
    secrets.mkdir()
    (secrets / "alice").write_text(tokens["alice"] + "\n")
    path = secrets / "users.yaml"
    path.write_text(
        "users:\n"
        f"  {ALICE}: {{principal: alice, token_file: alice}}\n"
        f"  {VIEWER}: {{principal: vic, token: {tokens['vic']}}}\n"
    )
    return path


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=BOT_TOKEN, channels={CHANNEL: "pipelines", DM: DM}) as fake:
        yield fake


@dataclass
class Harness:
    service: object
    """tests/conftest.py's ServiceHarness (controller, store, fake backend)."""
    slack: FakeSlack
    bot: RunningBot
    events: SlackEventSender
    config: SlackBotConfig


def bot_config(service_address: str, slack: FakeSlack, users_file: Path) -> SlackBotConfig:
    return SlackBotConfig(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        users=UserMap.load(users_file),
        service_target=service_address,
        host="127.0.0.1",
        port=0,
        slack_api_url=slack.base_url,
        progress_interval_seconds=0,
    )


@pytest.fixture
async def h(service, slack: FakeSlack, users_file: Path) -> AsyncIterator[Harness]:
    config = bot_config(service.address, slack, users_file)
    running = await start_bot(config)
    try:
        yield Harness(
            service,
            slack,
            running,
            SlackEventSender(running.url, SIGNING_SECRET, slack=slack),
            config,
        )
    finally:
        await running.stop()
