"""A task's retry policy, as kfp's `set_retry` compiles it into `PipelineTaskSpec.retryPolicy`."""

from __future__ import annotations

from dataclasses import dataclass

from kfp.pipeline_spec.pipeline_spec_pb2 import PipelineTaskSpec

# kfp's defaults (RetryPolicy.to_proto), for IR written by hand.
_DEFAULT_FACTOR = 2.0
_DEFAULT_MAX_DURATION_SECONDS = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after which delays, a failed attempt is run again."""

    max_retries: int
    backoff_seconds: float
    factor: float
    max_duration_seconds: float

    @classmethod
    def of(cls, task: PipelineTaskSpec) -> RetryPolicy | None:
        """None when the task is not retried."""
        policy = task.retry_policy
        retries = int(policy.max_retry_count)
        if retries <= 0:
            return None
        max_duration = (
            policy.backoff_max_duration.ToTimedelta().total_seconds()
            if policy.HasField("backoff_max_duration")
            else _DEFAULT_MAX_DURATION_SECONDS
        )
        return cls(
            max_retries=retries,
            backoff_seconds=float(policy.backoff_duration.ToTimedelta().total_seconds()),
            factor=float(policy.backoff_factor) or _DEFAULT_FACTOR,
            max_duration_seconds=float(max_duration),
        )

    def delay(self, failed_attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none.

        `elapsed` is the time since the first attempt started: like Argo's
        backoff.maxDuration, no attempt starts later than `max_duration_seconds` after it.
        """
        if failed_attempt > self.max_retries:
            return None
        delay = self.backoff_seconds * self.factor ** (failed_attempt - 1)
        if elapsed + delay > self.max_duration_seconds:
            return None
        return delay
