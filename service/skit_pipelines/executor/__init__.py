"""The local executor: runs compiled KFP pipelines on this machine, one process per step.

See docs/architecture.md ("Inside the service"). The runs controller (through the local
backend) calls `LocalExecutor.execute` once per run and cancels the calling task to cancel
the run.
Each attempt of a step keeps its output in a log file (`step_log_path`, `read_log`).
"""

from skit_pipelines.executor._api import (
    CachedOutputs,
    ExecutorConfig,
    InMemoryStepCache,
    PipelineFailed,
    RunObserver,
    RunResult,
    StepCache,
    StepTraceContext,
)
from skit_pipelines.executor._local import LocalExecutor
from skit_pipelines.executor._logs import LogLine, read_log, read_step_logs, step_log_path

__all__ = [
    "CachedOutputs",
    "ExecutorConfig",
    "InMemoryStepCache",
    "LocalExecutor",
    "LogLine",
    "PipelineFailed",
    "RunObserver",
    "RunResult",
    "StepCache",
    "StepTraceContext",
    "read_log",
    "read_step_logs",
    "step_log_path",
]
