"""LocalExecutor: runs a compiled KFP PipelineSpec (IR) on this machine, without containers.

It plays the part of KFP's driver and launcher: parses the IR once into kfp-pipeline-spec's
protos, walks the DAGs (conditions, loops, exit handlers: `_dag`), resolves each task's
inputs (`_inputs`), substitutes the container placeholders (`_command`), runs the command
in the image's folder and uploads what the step produced (`_runner`, `_outputs`). A failed
attempt is retried as the task's `retryPolicy` says (`_retry`); an attempt that outlives
its image folder's `skit.ai/timeout` is stopped; steps completed earlier (resume,
RetryRun) and cache hits are reused (`_cache`).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from skit_pipelines.artifact_imports import ImportPolicy
from skit_pipelines.artifacts import ArtifactStore
from skit_pipelines.domain import Code, ErrorInfo, Step, StepState
from skit_pipelines.executor._api import (
    ExecutorConfig,
    PipelineFailed,
    RunObserver,
    RunResult,
    StepCache,
    StepTraceContext,
)
from skit_pipelines.executor._dag import DagWalker
from skit_pipelines.executor._ir import IRError, PipelineIR, names
from skit_pipelines.executor._logs import delete_run_logs
from skit_pipelines.executor._orphans import ProcessLedger
from skit_pipelines.executor._outcome import INVALID_PIPELINE, step_error
from skit_pipelines.executor._outputs import run_artifacts_prefix
from skit_pipelines.executor._run import RunState, now
from skit_pipelines.executor._runner import StepRunner


class LocalExecutor:
    """Executes compiled pipelines with one process per container task.

    One executor is shared by all runs: `max_parallel_steps` bounds their processes
    together.
    """

    def __init__(
        self, config: ExecutorConfig, artifacts: ArtifactStore, cache: StepCache | None = None
    ) -> None:
        self._config = config
        self._artifacts = artifacts
        # Before any step starts: a step left running by a killed server would otherwise
        # run side by side with its rerun.
        processes = ProcessLedger(config.work_root / "processes")
        processes.reap_orphans()
        self._runner = StepRunner(config, artifacts, cache, processes)

    @property
    def import_policy(self) -> ImportPolicy:
        """Which URIs dsl.importer may import (what CreateRun checks too)."""
        return self._config.import_policy

    @property
    def logs_root(self) -> Path:
        """Where step logs are kept: read them with `read_step_logs(logs_root, run, step)`."""
        return self._config.resolved_logs_root

    async def delete_run(self, run_id: str) -> None:
        """Removes a finished run's artifacts and step logs. Runs that reused its steps
        keep working: they hold copies (see `_cache`).

        Raises:
            OSError: the artifact store failed; what is left can be deleted again.
        """
        await asyncio.to_thread(self._artifacts.delete_prefix, run_artifacts_prefix(run_id))
        await asyncio.to_thread(delete_run_logs, self.logs_root, run_id)

    async def execute(
        self,
        run_id: str,
        spec: Mapping[str, Any],
        parameters: Mapping[str, Any],
        observer: RunObserver,
        *,
        reuse: Mapping[str, Step] | None = None,
        trace_context: StepTraceContext | None = None,
        disable_cache: bool = False,
    ) -> RunResult:
        """Runs the pipeline to the end.

        Args:
            spec: The compiled IR (a PipelineSpec as JSON/YAML loads it); parsed once,
                here, into kfp-pipeline-spec's protos.
            reuse: Steps completed earlier, by name: after a crash, the run's own
                completed steps (resume); for RetryRun, the succeeded steps of the failed
                run, converted to CACHED by the caller. A step named here with state
                SUCCEEDED or CACHED is not executed: its Step value is reported as its
                final state, unchanged but for its artifacts, which are copied below this
                run's prefix when they were another run's, and its outputs feed what
                follows. The executor runs it after all, as a new step, when its outputs
                are incomplete (a declared output missing, an artifact URI empty, or an
                artifact gone from the store or altered: `ArtifactStore.check`), or when
                something it depends on was not reused
                (its earlier result came from other inputs); that is why an exit handler
                reruns whenever a step inside its ExitHandler ran.
            trace_context: Called just before each attempt of a step starts; what it
                returns joins the step process's environment (TRACEPARENT).
            disable_cache: Look no step up in the step cache: every step runs (the run's
                CreateRun said so). Steps that succeed are still stored in it, for later
                runs; `reuse` is unaffected.

        Raises:
            PipelineFailed: a step failed (after its retries, after running steps
                finished and exit handlers ran), or the spec is not valid IR.
            asyncio.CancelledError: the caller cancelled; step processes were stopped and
                their steps reported CANCELLED.
        """
        try:
            # Milliseconds for a large pipeline: off the loop, which is delivering the
            # RUNNING revision.
            ir = await asyncio.to_thread(PipelineIR.parse, spec)
        except IRError as exc:
            raise PipelineFailed(
                ErrorInfo(code=Code.INVALID_ARGUMENT, message=str(exc), reason=INVALID_PIPELINE)
            ) from None
        work_dir = self._config.work_root / "runs" / run_id
        run = RunState(
            run_id, ir, observer, work_dir, reuse or {}, trace_context, disable_cache=disable_cache
        )
        try:
            outcome = await DagWalker(run, self._runner).run_pipeline(parameters)
        except asyncio.CancelledError:
            end = now()
            for step in list(run.live.values()):
                await run.report(replace(step, state=StepState.CANCELLED, end_time=end))
            # Completed before this call, so not cancelled: report them as they were.
            for step in list(run.awaiting_reuse.values()):
                await run.report(step)
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
        if run.failure is not None:
            raise PipelineFailed(run.failure)
        if not outcome.ok:
            raise PipelineFailed(outcome.error or step_error("the pipeline failed"))
        declared = names(ir.root.dag.outputs.artifacts)
        if declared:
            outputs = tuple(
                replace(artifact, name=name)
                for name in declared
                for artifact in outcome.artifacts.get(name, ())
            )
        else:
            outputs = tuple(a for a in run.produced if a.uri not in run.consumed)
        return RunResult(outputs=outputs, output_parameters=dict(outcome.parameters))
