"""The Events API request URL (aiohttp.web) and the bot's process lifecycle.

Every request is checked with slack_sdk's SignatureVerifier before its body is read as
JSON: `X-Slack-Signature` must be `v0=` HMAC-SHA256(signing secret, `v0:{ts}:{body}`) and
`X-Slack-Request-Timestamp` within five minutes of now
(https://api.slack.com/authentication/verifying-requests-from-slack); anything else is
answered 401 and does nothing. `url_verification` is answered with its challenge
(https://api.slack.com/events/url_verification); an `event_callback` is acknowledged at
once with 200 and handled in the background, so Slack's 3-second deadline is met and it
does not retry (https://api.slack.com/apis/events-api#retries). Retries that do come
(`X-Slack-Retry-Num`) of an event already accepted are dropped by its event_id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from skit_slackbot.bot import SlackBot
from skit_slackbot.config import EVENTS_PATH, HEALTH_PATH, SlackBotConfig

logger = logging.getLogger(__name__)

BOT_KEY = web.AppKey("bot", SlackBot)


def create_app(bot: SlackBot) -> web.Application:
    """The request URL's application: POST /slack/events, GET /healthz."""
    verifier = SignatureVerifier(bot.config.slack_signing_secret)
    app = web.Application(client_max_size=bot.config.max_request_bytes)
    app[BOT_KEY] = bot

    async def events(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if not verifier.is_valid_request(body, dict(request.headers)):
            logger.warning("refused an event request with a bad or stale signature")
            return web.Response(status=401, text="invalid request signature")
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="expected a JSON body")
        if not isinstance(payload, dict):
            return web.Response(status=400, text="expected a JSON object")
        kind = payload.get("type")
        if kind == "url_verification":
            return web.json_response({"challenge": payload.get("challenge", "")})
        if kind == "event_callback":
            retry = request.headers.get("X-Slack-Retry-Num")
            accepted = bot.accept(payload)
            if retry:
                logger.info(
                    "Slack retry %s (%s) of %s: %s",
                    retry,
                    request.headers.get("X-Slack-Retry-Reason", ""),
                    payload.get("event_id"),
                    "handled" if accepted else "ignored",
                )
        return web.Response(status=200)

    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    app.router.add_post(EVENTS_PATH, events)
    app.router.add_get(HEALTH_PATH, health)
    return app


@dataclass
class RunningBot:
    """A started bot and its listening request URL."""

    bot: SlackBot
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        """The Events API request URL (what the Slack app's Event Subscriptions names)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{EVENTS_PATH}"

    async def stop(self) -> None:
        """Stops listening, then stops following runs and closes the service channels."""
        await self.runner.cleanup()
        await self.bot.close()


async def start_bot(config: SlackBotConfig) -> RunningBot:
    """Starts the bot and its request URL on config.host:config.port (0: a free port)."""
    bot = SlackBot(config)
    await bot.start()
    runner = web.AppRunner(create_app(bot), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = int(runner.addresses[0][1])
    logger.info("serving the Slack request URL on %s:%s%s", config.host, port, EVENTS_PATH)
    return RunningBot(bot, runner, config.host, port)
