"""Typed views of the generated PipelineServiceStub.

grpcio-tools writes the stub without types (its .pyi covers the messages only), so each
client holds the stub as one of these protocols: the methods it calls, with their message
types as grpc-stubs spells them.
"""

from __future__ import annotations

from typing import Protocol, cast

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from skit.pipelines.v1 import (
    pipeline_pb2,
    pipeline_service_pb2,
    pipeline_service_pb2_grpc,
    run_pb2,
    schedule_pb2,
    subscription_pb2,
)


class SyncStub(Protocol):
    """PipelineServiceStub over a grpc.Channel."""

    ListPipelines: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListPipelinesRequest, pipeline_service_pb2.ListPipelinesResponse
    ]
    GetPipeline: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.GetPipelineRequest, pipeline_pb2.Pipeline
    ]
    CreateRun: grpc.UnaryUnaryMultiCallable[pipeline_service_pb2.CreateRunRequest, run_pb2.Run]
    GetRun: grpc.UnaryUnaryMultiCallable[pipeline_service_pb2.GetRunRequest, run_pb2.Run]
    ListRuns: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListRunsRequest, pipeline_service_pb2.ListRunsResponse
    ]
    CancelRun: grpc.UnaryUnaryMultiCallable[pipeline_service_pb2.CancelRunRequest, run_pb2.Run]
    RetryRun: grpc.UnaryUnaryMultiCallable[pipeline_service_pb2.RetryRunRequest, run_pb2.Run]
    DeleteRun: grpc.UnaryUnaryMultiCallable[pipeline_service_pb2.DeleteRunRequest, empty_pb2.Empty]
    CreateSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.CreateScheduleRequest, schedule_pb2.Schedule
    ]
    UpdateSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.UpdateScheduleRequest, schedule_pb2.Schedule
    ]
    GetSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.GetScheduleRequest, schedule_pb2.Schedule
    ]
    ListSchedules: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListSchedulesRequest, pipeline_service_pb2.ListSchedulesResponse
    ]
    PauseSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.PauseScheduleRequest, schedule_pb2.Schedule
    ]
    ResumeSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ResumeScheduleRequest, schedule_pb2.Schedule
    ]
    DeleteSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.DeleteScheduleRequest, empty_pb2.Empty
    ]
    BackfillSchedule: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.BackfillScheduleRequest, pipeline_service_pb2.BackfillScheduleResponse
    ]
    CreateSubscription: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.CreateSubscriptionRequest, subscription_pb2.Subscription
    ]
    GetSubscription: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.GetSubscriptionRequest, subscription_pb2.Subscription
    ]
    ListSubscriptions: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListSubscriptionsRequest,
        pipeline_service_pb2.ListSubscriptionsResponse,
    ]
    DeleteSubscription: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.DeleteSubscriptionRequest, empty_pb2.Empty
    ]
    ListDeliveries: grpc.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListDeliveriesRequest, pipeline_service_pb2.ListDeliveriesResponse
    ]
    WatchRun: grpc.UnaryStreamMultiCallable[
        pipeline_service_pb2.WatchRunRequest, pipeline_service_pb2.WatchRunResponse
    ]
    WatchRuns: grpc.UnaryStreamMultiCallable[
        pipeline_service_pb2.WatchRunsRequest, pipeline_service_pb2.WatchRunsResponse
    ]
    ReadStepLogs: grpc.UnaryStreamMultiCallable[
        pipeline_service_pb2.ReadStepLogsRequest, pipeline_service_pb2.ReadStepLogsResponse
    ]


class AsyncStub(Protocol):
    """PipelineServiceStub over a grpc.aio.Channel."""

    ListPipelines: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListPipelinesRequest, pipeline_service_pb2.ListPipelinesResponse
    ]
    GetPipeline: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.GetPipelineRequest, pipeline_pb2.Pipeline
    ]
    CreateRun: grpc.aio.UnaryUnaryMultiCallable[pipeline_service_pb2.CreateRunRequest, run_pb2.Run]
    GetRun: grpc.aio.UnaryUnaryMultiCallable[pipeline_service_pb2.GetRunRequest, run_pb2.Run]
    ListRuns: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListRunsRequest, pipeline_service_pb2.ListRunsResponse
    ]
    CancelRun: grpc.aio.UnaryUnaryMultiCallable[pipeline_service_pb2.CancelRunRequest, run_pb2.Run]
    RetryRun: grpc.aio.UnaryUnaryMultiCallable[pipeline_service_pb2.RetryRunRequest, run_pb2.Run]
    DeleteRun: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.DeleteRunRequest, empty_pb2.Empty
    ]
    CreateSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.CreateScheduleRequest, schedule_pb2.Schedule
    ]
    UpdateSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.UpdateScheduleRequest, schedule_pb2.Schedule
    ]
    GetSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.GetScheduleRequest, schedule_pb2.Schedule
    ]
    ListSchedules: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListSchedulesRequest, pipeline_service_pb2.ListSchedulesResponse
    ]
    PauseSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.PauseScheduleRequest, schedule_pb2.Schedule
    ]
    ResumeSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ResumeScheduleRequest, schedule_pb2.Schedule
    ]
    DeleteSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.DeleteScheduleRequest, empty_pb2.Empty
    ]
    BackfillSchedule: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.BackfillScheduleRequest, pipeline_service_pb2.BackfillScheduleResponse
    ]
    CreateSubscription: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.CreateSubscriptionRequest, subscription_pb2.Subscription
    ]
    GetSubscription: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.GetSubscriptionRequest, subscription_pb2.Subscription
    ]
    ListSubscriptions: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListSubscriptionsRequest,
        pipeline_service_pb2.ListSubscriptionsResponse,
    ]
    DeleteSubscription: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.DeleteSubscriptionRequest, empty_pb2.Empty
    ]
    ListDeliveries: grpc.aio.UnaryUnaryMultiCallable[
        pipeline_service_pb2.ListDeliveriesRequest, pipeline_service_pb2.ListDeliveriesResponse
    ]
    WatchRun: grpc.aio.UnaryStreamMultiCallable[
        pipeline_service_pb2.WatchRunRequest, pipeline_service_pb2.WatchRunResponse
    ]
    WatchRuns: grpc.aio.UnaryStreamMultiCallable[
        pipeline_service_pb2.WatchRunsRequest, pipeline_service_pb2.WatchRunsResponse
    ]
    ReadStepLogs: grpc.aio.UnaryStreamMultiCallable[
        pipeline_service_pb2.ReadStepLogsRequest, pipeline_service_pb2.ReadStepLogsResponse
    ]


def sync_stub(channel: grpc.Channel) -> SyncStub:
    """The generated stub on a synchronous channel."""
    stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
    return cast(SyncStub, stub)


def async_stub(channel: grpc.aio.Channel) -> AsyncStub:
    """The generated stub on an asyncio channel (it makes grpc.aio multi-callables there)."""
    stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped
    return cast(AsyncStub, stub)
