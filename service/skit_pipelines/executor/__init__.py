"""The local executor: runs compiled KFP pipelines on this machine, one process per step.

See ARCHITECTURE.md §5. The runs controller (through the local backend) calls
`LocalExecutor.execute` once per run and cancels the calling task to cancel the run.
"""

from skit_pipelines.executor._api import (
    CachedOutputs,
    ExecutorConfig,
    InMemoryStepCache,
    PipelineFailed,
    RunObserver,
    RunResult,
    StepCache,
)
from skit_pipelines.executor._local import LocalExecutor

__all__ = [
    "CachedOutputs",
    "ExecutorConfig",
    "InMemoryStepCache",
    "LocalExecutor",
    "PipelineFailed",
    "RunObserver",
    "RunResult",
    "StepCache",
]
