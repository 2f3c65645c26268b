"""`python -m skit_slackbot` (the image's entrypoint, the `skit-slackbot` script): configured
by the environment, serves until SIGTERM, and never logs its secrets."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from skit_testing.slack import FakeSlack, SlackEventSender

from .conftest import BOT_TOKEN, CHANNEL, SIGNING_SECRET, STRANGER

_SERVING = re.compile(r"serving the Slack request URL on [^:]+:(\d+)/slack/events")


def test_serves_from_the_environment_until_sigterm(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  U1: {principal: alice, token: skp_never_logged_token}\n")
    (tmp_path / "signing").write_text(SIGNING_SECRET + "\n")
    log = tmp_path / "bot.log"
    with FakeSlack(token=BOT_TOKEN, channels=[CHANNEL]) as slack, log.open("w") as sink:
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET_FILE": str(tmp_path / "signing"),
            "SKIT_SLACKBOT_USERS_FILE": str(users),
            "SKIT_SLACKBOT_HOST": "127.0.0.1",
            "SKIT_SLACKBOT_PORT": "0",
            "SKIT_SLACKBOT_SERVICE": "127.0.0.1:1",  # nothing there: help needs no service
            "SKIT_SLACKBOT_SLACK_API_URL": slack.base_url,
            "SKIT_SLACKBOT_LOG_LEVEL": "DEBUG",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "skit_slackbot"], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
        try:
            deadline = time.monotonic() + 30
            while not (match := _SERVING.search(log.read_text())):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            base = f"http://127.0.0.1:{match.group(1)}"
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                assert response.read() == b"ok"
            sender = SlackEventSender(f"{base}/slack/events", SIGNING_SECRET, slack=slack)
            sent = sender.app_mention(STRANGER, CHANNEL, "help")
            assert sent.status == 200
            slack.wait_for_messages(1, CHANNEL, thread_ts=sent.ts)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert BOT_TOKEN not in text and SIGNING_SECRET not in text
    assert "skp_never_logged_token" not in text


def test_a_bad_configuration_exits_2_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SKIT_SLACKBOT"))}
    result = subprocess.run(
        [sys.executable, "-m", "skit_slackbot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "SKIT_SLACKBOT_USERS_FILE is required" in result.stderr
