"""The bot against a real `skit-pipelines serve` process (authentication on, the demo
pipelines on the local executor): a Slack mention runs random-sample-calls to the end and
the thread gets the created run, its progress and its outputs."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from skit_pipelines import auth
from skit_slackbot.app import start_bot
from skit_testing.serve import launch
from skit_testing.slack import FakeSlack, SlackEventSender

from .conftest import ALICE, BOT_TOKEN, CHANNEL, SIGNING_SECRET, bot_config

pytestmark = pytest.mark.e2e


async def test_a_mention_runs_a_demo_pipeline_to_its_outputs(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    token = auth.add_token(tokens, "alice", "runner")
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  {ALICE}: {{principal: alice, token: {token}}}\n")
    server = launch(tmp_path / "home", "--tokens-file", str(tokens)).serving()
    try:
        with FakeSlack(token=BOT_TOKEN, channels=[CHANNEL]) as slack:
            running = await start_bot(bot_config(server.address, slack, users))
            try:
                events = SlackEventSender(running.url, SIGNING_SECRET, slack=slack)
                sent = await events.app_mention_async(
                    ALICE, CHANNEL, "run random-sample-calls call_quantity=3 seed=7"
                )
                created, progress, outcome = await slack.wait_for_messages_async(
                    3, CHANNEL, thread_ts=sent.ts, timeout=180
                )
                match = re.search(r"Started run `([a-z0-9-]+)`", created.text)
                assert match, created.text
                run_id = match.group(1)
                assert "call_quantity=`3`" in created.text
                assert f"Run `{run_id}`" in outcome.text and "*SUCCEEDED*" in outcome.text
                assert "file://" in outcome.text  # the run's output artifact
                [progress] = [m for m in slack.messages(CHANNEL) if m.ts == progress.ts]
                assert progress.edits and "SUCCEEDED" in progress.text

                asked = await events.app_mention_async(ALICE, CHANNEL, f"status {run_id}")
                [status] = await slack.wait_for_messages_async(1, CHANNEL, thread_ts=asked.ts)
                assert "*SUCCEEDED*" in status.text and "created by `alice`" in status.text
            finally:
                await running.stop()
    finally:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
