"""Result values: named status codes, and how a task's outcome reads."""

from __future__ import annotations

import grpc

from skit_pipelines.domain import Artifact
from skit_pipelines.executor._outcome import (
    Outcome,
    TaskState,
    rejected_error,
    step_error,
    timeout_error,
)


def test_errors_carry_google_rpc_codes_and_stable_reasons() -> None:
    # A step failure is never UNKNOWN (which reads as a fault of the service): ABORTED
    # when RetryRun may help, FAILED_PRECONDITION when only a change of input may.
    assert (step_error("boom").code, step_error("boom").reason) == (
        grpc.StatusCode.ABORTED.value[0],
        "STEP_FAILED",
    )
    assert (rejected_error("bad date").code, rejected_error("bad date").reason) == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        "STEP_FAILED",
    )
    assert (timeout_error("slow").code, timeout_error("slow").reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        "STEP_TIMEOUT",
    )


def test_a_not_triggered_task_is_ok_and_a_skipped_one_is_not() -> None:
    assert Outcome(TaskState.NOT_TRIGGERED).ok
    assert not Outcome(TaskState.SKIPPED).ok
    assert not Outcome.failed(step_error("x")).ok


def test_a_steps_artifacts_are_keyed_by_their_names() -> None:
    data = Artifact(name="data", uri="file:///d")
    outcome = Outcome.succeeded({"n": 1}, (data,))
    assert outcome.artifacts == {"data": (data,)}
    assert outcome.fresh
