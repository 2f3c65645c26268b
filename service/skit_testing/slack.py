"""A local stand-in for Slack's Web API, and a sender of signed Events API requests.

`FakeSlack` is a real HTTP server on 127.0.0.1 (port 0) that slack_sdk's unmodified
`WebClient(token=..., base_url=fake.base_url)` (or `AsyncWebClient`) talks to. It implements
the few Web API methods this project calls, records what was posted, and lets a test make a
method fail or rate-limit:

    with FakeSlack(token="xoxb-test", channels={"C0000000001": "general"}) as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        client.chat_postMessage(channel="C0000000001", text="hi")
        [message] = slack.wait_for_messages(1, channel="C0000000001")
        slack.fail("chat.postMessage", "channel_not_found")     # next call: ok=false
        slack.rate_limit("chat.postMessage", retry_after=1)     # next call: HTTP 429

Behaviour and where it comes from:

- Transport (slack_sdk `web/base_client.py`, `_urllib_api_call` and
  `_build_urllib_request_headers`; https://api.slack.com/web#basics): every method is
  POSTed to `{base_url}{method}`, as `application/x-www-form-urlencoded` (arguments in the
  body; `blocks` then a JSON-encoded string) or as `application/json;charset=utf-8` (which
  `chat_postMessage` and `chat_update` always use); `conversations.replies` is a GET with
  query arguments. The token comes as `Authorization: Bearer <token>`; form bodies may carry
  it as a `token` argument instead, JSON bodies may not.
- Errors (https://api.slack.com/web#evaluating_responses): HTTP 200 with
  `{"ok": false, "error": "<code>"}`; `not_authed` (no token), `invalid_auth` (unknown
  token), `unknown_method`, and the per-method codes below. slack_sdk raises `SlackApiError`
  for any of them (`SlackResponse.validate`).
- Rate limits (https://api.slack.com/docs/rate-limits): HTTP 429 with a `Retry-After`
  header in seconds and `{"ok": false, "error": "ratelimited"}`; slack_sdk's
  `RateLimitErrorRetryHandler` reads that header (`http_retry/builtin_handlers.py`).
- `chat.postMessage` (https://api.slack.com/methods/chat.postMessage): `channel` plus
  `text` or `blocks`/`attachments` (else `no_text`), optional `thread_ts`; `channel_not_found`
  for a channel the workspace does not have (an ID or a name, `#general` or `general`),
  `msg_too_long` past 40,000 characters, `invalid_blocks` when blocks are not a list. Answers
  `{"ok": true, "channel": "C…", "ts": "…", "message": {...}}`, the message carrying `type`,
  `user` and `bot_id` of the bot, `text`, `ts`, `blocks` and `thread_ts` when given.
- `chat.update` (https://api.slack.com/methods/chat.update): `channel`, `ts`, new `text`/
  `blocks`; `message_not_found`, `cant_update_message` (not the bot's own message).
  Answers `{"ok": true, "channel", "ts", "text", "message"}`.
- `conversations.replies` (https://api.slack.com/methods/conversations.replies): `channel`
  and `ts` of the thread's parent; the parent then its replies, oldest first, or
  `thread_not_found`.
- `auth.test` (https://api.slack.com/methods/auth.test): `url`, `team`, `user`, `team_id`,
  `user_id`, `bot_id`.
- Message timestamps: `"<unix seconds>.<6 digits>"`, unique per workspace and increasing
  (Slack's ts is the message's ID within its channel).

`SlackEventSender` plays Slack's side of the Events API against a bot's request URL: it
signs each request the way https://api.slack.com/authentication/verifying-requests-from-slack
describes and slack_sdk's `signature/__init__.py` (`SignatureVerifier.generate_signature`)
computes: `X-Slack-Signature: v0=hex(HMAC-SHA256(signing_secret, "v0:{ts}:{body}"))` and
`X-Slack-Request-Timestamp: {ts}`. Retries carry `X-Slack-Retry-Num` and
`X-Slack-Retry-Reason` (https://api.slack.com/apis/events-api#retries). The payloads are
the `event_callback` envelope (https://api.slack.com/apis/events-api#callback-field) around
`app_mention` (https://api.slack.com/events/app_mention) or an `im` `message`
(https://api.slack.com/events/message.im), and `url_verification`
(https://api.slack.com/events/url_verification).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_TEXT_CHARS = 40_000
"""chat.postMessage truncates past 4,000 characters and fails with msg_too_long past 40,000."""

DEFAULT_TOKEN = "xoxb-skit-test"
DEFAULT_CHANNEL = "C0000000001"
DEFAULT_BOT_USER_ID = "U0000BOT01"
DEFAULT_BOT_ID = "B0000BOT01"
DEFAULT_TEAM_ID = "T0000TEAM1"

JSON = dict[str, Any]

SHUTDOWN_POLL_SECONDS = 0.05
"""How often the server loop checks for stop(): short, so tests don't wait 0.5 s each."""


@dataclass
class Message:
    """One message in the fake workspace (the bot's or a user's).

    Mutable: `chat.update` changes text/blocks in place and appends the old text to `edits`.
    Read copies through `FakeSlack.messages()`.
    """

    channel: str
    ts: str
    text: str
    user: str
    bot_id: str | None = None
    blocks: list[Any] | None = None
    attachments: list[Any] | None = None
    thread_ts: str | None = None
    edits: list[str] = field(default_factory=list)
    """Earlier texts, oldest first, one per chat.update."""

    def to_api(self) -> JSON:
        """The message as Slack's API shows it."""
        out: JSON = {"type": "message", "user": self.user, "text": self.text, "ts": self.ts}
        if self.bot_id:
            out["bot_id"] = self.bot_id
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.edits:
            out["edited"] = {"user": self.user, "ts": self.ts}
        return out


@dataclass(frozen=True)
class ApiCall:
    """One Web API request the fake received (whatever it answered)."""

    method: str
    args: JSON
    """Arguments from the query, the form or the JSON body; `blocks` decoded."""
    token: str | None
    status: int
    """The HTTP status answered."""
    response: JSON


@dataclass(frozen=True)
class _Scripted:
    error: str
    status: int
    retry_after: int | None


class FakeSlack:
    """Slack's Web API for tests; see the module docstring for what it implements."""

    def __init__(
        self,
        *,
        token: str | Iterable[str] = DEFAULT_TOKEN,
        channels: Mapping[str, str] | Iterable[str] = (DEFAULT_CHANNEL,),
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        team_id: str = DEFAULT_TEAM_ID,
        team: str = "skit-test",
    ) -> None:
        """Args:
        token: the bot token(s) the workspace accepts.
        channels: channel IDs the workspace has (C…, D… for DMs, G…), or {id: name}.
        """
        self.tokens = {token} if isinstance(token, str) else set(token)
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.team = team
        self._cond = threading.Condition()
        self._channels: dict[str, str] = {}
        for channel_id, name in (
            channels.items() if isinstance(channels, Mapping) else ((c, c) for c in channels)
        ):
            self._channels[channel_id] = name
        self._history: dict[str, list[Message]] = {c: [] for c in self._channels}
        self._calls: list[ApiCall] = []
        self._scripted: dict[str, list[_Scripted]] = {}
        self._seq = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="fake-slack",
            daemon=True,
        )
        self._started = False

    # -- lifecycle -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What slack_sdk's WebClient takes as `base_url` (ends with /api/)."""
        return f"http://127.0.0.1:{self._server.server_port}/api/"

    def start(self) -> FakeSlack:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up --------------------------------------------------------------------

    def add_channel(self, channel_id: str, name: str | None = None) -> None:
        with self._cond:
            self._channels[channel_id] = name or channel_id
            self._history.setdefault(channel_id, [])

    def fail(
        self, method: str, error: str = "internal_error", *, times: int = 1, status: int = 200
    ) -> None:
        """The next `times` calls of `method` answer `{"ok": false, "error": error}` with
        HTTP `status` (Slack uses 200 for API errors) and change nothing."""
        with self._cond:
            self._scripted.setdefault(method, []).extend([_Scripted(error, status, None)] * times)

    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` calls of `method` answer HTTP 429, `Retry-After: retry_after`."""
        with self._cond:
            self._scripted.setdefault(method, []).extend(
                [_Scripted("ratelimited", 429, retry_after)] * times
            )

    def add_user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> str:
        """Records a message a person posted (what an event is about); returns its ts."""
        with self._cond:
            if channel not in self._channels:
                self._channels[channel] = channel
                self._history[channel] = []
            ts = self._next_ts()
            self._history[channel].append(Message(channel, ts, text, user, thread_ts=thread_ts))
            self._cond.notify_all()
            return ts

    # -- reading what happened -------------------------------------------------------

    @property
    def calls(self) -> list[ApiCall]:
        """Every request received, in order."""
        with self._cond:
            return list(self._calls)

    def messages(
        self,
        channel: str | None = None,
        *,
        thread_ts: str | None = None,
        bot_only: bool = True,
    ) -> list[Message]:
        """Copies of the messages posted, oldest first: the bot's only unless `bot_only` is
        False; in `channel` (all channels when None); with `thread_ts`: that thread's
        replies (not its parent)."""
        with self._cond:
            return self._select(channel, thread_ts, bot_only)

    def wait(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Blocks until `predicate()` (called under the fake's lock, so it may read
        `messages()`) is truthy; AssertionError after `timeout` seconds. Use `wait_async`
        from a coroutine that shares its loop with the code under test."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=timeout):
                raise AssertionError(f"Slack stand-in: condition not met within {timeout:g} s")

    def wait_for_messages(
        self,
        count: int,
        channel: str | None = None,
        *,
        thread_ts: str | None = None,
        timeout: float = 10.0,
    ) -> list[Message]:
        """Blocks until the bot has posted at least `count` messages there; returns them."""
        try:
            self.wait(lambda: len(self._select(channel, thread_ts, True)) >= count, timeout=timeout)
        except AssertionError:
            got = [m.text for m in self.messages(channel, thread_ts=thread_ts)]
            raise AssertionError(
                f"expected {count} message(s) in {channel or 'any channel'}"
                f"{f' thread {thread_ts}' if thread_ts else ''} within {timeout:g} s; got {got}"
            ) from None
        return self.messages(channel, thread_ts=thread_ts)

    async def wait_async(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """`wait` in a worker thread, so the event loop keeps running the code under test."""
        await asyncio.to_thread(self.wait, predicate, timeout)

    async def wait_for_messages_async(
        self,
        count: int,
        channel: str | None = None,
        *,
        thread_ts: str | None = None,
        timeout: float = 10.0,
    ) -> list[Message]:
        return await asyncio.to_thread(
            lambda: self.wait_for_messages(count, channel, thread_ts=thread_ts, timeout=timeout)
        )

    # -- internals -----------------------------------------------------------------

    def _select(self, channel: str | None, thread_ts: str | None, bot_only: bool) -> list[Message]:
        channels = [channel] if channel is not None else list(self._history)
        out = [
            copy.deepcopy(m)
            for c in channels
            for m in self._history.get(c, [])
            if (not bot_only or m.bot_id) and (thread_ts is None or m.thread_ts == thread_ts)
        ]
        return sorted(out, key=lambda m: float(m.ts))

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def _resolve_channel(self, channel: object) -> str | None:
        if not isinstance(channel, str) or not channel:
            return None
        if channel in self._channels:
            return channel
        name = channel.removeprefix("#")
        for channel_id, channel_name in self._channels.items():
            if channel_name == name:
                return channel_id
        return None

    def _call(self, method: str, args: JSON, token: str | None) -> tuple[int, JSON, int | None]:
        """Answers one call: (HTTP status, body, Retry-After or None). Holds the lock."""
        if token is None:
            return 200, _error("not_authed"), None
        if token not in self.tokens:
            return 200, _error("invalid_auth"), None
        scripted = self._scripted.get(method)
        if scripted:
            step = scripted.pop(0)
            return step.status, _error(step.error), step.retry_after
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.replies": self._replies,
        }.get(method)
        if handler is None:
            return 200, _error("unknown_method"), None
        return 200, handler(args), None

    def _auth_test(self, args: JSON) -> JSON:
        return {
            "ok": True,
            "url": f"https://{self.team}.slack.com/",
            "team": self.team,
            "user": "skit-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _post_message(self, args: JSON) -> JSON:
        channel = self._resolve_channel(args.get("channel"))
        if channel is None:
            return _error("channel_not_found")
        text, blocks, attachments = args.get("text"), args.get("blocks"), args.get("attachments")
        if not text and not blocks and not attachments:
            return _error("no_text")
        if blocks is not None and not isinstance(blocks, list):
            return _error("invalid_blocks")
        if text and len(str(text)) > MAX_TEXT_CHARS:
            return _error("msg_too_long")
        thread_ts = args.get("thread_ts") or None
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            text=str(text or ""),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            blocks=blocks,
            attachments=attachments if isinstance(attachments, list) else None,
            thread_ts=str(thread_ts) if thread_ts else None,
        )
        self._history[channel].append(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": message.to_api()}

    def _update(self, args: JSON) -> JSON:
        channel = self._resolve_channel(args.get("channel"))
        if channel is None:
            return _error("channel_not_found")
        target = next((m for m in self._history[channel] if m.ts == args.get("ts")), None)
        if target is None:
            return _error("message_not_found")
        if target.bot_id != self.bot_id:
            return _error("cant_update_message")
        text, blocks = args.get("text"), args.get("blocks")
        if not text and not blocks:
            return _error("no_text")
        target.edits.append(target.text)
        target.text = str(text or "")
        if blocks is not None:
            target.blocks = blocks
        return {
            "ok": True,
            "channel": channel,
            "ts": target.ts,
            "text": target.text,
            "message": target.to_api(),
        }

    def _replies(self, args: JSON) -> JSON:
        channel = self._resolve_channel(args.get("channel"))
        if channel is None:
            return _error("channel_not_found")
        ts = args.get("ts")
        history = self._history[channel]
        parent = next((m for m in history if m.ts == ts), None)
        if parent is None:
            return _error("thread_not_found")
        replies = [m for m in history if m.thread_ts == ts and m.ts != ts]
        return {
            "ok": True,
            "messages": [parent.to_api(), *(m.to_api() for m in replies)],
            "has_more": False,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve(b"")

            def do_POST(self) -> None:
                self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _serve(self, raw: bytes) -> None:
                url = urllib.parse.urlsplit(self.path)
                method = url.path.removeprefix("/api/")
                args: JSON = dict(urllib.parse.parse_qsl(url.query))
                token = _bearer(self.headers.get("Authorization"))
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                status, body, retry_after = 200, _error("invalid_form_data"), None
                parsed = True
                if content_type == "application/json" and raw:
                    try:
                        loaded = json.loads(raw)
                        args.update(loaded if isinstance(loaded, dict) else {})
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        parsed = False
                        body = _error("invalid_json")
                elif raw:
                    form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
                    # Only form bodies may carry the token as an argument.
                    token = token or form.pop("token", None) or None
                    args.update(form)
                    for name in ("blocks", "attachments"):
                        if isinstance(args.get(name), str):
                            try:
                                args[name] = json.loads(args[name])
                            except json.JSONDecodeError:
                                args[name] = "invalid"
                if "token" in args and token is None and content_type != "application/json":
                    token = str(args.pop("token"))
                with fake._cond:
                    if parsed:
                        status, body, retry_after = fake._call(method, args, token)
                    fake._calls.append(ApiCall(method, args, token, status, body))
                    fake._cond.notify_all()
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(payload)))
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _error(code: str) -> JSON:
    return {"ok": False, "error": code}


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip() or None
    return None


# -- the Events API side -------------------------------------------------------------------


def sign(signing_secret: str, timestamp: int | str, body: bytes) -> str:
    """Slack's request signature: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """What the bot's request URL answered to one event request."""

    status: int
    body: bytes
    event_id: str | None
    ts: str | None
    """The ts of the user's message the event is about (None for url_verification)."""

    def json(self) -> Any:
        return json.loads(self.body)


class SlackEventSender:
    """Sends signed Events API requests to `url` as Slack does.

    With `slack` given, the user's message is first recorded in that `FakeSlack` (so its
    ts is a real message ts and `conversations.replies` sees it). Every send has an async
    twin (`*_async`) that runs the blocking request in a worker thread.
    """

    def __init__(
        self,
        url: str,
        signing_secret: str,
        *,
        slack: FakeSlack | None = None,
        team_id: str = DEFAULT_TEAM_ID,
        api_app_id: str = "A0000APP01",
        bot_user_id: str | None = None,
    ) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self.slack = slack
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id or (slack.bot_user_id if slack else DEFAULT_BOT_USER_ID)
        self._ids = itertools.count(1)

    def post(
        self,
        payload: JSON | bytes,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """POSTs one signed request; `timestamp`/`signature` override the real ones (to
        test rejection). Returns (HTTP status, body)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature or sign(self.signing_secret, ts, body),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def url_verification(self, challenge: str = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gm") -> Delivery:
        status, body = self.post(
            {"token": "deprecated", "challenge": challenge, "type": "url_verification"}
        )
        return Delivery(status, body, None, None)

    def envelope(self, event: JSON, *, event_id: str | None = None) -> JSON:
        """The event_callback envelope around `event`."""
        return {
            "token": "deprecated-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{int(time.time())}{next(self._ids):06d}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True}
            ],
        }

    def app_mention(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        event_id: str | None = None,
        ts: str | None = None,
        retry_num: int | None = None,
        mention: bool = True,
    ) -> Delivery:
        """`@bot text` in a channel (the `<@BOT>` prefix is added unless `mention` False).
        `ts`+`event_id` of an earlier Delivery with `retry_num` re-send it as Slack's retry."""
        full_text = f"<@{self.bot_user_id}> {text}" if mention else text
        ts = ts or self._record(channel, user, full_text, thread_ts)
        event: JSON = {
            "type": "app_mention",
            "user": user,
            "text": full_text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        return self._send(event, event_id, retry_num)

    def direct_message(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        event_id: str | None = None,
        ts: str | None = None,
        retry_num: int | None = None,
        bot_id: str | None = None,
    ) -> Delivery:
        """A `message` event in the bot's DM channel `channel` (D…); `bot_id` marks it as
        posted by a bot (as the bot's own replies are delivered back to it)."""
        ts = ts or self._record(channel, user, text, thread_ts)
        event: JSON = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "im",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if bot_id:
            event["bot_id"] = bot_id
        return self._send(event, event_id, retry_num)

    async def post_async(self, payload: JSON | bytes, **kwargs: Any) -> tuple[int, bytes]:
        return await asyncio.to_thread(lambda: self.post(payload, **kwargs))

    async def url_verification_async(
        self, challenge: str = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gm"
    ) -> Delivery:
        return await asyncio.to_thread(self.url_verification, challenge)

    async def app_mention_async(
        self, user: str, channel: str, text: str, **kwargs: Any
    ) -> Delivery:
        return await asyncio.to_thread(lambda: self.app_mention(user, channel, text, **kwargs))

    async def direct_message_async(
        self, user: str, channel: str, text: str, **kwargs: Any
    ) -> Delivery:
        return await asyncio.to_thread(lambda: self.direct_message(user, channel, text, **kwargs))

    def _record(self, channel: str, user: str, text: str, thread_ts: str | None) -> str:
        if self.slack is not None:
            return self.slack.add_user_message(channel, user, text, thread_ts=thread_ts)
        return f"{int(time.time())}.{next(self._ids):06d}"

    def _send(self, event: JSON, event_id: str | None, retry_num: int | None) -> Delivery:
        envelope = self.envelope(event, event_id=event_id)
        status, body = self.post(envelope, retry_num=retry_num)
        return Delivery(status, body, envelope["event_id"], event["ts"])
