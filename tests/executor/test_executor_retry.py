"""RetryPolicy from a task's typed retryPolicy, with kfp's defaults for what is unset."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.executor._retry import RetryPolicy


def task(retry_policy: dict[str, Any]) -> Any:
    return json_format.ParseDict(
        {"retryPolicy": retry_policy}, pipeline_spec_pb2.PipelineTaskSpec()
    )


def test_unset_fields_take_kfps_defaults() -> None:
    policy = RetryPolicy.of(task({"maxRetryCount": 2}))
    assert policy == RetryPolicy(
        max_retries=2, backoff_seconds=0.0, factor=2.0, max_duration_seconds=3600.0
    )


def test_fractional_durations_and_an_explicit_zero_max_duration() -> None:
    policy = RetryPolicy.of(
        task({"maxRetryCount": 1, "backoffDuration": "0.25s", "backoffMaxDuration": "0s"})
    )
    assert policy is not None
    assert policy.backoff_seconds == 0.25
    assert policy.delay(1, elapsed=0) is None, "no attempt may start after 0s"


def test_no_retries_is_no_policy() -> None:
    assert RetryPolicy.of(task({})) is None
    assert RetryPolicy.of(pipeline_spec_pb2.PipelineTaskSpec()) is None
