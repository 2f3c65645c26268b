"""How tasks and attempts end: the result values the executor's parts hand each other."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skit_pipelines.domain import (
    STEP_FAILED_CODE,
    STEP_REJECTED_CODE,
    Artifact,
    Code,
    ErrorInfo,
)

STEP_FAILED = "STEP_FAILED"
"""ErrorInfo.reason of a step that failed (its command, its inputs or its outputs)."""
STEP_TIMEOUT = "STEP_TIMEOUT"
"""ErrorInfo.reason of an attempt that outlived its timeout."""
INVALID_PIPELINE = "INVALID_PIPELINE_SPEC"
"""ErrorInfo.reason of a pipeline whose IR does not parse."""

Parameters = Mapping[str, Any]
"""Parameter values by name: JSON values (str, int, float, bool, list, dict, None)."""
Artifacts = Mapping[str, tuple[Artifact, ...]]
"""Artifacts by input or output name; a loop's collected outputs hold several."""


def step_error(message: str) -> ErrorInfo:
    """Why a step failed while or after running: its command exited non-zero (but for the
    bad-input exit code), was killed, or left outputs that cannot be collected. ABORTED
    (domain.STEP_FAILED_CODE): RetryRun may well succeed."""
    return ErrorInfo(code=STEP_FAILED_CODE, message=message, reason=STEP_FAILED)


def rejected_error(message: str) -> ErrorInfo:
    """Why a step failed that cannot succeed as the run stands: it refused its input or
    configuration (exit code 2), or the executor cannot run it as the pipeline defines it
    (an input or placeholder that does not resolve, no image folder, a package not
    installed, an import refused). FAILED_PRECONDITION (domain.STEP_REJECTED_CODE)."""
    return ErrorInfo(code=STEP_REJECTED_CODE, message=message, reason=STEP_FAILED)


def timeout_error(message: str) -> ErrorInfo:
    return ErrorInfo(code=Code.DEADLINE_EXCEEDED, message=message, reason=STEP_TIMEOUT)


class TaskState(enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    NOT_TRIGGERED = "NOT_TRIGGERED"
    """Its condition was false; tasks after it still run (KFP semantics)."""
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    """Not run because something upstream, or elsewhere in the run, failed."""


@dataclass(frozen=True)
class Outcome:
    """How a task (container, DAG or loop) ended, and what it produced."""

    state: TaskState
    parameters: Parameters = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=dict)
    error: ErrorInfo | None = None
    fresh: bool = True
    """Produced in this call rather than all taken from `reuse`: what depends on it
    cannot be reused, since its earlier result came from different inputs."""

    @property
    def ok(self) -> bool:
        return self.state in (TaskState.SUCCEEDED, TaskState.NOT_TRIGGERED)

    @classmethod
    def succeeded(
        cls, parameters: Parameters, artifacts: tuple[Artifact, ...], *, fresh: bool = True
    ) -> Outcome:
        """A container step's success: each output artifact under its own name."""
        return cls(
            TaskState.SUCCEEDED, dict(parameters), {a.name: (a,) for a in artifacts}, fresh=fresh
        )

    @classmethod
    def failed(cls, error: ErrorInfo | None) -> Outcome:
        return cls(TaskState.FAILED, error=error)


@dataclass(frozen=True)
class StepOutputs:
    """What a successful attempt produced: parameter values and stored artifacts."""

    parameters: Parameters
    artifacts: tuple[Artifact, ...]


@dataclass(frozen=True)
class AttemptFailed:
    """Why one attempt of a step failed."""

    error: ErrorInfo


AttemptResult = StepOutputs | AttemptFailed
"""How one attempt of a step ended."""
