"""A typed client for PipelineService, over the generated stubs (installable alone)."""

from skit_pipelines_client.client import (
    AsyncPipelinesClient,
    FieldViolation,
    PipelinesClient,
    ResumePolicy,
    RPCError,
    TlsOptions,
    pipeline_name,
    run_name,
)
from skit_pipelines_client.resources import (
    Artifact,
    LogLine,
    Metric,
    ParameterRule,
    ParameterType,
    Pipeline,
    PipelineParameter,
    Run,
    RunState,
    Status,
    Step,
    StepState,
    ValueTypes,
)
from skit_pipelines_client.run_changes import ChangeKind, RunChange
from skit_pipelines_client.schedules import Schedule, schedule_name
from skit_pipelines_client.subscriptions import (
    Delivery,
    DeliveryAttempt,
    Subscription,
    subscription_name,
)

__all__ = [
    "Artifact",
    "AsyncPipelinesClient",
    "ChangeKind",
    "Delivery",
    "DeliveryAttempt",
    "FieldViolation",
    "LogLine",
    "Metric",
    "ParameterRule",
    "ParameterType",
    "Pipeline",
    "PipelineParameter",
    "PipelinesClient",
    "RPCError",
    "ResumePolicy",
    "Run",
    "RunChange",
    "RunState",
    "Schedule",
    "Status",
    "Step",
    "StepState",
    "Subscription",
    "TlsOptions",
    "ValueTypes",
    "pipeline_name",
    "run_name",
    "schedule_name",
    "subscription_name",
]
