"""The bot: turns Slack events into PipelineService calls as the mapped principal, replies
in the event's thread, and follows the runs it started until they end.

Events come from the HTTP app (app.py) already verified; `accept` only files them and
returns, so the request is answered well within Slack's 3 seconds
(https://api.slack.com/apis/events-api#responding); the work runs in background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from skit_pipelines_client import AsyncPipelinesClient, RPCError, Run, RunState, TlsOptions
from skit_slackbot import render
from skit_slackbot.commands import (
    CommandError,
    RunCommand,
    RunRefCommand,
    SimpleCommand,
    UnknownCommand,
    parse,
)
from skit_slackbot.config import SlackBotConfig, SlackUser

logger = logging.getLogger(__name__)

SEEN_EVENTS_KEPT = 10_000
"""Event ids (and message ids) remembered to drop Slack's retries of handled events."""
SLACK_RETRIES = 3
"""Rate-limited (429) or dropped Slack calls are retried this often (Retry-After honoured)."""
LABELS = {"created-by": "slackbot"}
"""Every run the bot starts carries these labels, and where it reports (below)."""
SLACK_USER_LABEL = "slack-user"
SLACK_CHANNEL_LABEL = "slack-channel"
SLACK_THREAD_LABEL = "slack-thread"
UNFINISHED = (RunState.QUEUED, RunState.RUNNING, RunState.CANCELLING)


@dataclass(frozen=True)
class SlackEvent:
    """The part of an app_mention or DM `message` event the bot acts on."""

    event_id: str
    team_id: str
    user: str
    channel: str
    text: str
    ts: str
    thread_ts: str

    @property
    def reply_thread(self) -> str:
        """Replies go into the message's thread (a new one when it had none)."""
        return self.thread_ts or self.ts

    @property
    def request_key(self) -> str:
        """Identifies the message in the workspace: the same across Slack's retries, so
        it makes CreateRun/RetryRun idempotent (request_id)."""
        return f"{self.team_id}-{self.channel}-{self.ts}"


class _Recent:
    """A bounded set of recently seen keys (oldest forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, *keys: str) -> bool:
        """Remembers the keys; False when any of them was already known."""
        if any(key in self._keys for key in keys):
            return False
        for key in keys:
            self._keys[key] = None
            if len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
        return True


class SlackBot:
    """Slack events in, PipelineService calls and Slack replies out."""

    def __init__(self, config: SlackBotConfig) -> None:
        self.config = config
        kwargs: dict[str, Any] = {}
        if config.slack_api_url:
            kwargs["base_url"] = config.slack_api_url
        self.slack = AsyncWebClient(
            token=config.slack_bot_token,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=SLACK_RETRIES),
                AsyncRateLimitErrorRetryHandler(max_retry_count=SLACK_RETRIES),
            ],
            **kwargs,
        )
        self.bot_user_id = ""
        self.bot_id = ""
        self._seen = _Recent(SEEN_EVENTS_KEPT)
        self._clients: dict[str, AsyncPipelinesClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._following: dict[str, asyncio.Task[None] | None] = {}
        """Run name -> the task following it (None while it is being announced)."""

    async def start(self) -> None:
        """Learns the bot's own user id (to ignore its own messages and strip mentions),
        and goes on following, in the background, the unfinished runs it started before
        a restart."""
        self._spawn(self._resume_following(), "resume-following")
        try:
            identity = await self.slack.auth_test()
        except SlackApiError as error:
            # Not fatal: events from bots are ignored by their bot_id anyway.
            logger.warning("Slack auth.test failed: %s", error.response.get("error"))
            return
        self.bot_user_id = str(identity.get("user_id") or "")
        self.bot_id = str(identity.get("bot_id") or "")
        logger.info("Slack bot user %s (team %s)", self.bot_user_id, identity.get("team_id"))

    async def _resume_following(self) -> None:
        """Finds each mapped user's unfinished runs started from Slack (by their labels)
        and follows them again in their threads, with a new progress message."""
        for user in self.config.users.users.values():
            client = self._client(user)
            labels = {**LABELS, SLACK_USER_LABEL: user.slack_user}
            try:
                runs = [
                    run
                    async for run in client.list_runs(labels=labels, states=UNFINISHED)
                    if run.name not in self._following
                ]
            except RPCError as error:
                logger.warning("can't resume following %s's runs: %s", user.principal, error)
                continue
            for run in runs:
                channel = run.labels.get(SLACK_CHANNEL_LABEL, "")
                thread = run.labels.get(SLACK_THREAD_LABEL, "")
                if channel and thread:
                    logger.info("following %s again after a restart", run.name)
                    await self._start_following(client, run, channel, thread)

    async def close(self) -> None:
        """Stops following runs and closes the service channels."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def idle(self) -> None:
        """Waits until no event is being handled and no run followed (for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def following(self) -> frozenset[str]:
        """The run names whose progress the bot is posting."""
        return frozenset(self._following)

    # -- events ----------------------------------------------------------------------

    def accept(self, envelope: Mapping[str, Any]) -> bool:
        """Files one event_callback for handling in the background; False when it is
        ignored (a retry of one already handled, the bot's own message, an edit…)."""
        event = self._event(envelope)
        if event is None:
            return False
        # A message both mentioning the bot and sent in its DM arrives as two events
        # (app_mention and message.im) with different event ids: dedupe by message too.
        keys = [k for k in (event.event_id, f"{event.channel}/{event.ts}") if k]
        if not self._seen.add(*keys):
            logger.info("ignoring a repeated event %s", event.event_id)
            return False
        self._spawn(self._handle(event), f"slack-event-{event.event_id}")
        return True

    def _event(self, envelope: Mapping[str, Any]) -> SlackEvent | None:
        event = envelope.get("event")
        if envelope.get("type") != "event_callback" or not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind == "message" and event.get("channel_type") != "im":
            return None
        if kind not in ("app_mention", "message"):
            return None
        # Edits, joins, and bots' posts (the bot's own replies come back as message.im
        # events) carry a subtype or a bot_id.
        if event.get("subtype") or event.get("bot_id"):
            return None
        user = str(event.get("user") or "")
        if not user or user == self.bot_user_id:
            return None
        return SlackEvent(
            event_id=str(envelope.get("event_id") or ""),
            team_id=str(envelope.get("team_id") or event.get("team") or ""),
            user=user,
            channel=str(event.get("channel") or ""),
            text=str(event.get("text") or ""),
            ts=str(event.get("ts") or ""),
            thread_ts=str(event.get("thread_ts") or ""),
        )

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _handle(self, event: SlackEvent) -> None:
        try:
            await self._dispatch(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handling Slack event %s failed", event.event_id)
            await self._reply(event, ":warning: Something went wrong on my side; see my log.")

    async def _dispatch(self, event: SlackEvent) -> None:
        try:
            command = parse(event.text)
        except CommandError as error:
            await self._reply(event, f":warning: {render.escape(error)}")
            return
        if isinstance(command, SimpleCommand) and command.verb == "help":
            await self._reply(event, render.HELP)
            return
        if isinstance(command, UnknownCommand):
            await self._reply(event, render.unknown(command.word))
            return
        user = self.config.users.get(event.user)
        if user is None:
            logger.info("refusing unmapped Slack user %s", event.user)
            await self._reply(event, render.refused(event.user))
            return
        client = self._client(user)
        try:
            if isinstance(command, SimpleCommand):
                pipelines = await client.list_pipelines()
                await self._reply(event, render.pipelines(pipelines))
            elif isinstance(command, RunCommand):
                await self._run(event, user, client, command)
            elif command.verb == "status":
                await self._reply(event, render.status(await client.get_run(command.run)))
            elif command.verb == "cancel":
                await self._cancel(event, client, command)
            else:
                await self._retry(event, user, client, command)
        except RPCError as error:
            doing = (
                f"{command.verb} {command.run}"
                if isinstance(command, RunRefCommand)
                else "list the pipelines"
            )
            await self._reply(event, render.rpc_error(error, render.escape(doing)))

    async def _run(
        self, event: SlackEvent, user: SlackUser, client: AsyncPipelinesClient, command: RunCommand
    ) -> None:
        doing = f"start {render.code(command.pipeline)}"
        try:
            schema = next(
                (
                    p.parameters
                    for p in await client.list_pipelines()
                    if p.name == f"pipelines/{command.pipeline}"
                ),
                None,
            )
            if schema is None:
                await self._reply(
                    event,
                    f":warning: There is no pipeline {render.code(command.pipeline)}; "
                    "`pipelines` lists them.",
                )
                return
            try:
                parameters = command.typed_parameters(schema)
            except CommandError as error:
                await self._reply(event, f":warning: Can't {doing}: {render.escape(error)}")
                return
            run = await client.create_run(
                command.pipeline,
                parameters,
                self._labels(event),
                request_id=f"slack-run-{event.request_key}",
            )
        except RPCError as error:
            await self._reply(event, render.rpc_error(error, doing))
            return
        logger.info("Slack user %s (%s) started %s", event.user, user.principal, run.name)
        await self._announce_and_follow(event, client, run, render.created(run, user.principal))

    async def _retry(
        self,
        event: SlackEvent,
        user: SlackUser,
        client: AsyncPipelinesClient,
        command: RunRefCommand,
    ) -> None:
        run = await client.retry_run(command.run, request_id=f"slack-retry-{event.request_key}")
        logger.info("Slack user %s (%s) retried as %s", event.user, user.principal, run.name)
        text = render.created(run, user.principal, retry_of=command.run)
        await self._announce_and_follow(event, client, run, text)

    async def _cancel(
        self, event: SlackEvent, client: AsyncPipelinesClient, command: RunRefCommand
    ) -> None:
        run = await client.cancel_run(command.run)
        if run.name in self._following:
            text = f"Cancelling run {render.code(run.id)}; its thread will show the outcome."
            await self._reply(event, text)
            return
        await self._announce_and_follow(
            event, client, run, f"Cancelling run {render.code(run.id)} ({run.state.name})."
        )

    def _labels(self, event: SlackEvent) -> dict[str, str]:
        return {
            **LABELS,
            SLACK_USER_LABEL: event.user,
            SLACK_CHANNEL_LABEL: event.channel,
            SLACK_THREAD_LABEL: event.reply_thread,
        }

    def _client(self, user: SlackUser) -> AsyncPipelinesClient:
        # One channel per principal: the token rides on the channel's calls.
        client = self._clients.get(user.slack_user)
        if client is None:
            tls = (
                TlsOptions(ca_cert=self.config.service_ca_file)
                if self.config.service_ca_file
                else None
            )
            client = AsyncPipelinesClient(self.config.service_target, token=user.token, tls=tls)
            self._clients[user.slack_user] = client
        return client

    # -- following a run -----------------------------------------------------------

    async def _announce_and_follow(
        self, event: SlackEvent, client: AsyncPipelinesClient, run: Run, text: str
    ) -> None:
        await self._reply(event, text)
        await self._start_following(client, run, event.channel, event.reply_thread)

    async def _start_following(
        self, client: AsyncPipelinesClient, run: Run, channel: str, thread_ts: str
    ) -> None:
        if run.name in self._following:
            return  # a Slack retry after the run was announced, or already followed
        # Claimed (None) before the first await, so two events can't both follow the run.
        self._following[run.name] = None
        try:
            progress_ts = await self._post(channel, thread_ts, render.progress(run))
        except BaseException:
            self._following.pop(run.name, None)
            raise
        task = self._spawn(
            self._follow(client, run, channel, thread_ts, progress_ts), f"follow-{run.id}"
        )
        self._following[run.name] = task
        task.add_done_callback(lambda _: self._following.pop(run.name, None))

    async def _follow(
        self,
        client: AsyncPipelinesClient,
        run: Run,
        channel: str,
        thread_ts: str,
        progress_ts: str | None,
    ) -> None:
        """Keeps the progress message current (at most one update per interval, the
        latest snapshot winning) and posts the outcome when the run ends."""
        latest = run
        shown = render.progress(run)
        changed = asyncio.Event()
        ended = asyncio.Event()
        failure: list[RPCError] = []

        async def read() -> None:
            nonlocal latest
            try:
                async for snapshot in client.watch(run.name):
                    latest = snapshot
                    changed.set()
            except RPCError as error:
                failure.append(error)
            finally:
                ended.set()
                changed.set()

        reader = asyncio.get_running_loop().create_task(read(), name=f"watch-{run.id}")
        try:
            while not ended.is_set():
                await changed.wait()
                changed.clear()
                text = render.progress(latest)
                if text != shown and progress_ts:
                    await self._update(channel, progress_ts, text)
                    shown = text
                if not ended.is_set() and self.config.progress_interval_seconds:
                    # Rate limit of chat.update, not a wait for something to happen.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), self.config.progress_interval_seconds)
            await reader
        finally:
            reader.cancel()
        if failure:
            logger.warning("lost track of %s: %s", run.name, failure[0])
            await self._post(
                channel,
                thread_ts,
                render.rpc_error(failure[0], f"follow run {render.code(run.id)}")
                + f"\n`status {run.id}` shows where it is.",
            )
            return
        text = render.progress(latest)
        if text != shown and progress_ts:
            await self._update(channel, progress_ts, text)
        await self._post(channel, thread_ts, render.outcome(latest))

    # -- Slack ---------------------------------------------------------------------

    async def _reply(self, event: SlackEvent, text: str) -> str | None:
        return await self._post(event.channel, event.reply_thread, text)

    async def _post(self, channel: str, thread_ts: str, text: str) -> str | None:
        """Posts into the thread; the message's ts, or None when Slack refused it."""
        try:
            response = await self.slack.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, unfurl_links=False
            )
        except SlackApiError as error:
            logger.warning(
                "chat.postMessage to %s failed: %s", channel, error.response.get("error")
            )
            return None
        return str(response["ts"])

    async def _update(self, channel: str, ts: str, text: str) -> None:
        try:
            await self.slack.chat_update(channel=channel, ts=ts, text=text)
        except SlackApiError as error:
            logger.warning("chat.update in %s failed: %s", channel, error.response.get("error"))
