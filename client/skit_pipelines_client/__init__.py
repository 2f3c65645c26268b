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

__all__ = [
    "AsyncPipelinesClient",
    "FieldViolation",
    "PipelinesClient",
    "RPCError",
    "ResumePolicy",
    "TlsOptions",
    "pipeline_name",
    "run_name",
]
