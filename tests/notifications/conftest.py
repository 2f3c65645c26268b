"""Notifications over a real store, RunController (fake backend) and delivery worker, with
fast retry settings, configured secrets, and the gRPC server with the Subscription RPCs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from skit.pipelines.v1 import pipeline_service_pb2 as pb
from skit.pipelines.v1 import pipeline_service_pb2_grpc, run_pb2, subscription_pb2
from skit_pipelines.catalog import Catalog
from skit_pipelines.config import ServerConfig
from skit_pipelines.domain import Artifact, ErrorInfo, Pipeline, Run, RunState
from skit_pipelines.notifications.controller import SubscriptionController
from skit_pipelines.notifications.model import SlackSink, WebhookSink
from skit_pipelines.notifications.secrets import Secrets
from skit_pipelines.notifications.sinks.slack import SlackSender
from skit_pipelines.notifications.sinks.webhook import WebhookSender
from skit_pipelines.notifications.worker import DeliverySettings, DeliveryWorker
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.server import SERVICE_NAME, create_grpc_server
from skit_pipelines.store.base import RunStore
from skit_pipelines.store.sqlite import SqliteRunStore

HOOK_KEY = "whsec_test_5f0e9a1c7d3b2e4f"
SLACK_TOKEN = "xoxb-1234-5678-secretvalue"
SECRETS = {"SKIT_SECRET_HOOK_KEY": HOOK_KEY, "SKIT_SECRET_SLACK_TOKEN": SLACK_TOKEN}
"""Secret values the tests look for in responses and logs (they must never appear)."""

FAST = DeliverySettings(
    retry_base_seconds=0.05, retry_max_seconds=0.2, poll_seconds=0.05, claim_seconds=5.0
)
"""Retries in tens of milliseconds instead of 30 s."""


@dataclass
class Notifying:
    store: RunStore
    backend: Any
    runs: RunController
    subscriptions: SubscriptionController
    worker: DeliveryWorker
    secrets: Secrets = field(repr=False)

    async def new_run(self, labels: Mapping[str, str] | None = None) -> Run:
        return await self.runs.create_run(
            CreateRunInput(
                pipeline="pipelines/typed",
                parameters={"greeting": "hello"},
                labels=dict(labels or {}),
            )
        )

    async def finish(self, run: Run, state: RunState = RunState.SUCCEEDED) -> None:
        sink = self.backend.sinks[run.id]
        await sink.run_started(run.id)
        if state is RunState.SUCCEEDED:
            await sink.run_succeeded(
                run.id, [Artifact(name="out", uri=f"file:///artifacts/{run.id}/out")], {}
            )
        elif state is RunState.FAILED:
            await sink.run_failed(run.id, ErrorInfo(code=13, message="step train failed: OOM"))
        else:
            await sink.run_cancelled(run.id)


def build(
    store: RunStore,
    pipeline: Pipeline,
    backend: Any,
    *,
    settings: DeliverySettings = FAST,
    slack_url: str = "http://127.0.0.1:9/api/",
    secrets: Secrets | None = None,
) -> Notifying:
    runs = RunController(store, Catalog({pipeline.id: pipeline}), backend)
    backend.start(runs)
    secrets = secrets or Secrets(values=SECRETS)
    worker = DeliveryWorker(
        store,
        {
            SlackSink: SlackSender(secrets, base_url=slack_url, timeout=5),
            WebhookSink: WebhookSender(secrets, timeout=5),
        },
        settings=settings,
    )
    subscriptions = SubscriptionController(store, secrets, on_change=worker.wake)
    return Notifying(store, backend, runs, subscriptions, worker, secrets)


@pytest.fixture
async def notifying(
    tmp_path: Path, typed_pipeline: Pipeline, fake_backend_class: type
) -> AsyncIterator[Notifying]:
    store = SqliteRunStore(tmp_path / "runs.db")
    harness = build(store, typed_pipeline, fake_backend_class())
    try:
        yield harness
    finally:
        await harness.worker.stop()
        await store.close()


@dataclass
class NotifyService:
    harness: Notifying
    stub: pipeline_service_pb2_grpc.PipelineServiceStub
    address: str


@pytest.fixture
async def notify_service(notifying: Notifying, tmp_path: Path) -> AsyncIterator[NotifyService]:
    server, port, health = await create_grpc_server(
        notifying.runs,
        ServerConfig(port=0, home=tmp_path),
        subscriptions=lambda: notifying.subscriptions,
    )
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield NotifyService(
            notifying, pipeline_service_pb2_grpc.PipelineServiceStub(channel), address
        )
    finally:
        await channel.close()
        await server.stop(None)


def webhook_request(
    url: str,
    *,
    secret: str = "hook-key",
    states: tuple[int, ...] = (run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED),
    labels: Mapping[str, str] | None = None,
    subscription_id: str = "",
    request_id: str = "",
) -> pb.CreateSubscriptionRequest:
    subscription = subscription_pb2.Subscription(
        notify_states=states,
        filter=subscription_pb2.RunFilter(labels=dict(labels or {})),
        sink=subscription_pb2.Sink(
            webhook=subscription_pb2.WebhookSink(url=url, signing_secret=secret)
        ),
    )
    return pb.CreateSubscriptionRequest(
        subscription=subscription, subscription_id=subscription_id, request_id=request_id
    )


def slack_request(
    channel: str,
    *,
    secret: str = "slack-token",
    thread_ts: str = "",
    states: tuple[int, ...] = (run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED),
) -> pb.CreateSubscriptionRequest:
    return pb.CreateSubscriptionRequest(
        subscription=subscription_pb2.Subscription(
            notify_states=states,
            sink=subscription_pb2.Sink(
                slack=subscription_pb2.SlackSink(
                    channel=channel, thread_ts=thread_ts, token_secret=secret
                )
            ),
        )
    )
