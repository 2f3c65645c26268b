"""Domain values shared by the controller, the store, the backends and the executor.

Nothing here knows about protobuf; the servicer converts at the edge.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from skit_pipelines.rules import ParameterRule


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
        # A set made once: naming members (RunState.SUCCEEDED) goes through the enum
        # class on every call, about 1 us, and every WatchRun delivery asks.
        return self in _TERMINAL_RUN_STATES


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
        return self not in _LIVE_STEP_STATES


_TERMINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
_LIVE_STEP_STATES = frozenset({StepState.UNSPECIFIED, StepState.PENDING, StepState.RUNNING})


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
    type: str = ""
    """The KFP artifact type (schema title), e.g. "system.Dataset", "system.Metrics"; ""
    when unknown (stored before types were kept)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """What the component or dsl.importer set (`Artifact.metadata` in kfp), as JSON values:
    a Metrics artifact's logged metrics, a ClassificationMetrics' confusion matrix."""


METRICS_TYPE = "system.Metrics"
"""The artifact type whose metadata holds a step's scalar metrics (`log_metric`)."""


@dataclass(frozen=True)
class Metric:
    """One scalar metric a step logged on a Metrics output."""

    name: str
    value: float
    artifact: str
    """The Metrics output holding it."""


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


STEP_FAILED_CODE = Code.ABORTED
"""The code of a step that failed (its command exited non-zero or was killed, or its
outputs could not be collected): google.rpc's guide gives ABORTED to an operation that
stopped and may succeed when retried "at a higher level", which is RetryRun (it reruns
the failed step and reuses the ones that succeeded). Not UNKNOWN, which reads as a fault
of the service, nor INTERNAL, which is one."""
STEP_REJECTED_CODE = Code.FAILED_PRECONDITION
"""The code of a step that refused its input or configuration (the components' exit code
2), or that the executor could not start as the pipeline defines it: retrying cannot help
until the parameters, the configuration or the pipeline change (google.rpc's
FAILED_PRECONDITION: "do not retry until the system state has been explicitly fixed")."""


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

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The numbers in the metadata of its system.Metrics outputs, by output then name."""
        return tuple(
            Metric(name=name, value=float(value), artifact=artifact.name)
            for artifact in sorted(self.output_artifacts, key=lambda a: a.name)
            if artifact.type == METRICS_TYPE
            for name, value in sorted(artifact.metadata.items())
            # log_metric takes numbers; anything else written by hand is not a metric.
            if isinstance(value, int | float) and not isinstance(value, bool)
        )


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
    disable_cache: bool = False
    """No step is looked up in the step cache (every step runs); set at CreateRun,
    inherited by RetryRun."""

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
    rules: tuple[ParameterRule, ...] = ()
    """What a value must meet besides its type (the pipeline module's `rules`)."""


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


@dataclass(frozen=True)
class RunFilter:
    """ListRuns' filter, fields combined with AND: which runs a WatchRuns stream or a
    subscription is about."""

    pipeline: str = ""
    """A pipeline id (not "pipelines/..."), or "" for any."""
    states: frozenset[RunState] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    """Inclusive."""
    created_before: datetime | None = None
    """Exclusive."""

    def matches(self, run: Run) -> bool:
        if self.pipeline and run.pipeline != self.pipeline:
            return False
        if self.states and run.state not in self.states:
            return False
        if any(run.labels.get(key) != value for key, value in self.labels.items()):
            return False
        if self.created_after is not None and run.create_time < self.created_after:
            return False
        return self.created_before is None or run.create_time < self.created_before
