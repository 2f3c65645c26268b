"""Domain values shared by the controller, the store, the backends and the executor.

Nothing here knows about protobuf; the servicer converts at the edge.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunState(enum.IntEnum):
    """Mirrors skit.pipelines.v1.RunState (same numbers)."""

    UNSPECIFIED = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLING = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(enum.IntEnum):
    """Mirrors skit.pipelines.v1.StepState (same numbers)."""

    UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    SKIPPED = 5
    CACHED = 6
    CANCELLED = 7

    @property
    def terminal(self) -> bool:
        return self not in (StepState.UNSPECIFIED, StepState.PENDING, StepState.RUNNING)


@dataclass(frozen=True)
class Artifact:
    """A stored file or directory."""

    name: str
    """The output's name in its component, or in the pipeline for run outputs."""
    uri: str
    """file:///abs/path or s3://bucket/key."""
    step: str = ""
    """The step that produced it (set on run outputs)."""
    sha256: str = ""
    size_bytes: int = 0


class Code(enum.IntEnum):
    """Mirrors google.rpc.Code (same numbers): the `code` of an ErrorInfo."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class ErrorInfo:
    """Why a run or step failed: a google.rpc.Status without the protobuf."""

    code: int
    """A google.rpc.Code number: a `Code` (a remote backend may report others)."""
    message: str
    reason: str = ""
    """A stable UPPER_SNAKE reason, e.g. STEP_FAILED."""


@dataclass(frozen=True)
class Step:
    """One task execution of a run, as reported by the executor or a backend."""

    name: str
    """The task path, unique in the run: "fetch-calls", "for-loop-1[2]/square"."""
    component: str = ""
    image: str = ""
    state: StepState = StepState.PENDING
    attempt: int = 1
    cached: bool = False
    start_time: datetime | None = None
    end_time: datetime | None = None
    output_artifacts: tuple[Artifact, ...] = ()
    output_parameters: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class Run:
    """A run as stored: the whole state at one revision."""

    id: str
    pipeline: str
    """The pipeline id (without "pipelines/")."""
    pipeline_version: str
    parameters: Mapping[str, Any]
    labels: Mapping[str, str]
    state: RunState
    create_time: datetime
    update_time: datetime
    revision: int
    start_time: datetime | None = None
    end_time: datetime | None = None
    steps: tuple[Step, ...] = ()
    outputs: tuple[Artifact, ...] = ()
    output_parameters: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    request_id: str = ""
    retry_of: str = ""
    creator: str = ""
    backend: str = ""
    backend_run_id: str = ""
    backend_run_url: str = ""

    @property
    def name(self) -> str:
        return f"runs/{self.id}"


class ParameterType(enum.IntEnum):
    """Mirrors skit.pipelines.v1.ParameterType (same numbers)."""

    UNSPECIFIED = 0
    STRING = 1
    INTEGER = 2
    DOUBLE = 3
    BOOLEAN = 4
    LIST = 5
    STRUCT = 6


@dataclass(frozen=True)
class PipelineParameter:
    name: str
    type: ParameterType
    required: bool
    default: Any = None
    description: str = ""


@dataclass(frozen=True)
class Pipeline:
    """A runnable pipeline: compiled IR plus what is derived from it."""

    id: str
    display_name: str
    description: str
    version: str
    """"sha256:<hex>" of the canonical JSON of the IR."""
    parameters: tuple[PipelineParameter, ...]
    spec: Mapping[str, Any]
    """The compiled KFP PipelineSpec as a JSON-like dict."""

    @property
    def name(self) -> str:
        return f"pipelines/{self.id}"


class Role(enum.IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1
    RUNNER = 2
    ADMIN = 3


@dataclass(frozen=True)
class Principal:
    """Who calls: a name from the tokens file (or a client certificate) and a role."""

    name: str
    role: Role

    def may_act_on(self, creator: str) -> bool:
        """Whether this principal may cancel or retry a run `creator` created."""
        return self.role is Role.ADMIN or creator == self.name


ANONYMOUS_ADMIN = Principal(name="", role=Role.ADMIN)
"""Who calls when authentication is off (the embedded default on loopback)."""


@dataclass(frozen=True)
class LogLine:
    """One line a step wrote."""

    time: datetime
    stream: str
    """"stdout" or "stderr"."""
    text: str
    attempt: int
