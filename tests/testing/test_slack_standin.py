"""The Slack Web API stand-in, driven by slack_sdk's own clients (as the code under test
drives it), and the signed Events API sender, checked with slack_sdk's verifier."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web import WebClient
from slack_sdk.web.async_client import AsyncWebClient

from skit_testing.slack import FakeSlack, SlackEventSender, sign

TOKEN = "xoxb-test-token"
CHANNEL = "C0000000001"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN, channels={CHANNEL: "general", "D0000000001": "dm"}) as fake:
        yield fake


def _client(slack: FakeSlack, token: str = TOKEN, **kwargs: Any) -> WebClient:
    return WebClient(token=token, base_url=slack.base_url, **kwargs)


def _error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> tuple[int, Any]:
    response = excinfo.value.response
    return response.status_code, response["error"]


def test_post_message_answers_like_slack_and_is_recorded(slack: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    response = _client(slack).chat_postMessage(channel=CHANNEL, text="hi", blocks=blocks)
    assert response["ok"] is True
    assert response["channel"] == CHANNEL
    assert response["message"]["text"] == "hi"
    assert response["message"]["blocks"] == blocks
    assert response["message"]["bot_id"] == slack.bot_id
    [message] = slack.messages(CHANNEL)
    assert (message.ts, message.text, message.blocks) == (response["ts"], "hi", blocks)


def test_channel_by_name_and_thread_replies(slack: FakeSlack) -> None:
    client = _client(slack)
    parent = client.chat_postMessage(channel="#general", text="parent")
    assert parent["channel"] == CHANNEL
    reply = client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=parent["ts"])
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert float(reply["ts"]) > float(parent["ts"])
    assert [m.text for m in slack.messages(CHANNEL, thread_ts=parent["ts"])] == ["reply"]
    thread = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])
    assert [m["text"] for m in thread["messages"]] == ["parent", "reply"]
    with pytest.raises(SlackApiError) as excinfo:
        client.conversations_replies(channel=CHANNEL, ts="1.000000")
    assert _error(excinfo) == (200, "thread_not_found")


def test_form_bodies_and_token_argument(slack: FakeSlack) -> None:
    # api_call with params sends application/x-www-form-urlencoded; blocks as a JSON string.
    client = WebClient(base_url=slack.base_url)
    response = client.api_call(
        "chat.postMessage",
        params={
            "token": TOKEN,
            "channel": CHANNEL,
            "blocks": json.dumps([{"type": "divider"}]),
        },
    )
    assert response["ok"] is True
    assert slack.messages(CHANNEL)[0].blocks == [{"type": "divider"}]
    assert slack.calls[-1].token == TOKEN


def test_auth_errors(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        WebClient(base_url=slack.base_url).chat_postMessage(channel=CHANNEL, text="x")
    assert _error(excinfo) == (200, "not_authed")
    with pytest.raises(SlackApiError) as excinfo:
        _client(slack, token="xoxb-wrong").chat_postMessage(channel=CHANNEL, text="x")
    assert _error(excinfo) == (200, "invalid_auth")
    assert slack.messages() == []


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_method_errors(slack: FakeSlack) -> None:
    client = _client(slack)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C9999999999", "text": "x"}, "channel_not_found"),
        ({"channel": CHANNEL}, "no_text"),
        ({"channel": CHANNEL, "text": "x" * 40_001}, "msg_too_long"),
    ]
    for kwargs, code in cases:
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(**kwargs)
        assert _error(excinfo) == (200, code)
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("chat.nonsense", json={})
    assert _error(excinfo) == (200, "unknown_method")
    assert slack.messages() == []


def test_update_changes_the_message_and_keeps_its_edits(slack: FakeSlack) -> None:
    client = _client(slack)
    posted = client.chat_postMessage(channel=CHANNEL, text="v1")
    updated = client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v2")
    assert (updated["ts"], updated["text"]) == (posted["ts"], "v2")
    [message] = slack.messages(CHANNEL)
    assert (message.text, message.edits) == ("v2", ["v1"])
    user_ts = slack.add_user_message(CHANNEL, "U1", "mine")
    for ts, code in [("1.000000", "message_not_found"), (user_ts, "cant_update_message")]:
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_update(channel=CHANNEL, ts=ts, text="x")
        assert _error(excinfo) == (200, code)


def test_auth_test(slack: FakeSlack) -> None:
    response = _client(slack).auth_test()
    assert (response["user_id"], response["bot_id"], response["team_id"]) == (
        slack.bot_user_id,
        slack.bot_id,
        slack.team_id,
    )


def test_scripted_failure_then_success(slack: FakeSlack) -> None:
    client = _client(slack)
    slack.fail("chat.postMessage", "internal_error", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(channel=CHANNEL, text="x")
        assert _error(excinfo) == (200, "internal_error")
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"]
    assert len(slack.messages(CHANNEL)) == 1


def test_rate_limit_is_a_429_with_retry_after(slack: FakeSlack) -> None:
    slack.rate_limit("chat.postMessage", retry_after=7)
    with pytest.raises(SlackApiError) as excinfo:
        _client(slack).chat_postMessage(channel=CHANNEL, text="x")
    response = excinfo.value.response
    assert (response.status_code, response["error"]) == (429, "ratelimited")
    assert response.headers["Retry-After"] == "7"
    # slack_sdk's own rate-limit retry handler honours it and then succeeds.
    slack.rate_limit("chat.postMessage", retry_after=0)
    retrying = _client(slack, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    assert retrying.chat_postMessage(channel=CHANNEL, text="y")["ok"]
    assert [m.text for m in slack.messages(CHANNEL)] == ["y"]
    assert [c.status for c in slack.calls] == [429, 429, 200]


def test_wait_for_messages_wakes_on_post(slack: FakeSlack) -> None:
    client = _client(slack)
    thread = threading.Thread(
        target=lambda: [client.chat_postMessage(channel=CHANNEL, text=str(i)) for i in range(3)]
    )
    thread.start()
    messages = slack.wait_for_messages(3, CHANNEL, timeout=10)
    thread.join()
    assert [m.text for m in messages] == ["0", "1", "2"]
    with pytest.raises(AssertionError, match="expected 4 message"):
        slack.wait_for_messages(4, CHANNEL, timeout=0.05)


async def test_async_client_and_async_wait(slack: FakeSlack) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    response = await client.chat_postMessage(channel=CHANNEL, text="async")
    await client.chat_update(channel=CHANNEL, ts=response["ts"], text="async 2")
    await slack.wait_async(lambda: slack.messages(CHANNEL)[0].text == "async 2")
    assert (await slack.wait_for_messages_async(1, CHANNEL))[0].edits == ["async"]


class _Receiver:
    """Records signed requests and checks them with slack_sdk's SignatureVerifier."""

    def __init__(self, secret: str) -> None:
        self.verifier = SignatureVerifier(secret)
        self.requests: list[tuple[dict[str, str], bytes, bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                valid = receiver.verifier.is_valid_request(body, headers)
                receiver.requests.append((headers, body, valid))
                self.send_response(200 if valid else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/slack/events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_event_sender_signs_like_slack(slack: FakeSlack) -> None:
    receiver = _Receiver("s3cret")
    try:
        sender = SlackEventSender(receiver.url, "s3cret", slack=slack)
        mention = sender.app_mention("U1", CHANNEL, "run x")
        assert mention.status == 200
        headers, body, valid = receiver.requests[-1]
        assert valid
        envelope = json.loads(body)
        assert envelope["type"] == "event_callback"
        assert envelope["event_id"] == mention.event_id
        event = envelope["event"]
        assert (event["type"], event["user"], event["channel"]) == ("app_mention", "U1", CHANNEL)
        assert event["text"] == f"<@{slack.bot_user_id}> run x"
        # The user's message is in the stand-in, so it can be a thread parent.
        assert [m.ts for m in slack.messages(CHANNEL, bot_only=False)] == [mention.ts]

        dm = sender.direct_message("U1", "D0000000001", "help", retry_num=1)
        headers, body, valid = receiver.requests[-1]
        assert valid and headers["X-Slack-Retry-Num"] == "1"
        assert json.loads(body)["event"]["channel_type"] == "im"
        assert dm.status == 200

        assert sender.url_verification("abc").status == 200
        assert json.loads(receiver.requests[-1][1])["challenge"] == "abc"

        old = int(time.time()) - 600
        assert sender.post({"type": "x"}, timestamp=old)[0] == 401
        assert sender.post({"type": "x"}, signature="v0=" + "0" * 64)[0] == 401
    finally:
        receiver.close()


def test_sign_matches_slack_sdk() -> None:
    body = b'{"a": 1}'
    assert sign("k", 123, body) == SignatureVerifier("k").generate_signature(
        timestamp="123", body=body
    )


def test_stop_closes_the_port() -> None:
    fake = FakeSlack().start()
    url = fake.base_url + "auth.test"
    fake.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, data=b"", timeout=2)
