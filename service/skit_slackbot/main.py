"""`skit-slackbot`: environment -> SlackBotConfig -> the bot until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from skit_slackbot.app import start_bot
from skit_slackbot.config import ConfigError, SlackBotConfig

logger = logging.getLogger("skit_slackbot")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="skit-slackbot",
        description="Runs skit-pipelines from Slack (Events API over HTTP). Configured by "
        "the environment: SLACK_BOT_TOKEN(_FILE), SLACK_SIGNING_SECRET(_FILE), "
        "SKIT_SLACKBOT_USERS_FILE, SKIT_SLACKBOT_SERVICE, SKIT_SLACKBOT_SERVICE_CA_FILE, "
        "SKIT_SLACKBOT_HOST, SKIT_SLACKBOT_PORT, SKIT_SLACKBOT_PROGRESS_SECONDS.",
    )
    parser.add_argument("--log-level", default=os.environ.get("SKIT_SLACKBOT_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = SlackBotConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"skit-slackbot: {error}", file=sys.stderr)
        return 2
    asyncio.run(_serve(config))
    return 0


async def _serve(config: SlackBotConfig) -> None:
    running = await start_bot(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    logger.info(
        "Slack bot for %s: %d Slack users mapped", config.service_target, len(config.users.users)
    )
    await stopping.wait()
    logger.info("stopping")
    await running.stop()
