"""The executor's public values and seams: configuration, step cache, observer, result."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.domain import Artifact, ErrorInfo, Step


@dataclass(frozen=True)
class ExecutorConfig:
    """How the local executor runs steps."""

    images_root: Path
    """The project's `images/` folder; image references resolve to folders below it."""
    work_root: Path
    """Scratch space: `runs/<run>/<step>` below it, removed when the step ends; step logs
    go to `logs/` below it unless `logs_root` says otherwise."""
    max_parallel_steps: int = 4
    """How many step processes of all runs sharing the executor may run at once."""
    cancel_grace_seconds: float = 10.0
    """How long a cancelled step gets between SIGTERM and SIGKILL."""
    step_env: Mapping[str, str] = field(default_factory=dict)
    """Values for the environment variables components declare (`skit.ai/env`); a step
    receives only the ones its image folder declares."""
    python: str = sys.executable
    """The interpreter that replaces a command's leading `python`/`python3`."""
    default_step_timeout_seconds: float | None = None
    """How long one attempt of a step may run when its image folder declares no
    `skit.ai/timeout`; None means no limit."""
    logs_root: Path | None = None
    """Where step logs are kept (see `step_log_path`); None means `work_root / "logs"`."""
    inherited_env: Mapping[str, str] = field(default_factory=dict)
    """The service's environment as steps inherit it: only PATH, HOME and LANG are taken
    (passing all of os.environ is safe); a missing one gets a fixed default (os.defpath,
    "/", "C.UTF-8"). The executor never reads os.environ itself."""

    import_policy: ImportPolicy = field(default_factory=ImportPolicy)
    """Which URIs dsl.importer may import; the default allows none."""

    @property
    def resolved_logs_root(self) -> Path:
        """`logs_root`, or its default below `work_root`."""
        return self.logs_root if self.logs_root is not None else self.work_root / "logs"


@dataclass(frozen=True)
class CachedOutputs:
    """What a cache hit restores for a step."""

    output_artifacts: tuple[Artifact, ...]
    output_parameters: Mapping[str, Any]


class StepCache(Protocol):
    """Step outputs by cache key.

    Called from the event loop thread, so implementations must be quick (an in-memory
    dict, or an indexed lookup in a local database).
    """

    def get(self, key: str) -> CachedOutputs | None: ...

    def put(self, key: str, outputs: CachedOutputs) -> None: ...

    def delete(self, key: str) -> None:
        """Forgets an entry whose artifacts are gone."""


class InMemoryStepCache:
    """A StepCache in a dict: for tests and single-process use."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedOutputs] = {}

    def get(self, key: str) -> CachedOutputs | None:
        return self._entries.get(key)

    def put(self, key: str, outputs: CachedOutputs) -> None:
        self._entries[key] = outputs

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class RunObserver(Protocol):
    """Receives every state change of every step of one run."""

    async def step_changed(self, *steps: Step) -> None:
        """Called with full Step values: PENDING, RUNNING, then a terminal state. Steps
        reported together (a DAG's new steps, PENDING) are one change of the run."""


StepTraceContext = Callable[[str], Mapping[str, str]]
"""A step's W3C trace context by step name, as environment variables for its process
(TRACEPARENT, and TRACESTATE when there is one): spans the component makes join the run's
trace."""


@dataclass(frozen=True)
class RunResult:
    """What a successful run produced."""

    outputs: tuple[Artifact, ...]
    """The root DAG's output artifacts (named as the pipeline names them) or, when the
    pipeline declares none, every step artifact no other step consumed."""
    output_parameters: Mapping[str, Any]
    """The root DAG's output parameters."""


class PipelineFailed(Exception):
    """A step failed; `error` names the first failed step and its one-line reason."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error
