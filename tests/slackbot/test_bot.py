"""The bot end to end: signed Slack events in, runs in the real service, replies in the
Slack stand-in's thread; the run's progress driven through the service's fake backend."""

from __future__ import annotations

import time

from skit_pipelines.domain import Artifact, ErrorInfo, Step, StepState
from skit_slackbot.app import start_bot
from skit_testing.slack import SlackEventSender
from skit_testing.waiting import until

from .conftest import ALICE, CHANNEL, DM, SIGNING_SECRET, STRANGER, VIEWER, Harness


async def _submitted(h: Harness, count: int = 1) -> str:
    """The id of the count-th run the service submitted to its backend."""
    backend = h.service.backend  # type: ignore[attr-defined]
    await until(lambda: len(backend.submitted) >= count, what=f"{count} run(s) submitted")
    return str(backend.submitted[count - 1])


def _texts(h: Harness, thread: str) -> list[str]:
    return [m.text for m in h.slack.messages(CHANNEL, thread_ts=thread)]


async def test_run_posts_created_progress_and_outcome_in_the_thread(h: Harness) -> None:
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed greeting=5 count=4")
    assert sent.status == 200
    run_id = await _submitted(h)
    created, progress = await h.slack.wait_for_messages_async(2, CHANNEL, thread_ts=sent.ts)
    assert f"`{run_id}`" in created.text and "`typed`" in created.text and "`alice`" in created.text
    assert "QUEUED" in progress.text

    stored = await h.service.store.get_run(run_id)  # type: ignore[attr-defined]
    # Typed by the pipeline's schema: greeting is a STRING, count an INTEGER.
    assert dict(stored.parameters)["greeting"] == "5"
    assert dict(stored.parameters)["count"] == 4
    assert stored.creator == "alice"
    assert stored.labels["created-by"] == "slackbot"
    assert stored.request_id.startswith("slack-run-")

    sink = h.service.backend.sinks[run_id]  # type: ignore[attr-defined]
    await sink.run_started(run_id)
    await sink.step_changed(run_id, Step("echo", "echo", state=StepState.RUNNING))
    await h.slack.wait_async(lambda: "`echo` running" in h.slack.messages(CHANNEL)[1].text)
    await sink.step_changed(run_id, Step("echo", "echo", state=StepState.SUCCEEDED))
    await sink.run_succeeded(
        run_id, [Artifact("Output", "file:///tmp/out/Output", step="echo")], {}
    )
    messages = await h.slack.wait_for_messages_async(3, CHANNEL, thread_ts=sent.ts)
    outcome = messages[2].text
    assert f"`{run_id}`" in outcome and "SUCCEEDED" in outcome
    assert "file:///tmp/out/Output" in outcome
    await h.slack.wait_async(lambda: "SUCCEEDED" in h.slack.messages(CHANNEL)[1].text)
    progress = h.slack.messages(CHANNEL)[1]
    assert progress.ts == messages[1].ts and len(progress.edits) >= 2  # updated in place
    assert "`echo` succeeded" in progress.text
    await until(lambda: not h.bot.bot.following, what="the follower to end")
    assert len(h.slack.messages(CHANNEL, thread_ts=sent.ts)) == 3


async def test_run_with_a_json_block(h: Harness) -> None:
    text = 'run typed\n```{"greeting": "hi &amp; bye", "items": [1, 2, 3], "flag": true}```'
    sent = await h.events.app_mention_async(ALICE, CHANNEL, text)
    run_id = await _submitted(h)
    stored = await h.service.store.get_run(run_id)  # type: ignore[attr-defined]
    assert dict(stored.parameters)["greeting"] == "hi & bye"
    assert list(dict(stored.parameters)["items"]) == [1, 2, 3]
    assert dict(stored.parameters)["flag"] is True
    await h.slack.wait_for_messages_async(2, CHANNEL, thread_ts=sent.ts)


async def test_a_failed_run_reports_its_error_and_can_be_retried(h: Harness) -> None:
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed greeting=hi")
    run_id = await _submitted(h)
    sink = h.service.backend.sinks[run_id]  # type: ignore[attr-defined]
    await sink.run_failed(run_id, ErrorInfo(code=10, message="step echo exited 3", reason="X"))
    outcome = (await h.slack.wait_for_messages_async(3, CHANNEL, thread_ts=sent.ts))[2].text
    assert "FAILED" in outcome and "step echo exited 3" in outcome
    assert f"retry {run_id}" in outcome

    retry = await h.events.app_mention_async(ALICE, CHANNEL, f"retry {run_id}", thread_ts=sent.ts)
    new_id = await _submitted(h, 2)
    stored = await h.service.store.get_run(new_id)  # type: ignore[attr-defined]
    assert stored.retry_of == f"runs/{run_id}"
    messages = await h.slack.wait_for_messages_async(5, CHANNEL, thread_ts=sent.ts)
    assert f"Retrying `{run_id}` as run `{new_id}`" in messages[3].text
    assert retry.ts is not None


async def test_status_and_cancel(h: Harness) -> None:
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed greeting=hi")
    run_id = await _submitted(h)
    await h.service.backend.sinks[run_id].run_started(run_id)  # type: ignore[attr-defined]

    asked = await h.events.app_mention_async(ALICE, CHANNEL, f"status {run_id}")
    [status] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=asked.ts)
    assert f"`{run_id}` is *RUNNING*" in status.text and "created by `alice`" in status.text
    assert "greeting=`hi`" in status.text

    cancel = await h.events.app_mention_async(ALICE, CHANNEL, f"cancel runs/{run_id}")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=cancel.ts)
    assert f"Cancelling run `{run_id}`" in reply.text
    assert h.service.backend.cancelled == [run_id]  # type: ignore[attr-defined]
    # The run's own thread gets the outcome.
    messages = await h.slack.wait_for_messages_async(3, CHANNEL, thread_ts=sent.ts)
    assert "CANCELLED" in messages[2].text

    again = await h.events.app_mention_async(ALICE, CHANNEL, f"cancel {run_id}")
    [refusal] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=again.ts)
    assert refusal.text.startswith(":warning: Can't cancel")

    missing = await h.events.app_mention_async(ALICE, CHANNEL, "status nope-123")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=missing.ts)
    assert "not found" in reply.text


async def test_bad_parameters_come_back_as_readable_field_violations(h: Harness) -> None:
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed count=abc colour=red")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert reply.text.startswith(":warning: Can't start `typed`:")
    lines = reply.text.splitlines()[1:]
    assert any(line.startswith("• `count`:") for line in lines), reply.text
    assert any(line.startswith("• `colour`:") for line in lines), reply.text
    assert any(line.startswith("• `greeting`:") for line in lines), reply.text  # missing
    assert h.service.backend.submitted == []  # type: ignore[attr-defined]

    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run nosuch")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert "no pipeline `nosuch`" in reply.text

    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed ```{not json}```")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert "not JSON" in reply.text


async def test_unknown_users_are_refused_politely(h: Harness) -> None:
    sent = await h.events.app_mention_async(STRANGER, CHANNEL, "run typed greeting=hi")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert reply.text.startswith(f"Sorry <@{STRANGER}>, you're not set up")
    assert h.service.backend.submitted == []  # type: ignore[attr-defined]


async def test_a_viewer_may_look_but_not_run(h: Harness) -> None:
    sent = await h.events.app_mention_async(VIEWER, CHANNEL, "run typed greeting=hi")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert "not allowed" in reply.text
    sent = await h.events.app_mention_async(VIEWER, CHANNEL, "pipelines")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert "`typed`" in reply.text and "greeting (string, required)" in reply.text
    assert "count (integer, default `3`)" in reply.text


async def test_help_unknown_words_and_direct_messages(h: Harness) -> None:
    sent = await h.events.direct_message_async(STRANGER, DM, "help")
    [reply] = await h.slack.wait_for_messages_async(1, DM, thread_ts=sent.ts)
    assert "`run <pipeline> key=value ...`" in reply.text
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "dance")
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert reply.text.startswith("I don't know `dance`")
    # A DM run works like a mention; the bot's own messages coming back are ignored.
    sent = await h.events.direct_message_async(ALICE, DM, "run typed greeting=dm")
    await _submitted(h)
    await h.slack.wait_for_messages_async(2, DM, thread_ts=sent.ts)
    echo = await h.events.direct_message_async(
        h.slack.bot_user_id, DM, "Started run", bot_id=h.slack.bot_id
    )
    assert echo.status == 200


async def test_bad_or_stale_signatures_are_refused_and_do_nothing(h: Harness) -> None:
    envelope = h.events.envelope(
        {
            "type": "app_mention",
            "user": ALICE,
            "channel": CHANNEL,
            "text": "run typed greeting=x",
            "ts": "1.000001",
        }
    )
    status, _ = await h.events.post_async(envelope, signature="v0=" + "0" * 64)
    assert status == 401
    status, _ = await h.events.post_async(envelope, timestamp=int(time.time()) - 600)
    assert status == 401
    wrong = SlackEventSender(h.bot.url, "another-secret")
    assert (await wrong.app_mention_async(ALICE, CHANNEL, "run typed greeting=x")).status == 401
    await h.bot.bot.idle()
    assert h.service.backend.submitted == []  # type: ignore[attr-defined]
    assert h.slack.messages() == []


async def test_url_verification_answers_the_challenge(h: Harness) -> None:
    delivery = await h.events.url_verification_async("3eZbrw1aBm2rZgRNFdxV2595E9CY3gm")
    assert delivery.status == 200
    assert delivery.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gm"}


async def test_a_slack_retry_of_the_same_event_makes_one_run(h: Harness) -> None:
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed greeting=once")
    retried = await h.events.app_mention_async(
        ALICE, CHANNEL, "run typed greeting=once", ts=sent.ts, event_id=sent.event_id, retry_num=1
    )
    assert retried.status == 200
    run_id = await _submitted(h)
    await h.slack.wait_for_messages_async(2, CHANNEL, thread_ts=sent.ts)

    # A bot restarted in between has forgotten the event: CreateRun's request_id (the
    # message's id) still makes it the same run.
    restarted = await start_bot(h.config)
    try:
        late = SlackEventSender(restarted.url, SIGNING_SECRET, slack=h.slack)
        again = await late.app_mention_async(
            ALICE,
            CHANNEL,
            "run typed greeting=once",
            ts=sent.ts,
            event_id=sent.event_id,
            retry_num=2,
        )
        assert again.status == 200
        messages = await h.slack.wait_for_messages_async(3, CHANNEL, thread_ts=sent.ts)
        assert f"`{run_id}`" in messages[2].text
    finally:
        await restarted.stop()
    assert h.service.backend.submitted == [run_id]  # type: ignore[attr-defined]


async def test_the_request_url_answers_fast_while_work_is_slow(h: Harness) -> None:
    # Slack wants the HTTP answer within 3 s; the service call happens after it.
    h.slack.rate_limit("chat.postMessage", retry_after=1)
    started = time.monotonic()
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "help")
    assert sent.status == 200 and time.monotonic() - started < 1
    [reply] = await h.slack.wait_for_messages_async(1, CHANNEL, thread_ts=sent.ts)
    assert "I run skit-pipelines" in reply.text
    assert [c.status for c in h.slack.calls if c.method == "chat.postMessage"] == [429, 200]


async def test_a_restarted_bot_follows_its_unfinished_runs_again(h: Harness) -> None:
    sent = await h.events.app_mention_async(ALICE, CHANNEL, "run typed greeting=long")
    run_id = await _submitted(h)
    await h.slack.wait_for_messages_async(2, CHANNEL, thread_ts=sent.ts)
    stored = await h.service.store.get_run(run_id)  # type: ignore[attr-defined]
    assert stored.labels["slack-thread"] == sent.ts
    await h.bot.stop()

    restarted = await start_bot(h.config)
    try:
        # A new progress message in the run's thread, then the outcome there.
        await h.slack.wait_for_messages_async(3, CHANNEL, thread_ts=sent.ts)
        await h.service.backend.sinks[run_id].run_started(run_id)  # type: ignore[attr-defined]
        await h.service.backend.sinks[run_id].run_succeeded(run_id, [], {})  # type: ignore[attr-defined]
        messages = await h.slack.wait_for_messages_async(4, CHANNEL, thread_ts=sent.ts)
        assert "SUCCEEDED" in messages[3].text and f"`{run_id}`" in messages[3].text
        await until(lambda: not restarted.bot.following, what="the follower to end")
    finally:
        await restarted.stop()
