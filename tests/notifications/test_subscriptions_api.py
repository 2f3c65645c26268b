"""The Subscription RPCs over gRPC: bad input as INVALID_ARGUMENT with field violations,
idempotency, paging, deletion, roles, and secrets that never leave the server."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import subscription_pb2
from skit_pipelines.auth import _METHOD_ROLES
from skit_pipelines.domain import Principal, Role
from skit_pipelines.errors import InvalidArgument, PermissionDenied
from skit_pipelines.notifications.controller import SinkSpec, SubscriptionSpec
from skit_pipelines.notifications.secrets import Secrets, env_key

from .conftest import SECRETS, NotifyService, slack_request, webhook_request


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    return {}


async def _refused(service: NotifyService, request: pb.CreateSubscriptionRequest) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CreateSubscription(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return _violations(caught.value)


async def test_bad_subscriptions_are_invalid_argument_naming_their_fields(
    notify_service: NotifyService,
) -> None:
    no_sink = webhook_request("http://example.com/hook")
    no_sink.subscription.ClearField("sink")
    assert "subscription.sink" in await _refused(notify_service, no_sink)

    for url in ("ftp://example.com/hook", "file:///etc/passwd", "example.com/hook", "http://"):
        violations = await _refused(notify_service, webhook_request(url))
        assert "subscription.sink.webhook.url" in violations, url

    unknown = await _refused(notify_service, webhook_request("https://x.test/", secret="nope"))
    assert "nope" in unknown["subscription.sink.webhook.signing_secret"]

    empty_channel = await _refused(notify_service, slack_request("  "))
    assert "subscription.sink.slack.channel" in empty_channel

    no_states = await _refused(notify_service, webhook_request("https://x.test/", states=()))
    assert "subscription.notify_states" in no_states

    bad_state = await _refused(notify_service, webhook_request("https://x.test/", states=(42,)))
    assert "subscription.notify_states[0]" in bad_state

    bad_filter = webhook_request("https://x.test/", labels={"Bad Key!": "x"})
    bad_filter.subscription.filter.pipeline = "typed"
    bad_filter.subscription.filter.states.append(99)
    violations = await _refused(notify_service, bad_filter)
    assert {
        "subscription.filter.pipeline",
        "subscription.filter.states[0]",
    } <= set(violations)
    assert any(f.startswith("subscription.filter.labels") for f in violations)

    # Several problems at once are reported together.
    many = slack_request("", secret="missing")
    many.subscription.ClearField("notify_states")
    assert {
        "subscription.sink.slack.channel",
        "subscription.sink.slack.token_secret",
        "subscription.notify_states",
    } <= set(await _refused(notify_service, many))

    bad_id = webhook_request("https://x.test/", subscription_id="Not_An_Id")
    assert "subscription_id" in await _refused(notify_service, bad_id)


async def test_create_get_list_delete_and_idempotency(notify_service: NotifyService) -> None:
    stub = notify_service.stub
    first = await stub.CreateSubscription(
        webhook_request("https://hooks.test/a", subscription_id="alpha", request_id="req-1")
    )
    assert first.name == "subscriptions/alpha"
    assert first.sink.webhook.signing_secret == "hook-key"
    assert first.create_time.seconds > 0
    again = await stub.CreateSubscription(
        webhook_request("https://hooks.test/a", subscription_id="alpha", request_id="req-1")
    )
    assert again.name == first.name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSubscription(
            webhook_request("https://hooks.test/other", subscription_id="alpha", request_id="req-1")
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSubscription(
            webhook_request("https://hooks.test/b", subscription_id="alpha")
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

    names = {first.name}
    for _ in range(4):
        created = await stub.CreateSubscription(slack_request("#ml-runs"))
        assert created.name.startswith("subscriptions/sub-")
        names.add(created.name)
    listed: list[str] = []
    token = ""
    while True:
        page = await stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(page_size=2, page_token=token)
        )
        assert len(page.subscriptions) <= 2
        listed.extend(s.name for s in page.subscriptions)
        token = page.next_page_token
        if not token:
            break
    assert listed == sorted(names)

    got = await stub.GetSubscription(pb.GetSubscriptionRequest(name="subscriptions/alpha"))
    assert got.sink.webhook.url == "https://hooks.test/a"
    assert list(got.notify_states) == list(first.notify_states)
    await stub.DeleteSubscription(pb.DeleteSubscriptionRequest(name="subscriptions/alpha"))
    for call in (
        stub.GetSubscription(pb.GetSubscriptionRequest(name="subscriptions/alpha")),
        stub.ListDeliveries(pb.ListDeliveriesRequest(parent="subscriptions/alpha")),
        stub.DeleteSubscription(pb.DeleteSubscriptionRequest(name="subscriptions/alpha")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSubscriptions(pb.ListSubscriptionsRequest(page_token="junk"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_secret_values_never_appear_in_responses_or_logs(
    notify_service: NotifyService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = notify_service.stub
    responses: list[bytes] = []
    hook = await stub.CreateSubscription(webhook_request("https://hooks.test/a"))
    slack = await stub.CreateSubscription(slack_request("#ml-runs", thread_ts="1700000000.0001"))
    responses += [hook.SerializeToString(), slack.SerializeToString()]
    responses.append(
        (await stub.ListSubscriptions(pb.ListSubscriptionsRequest())).SerializeToString()
    )
    for name in (hook.name, slack.name):
        got = await stub.GetSubscription(pb.GetSubscriptionRequest(name=name))
        responses.append(got.SerializeToString())
    assert slack.sink.slack.token_secret == "slack-token"
    assert slack.sink.slack.thread_ts == "1700000000.0001"
    # A refused request names the secret it could not find, never a value.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSubscription(webhook_request("https://hooks.test/a", secret="absent-key"))
    responses.append(caught.value.details().encode())
    for value in SECRETS.values():
        for response in responses:
            assert value.encode() not in response
        assert value not in caplog.text
    assert repr(notify_service.harness.secrets).count("whsec") == 0


def test_secrets_resolve_from_a_directory_then_the_environment(tmp_path: Path) -> None:
    (tmp_path / "hook-key").write_text("from-file\n")
    secrets = Secrets(
        tmp_path, {env_key("hook-key"): "from-env", env_key("slack.bot-token"): "xoxb-env"}
    )
    assert env_key("slack.bot-token") == "SKIT_SECRET_SLACK_BOT_TOKEN"
    assert secrets.get("hook-key") == "from-file"
    assert secrets.get("slack.bot-token") == "xoxb-env"
    assert not secrets.has("../etc/passwd")
    assert not secrets.has("absent")
    with pytest.raises(InvalidArgument) as caught:
        secrets.check_name("absent", field="f")
    assert caught.value.violations[0].field == "f"
    assert "xoxb-env" not in repr(secrets) and "from-file" not in repr(secrets)


def test_viewers_read_and_runners_create_subscriptions() -> None:
    for method in ("GetSubscription", "ListSubscriptions", "ListDeliveries"):
        assert _METHOD_ROLES[method] is Role.VIEWER
    for method in ("CreateSubscription", "DeleteSubscription"):
        assert _METHOD_ROLES[method] is Role.RUNNER


async def test_runners_delete_only_their_own_subscriptions(notify_service: NotifyService) -> None:
    controller = notify_service.harness.subscriptions
    ana, bo = Principal("ana", Role.RUNNER), Principal("bo", Role.RUNNER)
    spec = SubscriptionSpec(
        notify_states=(3,), sink=SinkSpec(kind="slack", channel="C1", token_secret="slack-token")
    )
    subscription = await controller.create_subscription(spec, principal=ana)
    assert subscription.creator == "ana"
    with pytest.raises(PermissionDenied):
        await controller.delete_subscription(subscription.name, principal=bo)
    await controller.delete_subscription(subscription.name, principal=Principal("root", Role.ADMIN))


async def test_a_new_subscription_starts_at_the_latest_change(
    notify_service: NotifyService,
) -> None:
    harness = notify_service.harness
    for _ in range(3):
        await harness.finish(await harness.new_run())
    latest = await harness.store.latest_change_cursor()
    assert latest > 0
    created = await notify_service.stub.CreateSubscription(webhook_request("https://hooks.test/"))
    assert created.cursor == latest
    assert created.health == subscription_pb2.SubscriptionHealth()
