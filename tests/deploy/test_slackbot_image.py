"""The Slack bot's image (deploy/slackbot/Dockerfile), built with real buildah and run:
it serves the Events API request URL as its non-root user, answers Slack's URL
verification, refuses a request with a bad signature, and answers a signed mention by
posting to Slack (the stand-in). CI runs it with SKIT_TEST_BUILDAH=1 (.ci/run's last
step); without it, it skips."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from skit_slackbot.config import EVENTS_PATH, HEALTH_PATH
from skit_testing.slack import FakeSlack, SlackEventSender

pytestmark = [
    pytest.mark.xdist_group("buildah"),  # real builds share buildah's storage
    pytest.mark.skipif(
        os.environ.get("SKIT_TEST_BUILDAH") != "1",
        reason="SKIT_TEST_BUILDAH=1 builds real images",
    ),
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "slackbot" / "Dockerfile"
REF = "localhost/skit-pipelines/slackbot:smoke"
BUILDAH = ("buildah", "--storage-driver", "vfs")
BOT_TOKEN = "xoxb-smoke-token"
SIGNING_SECRET = "smoke-signing-secret"
CHANNEL = "C0SMOKE01"
SLACK_USER = "U0SMOKE01"
START_TIMEOUT_SECONDS = 60


def _image_tool() -> ModuleType:
    """deploy/image.py, which builds the service's image (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("deploy_image", ROOT / "deploy" / "image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    tool = _image_tool()
    tool.build(REF, tool.base_image(), "0.0.0-smoke", dockerfile=DOCKERFILE)
    tool.check_config(REF)  # a numeric, non-root user
    yield REF
    subprocess.run([*BUILDAH, "rmi", REF], capture_output=True, check=False)


@pytest.fixture
def bot(image: str, tmp_path: Path) -> Iterator[tuple[FakeSlack, str, Path]]:
    """The image's ENTRYPOINT running in a buildah container on a loopback port (chroot
    isolation shares this machine's network), configured as deploy/slackbot's manifest
    does: secrets and the user map from files."""
    port = _free_port()
    log = tmp_path / "bot.log"
    with FakeSlack(token=BOT_TOKEN, channels={CHANNEL: "pipelines"}) as slack:
        container = (
            subprocess.run(
                [*BUILDAH, "from", "--pull=never", image],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        try:
            settings = {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SKIT_SLACKBOT_USERS_FILE": "/smoke/users.json",
                "SKIT_SLACKBOT_SLACK_API_URL": slack.base_url,
                # No service: help needs none, and following earlier runs only warns.
                "SKIT_SLACKBOT_SERVICE": f"127.0.0.1:{_free_port()}",
                "SKIT_SLACKBOT_HOST": "127.0.0.1",
                "SKIT_SLACKBOT_PORT": str(port),
            }
            config = [f"--env={key}={value}" for key, value in settings.items()]
            subprocess.run([*BUILDAH, "config", *config, container], check=True)
            smoke = tmp_path / "smoke"
            smoke.mkdir()
            (smoke / "users.json").write_text(
                json.dumps({"users": {SLACK_USER: {"principal": "alice", "token": "skp_x"}}})
            )
            smoke.chmod(0o755)
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [
                        *BUILDAH,
                        "run",
                        "--isolation",
                        "chroot",
                        f"--volume={smoke}:/smoke:ro",
                        container,
                        "--",
                        "python3",
                        "-m",
                        "skit_slackbot",
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                _wait_healthy(port, process, log)
                yield slack, f"http://127.0.0.1:{port}{EVENTS_PATH}", log
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        finally:
            subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=False)


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    url = f"http://127.0.0.1:{port}{HEALTH_PATH}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the bot exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            # Not listening yet; the connection attempt itself paces the loop.
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {START_TIMEOUT_SECONDS}s:\n{log.read_text()}")


def test_the_image_serves_slack_as_a_non_root_user(bot) -> None:
    slack, url, log = bot
    sender = SlackEventSender(url, SIGNING_SECRET, slack=slack)

    verified = sender.url_verification("smoke-challenge")
    assert verified.status == 200 and b"smoke-challenge" in verified.body

    status, _ = sender.post({"type": "url_verification", "challenge": "x"}, signature="v0=bad")
    assert status == 401

    sender.app_mention(SLACK_USER, CHANNEL, "help")
    (reply,) = slack.wait_for_messages(1, CHANNEL, timeout=30)
    assert "run" in reply.text and "status" in reply.text
    assert BOT_TOKEN not in log.read_text() and SIGNING_SECRET not in log.read_text()
