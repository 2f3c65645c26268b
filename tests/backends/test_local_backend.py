"""The runs controller with the local backend and the real executor: whole runs, failure,
cancel, queueing and resume after a restart."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import asyncio
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

import psutil
import pytest
import yaml
from kfp import compiler, components, dsl

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.catalog import Catalog, pipeline_from_spec
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore

NAP_COMPONENT = """
name: Nap
inputs:
- {name: seconds, type: Float}
- {name: fail_with, type: String, default: ""}
- {name: fail_unless_exists, type: String, default: ""}
- {name: label, type: String, default: "nap"}
outputs:
- {name: note, type: Dataset}
implementation:
  container:
    image: skit-pipelines/nap:0.1.0
    command: [python3, nap.py]
    args: [{inputValue: seconds}, {inputValue: fail_with}, {inputValue: fail_unless_exists},
      {inputValue: label}, {outputPath: note}]
"""

# Appends its label to executions.log next to itself, so tests can count what really ran.
NAP_SCRIPT = """
import os, sys, time
seconds, fail_with, fail_unless, label, out = sys.argv[1:6]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "executions.log"), "a") as f:
    f.write(label + "\\n")
print(f"{label}: sleeping {seconds}s", flush=True)
time.sleep(float(seconds))
if fail_with or (fail_unless and not os.path.exists(fail_unless)):
    print(fail_with or f"{fail_unless} is missing", file=sys.stderr)
    sys.exit(3)
print(f"{label}: done", flush=True)
open(out, "w").write(f"slept {seconds}")
"""


def _compile_nap_pipeline(tmp: Path) -> dict:
    nap = components.load_component_from_text(NAP_COMPONENT)

    @dsl.pipeline(name="naps")
    def naps(seconds: float = 0.0, fail_with: str = "", second_needs: str = "") -> dsl.Dataset:
        first = nap(seconds=seconds, fail_with=fail_with, label="first")
        first.set_caching_options(False)
        second = nap(seconds=0.0, fail_unless_exists=second_needs, label="second").after(first)
        second.set_caching_options(False)
        return second.outputs["note"]

    path = tmp / "naps.yaml"
    compiler.Compiler().compile(naps, str(path))
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def naps_pipeline(tmp_path_factory):
    return pipeline_from_spec(_compile_nap_pipeline(tmp_path_factory.mktemp("naps")))


class Harness:
    def __init__(self, root: Path, pipeline, max_active_runs: int = 4) -> None:
        images = root / "images" / "nap"
        images.mkdir(parents=True, exist_ok=True)
        (images / "component.yaml").write_text(NAP_COMPONENT)
        (images / "VERSION").write_text("0.1.0\n")
        (images / "nap.py").write_text(NAP_SCRIPT)
        self.store = SqliteRunStore(root / "runs.db")
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=root / "images", work_root=root / "work", cancel_grace_seconds=2
            ),
            LocalArtifactStore(root / "artifacts"),
            cache=StoreStepCache(self.store),
        )
        self.backend = LocalBackend(executor, max_active_runs=max_active_runs)
        self.controller = RunController(self.store, Catalog({pipeline.id: pipeline}), self.backend)
        self.backend.start(self.controller)

    async def create(self, **parameters) -> Run:
        return await self.controller.create_run(
            CreateRunInput(pipeline="pipelines/naps", parameters=parameters)
        )

    async def until(self, run: Run, predicate, timeout: float = 20) -> Run:
        async def wait() -> Run:
            async for snapshot in self.controller.watch_run(run.name):
                if predicate(snapshot):
                    return snapshot
            return snapshot

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.backend.shutdown()
        await self.store.close()


@pytest.fixture
async def harness(tmp_path: Path, naps_pipeline):
    h = Harness(tmp_path, naps_pipeline)
    yield h
    await h.close()


def terminal(run: Run) -> bool:
    return run.state.terminal


async def test_run_succeeds_with_steps_and_outputs(harness: Harness) -> None:
    run = await harness.create()
    done = await harness.until(run, terminal)
    assert done.state is RunState.SUCCEEDED, done.error
    assert [s.state for s in done.steps] == [StepState.SUCCEEDED, StepState.SUCCEEDED]
    assert done.start_time and done.end_time and done.end_time >= done.start_time
    (output,) = done.outputs
    path = Path(unquote(urlparse(output.uri).path))
    assert path.read_text() == "slept 0.0" and output.sha256 and output.step
    revisions = [r.revision for r in await harness.store.revisions_after(run.id, 0)]
    assert revisions == list(range(1, done.revision + 1))


async def test_failed_step_fails_the_run_with_its_reason(harness: Harness) -> None:
    run = await harness.create(fail_with="no calls match the filters")
    done = await harness.until(run, terminal)
    assert done.state is RunState.FAILED
    assert "no calls match the filters" in done.error.message
    first, second = done.steps
    assert first.state is StepState.FAILED and "no calls match" in first.error.message
    assert second.state is StepState.SKIPPED


async def test_cancel_kills_the_step_and_ends_cancelled(harness: Harness) -> None:
    run = await harness.create(seconds=60.0)
    await harness.until(run, lambda r: any(s.state is StepState.RUNNING for s in r.steps))
    cancelling = await harness.controller.cancel_run(run.name)
    assert cancelling.state is RunState.CANCELLING
    done = await harness.until(run, terminal, timeout=10)
    assert done.state is RunState.CANCELLED
    assert done.steps[0].state is StepState.CANCELLED
    # The run's task ends just after its final state is stored.
    async with asyncio.timeout(5):
        while harness.backend.active_runs():
            await asyncio.sleep(0.01)


async def test_runs_beyond_the_limit_wait_in_queued(tmp_path: Path, naps_pipeline) -> None:
    h = Harness(tmp_path, naps_pipeline, max_active_runs=1)
    try:
        first = await h.create(seconds=1.0)
        await h.until(first, lambda r: r.state is RunState.RUNNING)
        second = await h.create()
        done = await h.until(second, terminal)
        assert done.state is RunState.SUCCEEDED
        first_done = await h.store.get_run(first.id)
        assert first_done.state is RunState.SUCCEEDED
        # It waited in QUEUED: it started only once the first run had ended.
        assert done.start_time is not None and first_done.end_time is not None
        assert done.start_time >= first_done.end_time
    finally:
        await h.close()


async def test_unfinished_runs_resume_after_restart(tmp_path: Path, naps_pipeline) -> None:
    first = Harness(tmp_path, naps_pipeline)
    run = await first.create(seconds=60.0)
    await first.until(run, lambda r: any(s.state is StepState.RUNNING for s in r.steps))
    await first.close()
    stored = SqliteRunStore(tmp_path / "runs.db")
    assert (await stored.get_run(run.id)).state is RunState.RUNNING
    await stored.close()

    second = Harness(tmp_path, naps_pipeline)
    try:
        await second.store.update_run(
            run.id, lambda r: replace(r, parameters={**r.parameters, "seconds": 0.0})
        )
        await second.controller.resume()
        done = await second.until(run, terminal)
        assert done.state is RunState.SUCCEEDED
    finally:
        await second.close()


def executions(root: Path) -> list[str]:
    log = root / "images" / "nap" / "executions.log"
    return log.read_text().split() if log.exists() else []


async def test_retry_run_reuses_the_succeeded_step_and_reruns_the_rest(
    harness: Harness, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    failed = await harness.until(await harness.create(second_needs=str(flag)), terminal)
    assert failed.state is RunState.FAILED and executions(tmp_path) == ["first", "second"]
    flag.touch()
    retry = await harness.controller.retry_run(failed.name)
    done = await harness.until(retry, terminal)
    assert done.state is RunState.SUCCEEDED, done.error
    assert [(s.name, s.state, s.cached) for s in done.steps] == [
        ("nap", StepState.CACHED, True),
        ("nap-2", StepState.SUCCEEDED, False),
    ]
    assert executions(tmp_path) == ["first", "second", "second"]
    assert done.retry_of == failed.name


async def test_step_logs_after_the_step_and_while_it_runs(harness: Harness) -> None:
    run = await harness.create(seconds=1.0)
    await harness.until(run, lambda r: any(s.state is StepState.RUNNING for s in r.steps))
    followed = [
        line.text async for line in harness.controller.read_step_logs(run.name, "nap", follow=True)
    ]
    assert followed == ["first: sleeping 1.0s", "first: done"]
    await harness.until(run, terminal)
    lines = [line async for line in harness.controller.read_step_logs(run.name, "nap-2")]
    assert [(line.stream, line.text, line.attempt) for line in lines] == [
        ("stdout", "second: sleeping 0.0s", 1),
        ("stdout", "second: done", 1),
    ]


async def test_failed_step_logs_mark_stderr(harness: Harness) -> None:
    run = await harness.until(await harness.create(fail_with="no rows"), terminal)
    lines = [line async for line in harness.controller.read_step_logs(run.name, "nap")]
    assert ("stderr", "no rows") in [(line.stream, line.text) for line in lines]


async def test_logs_of_a_reused_step_come_from_the_run_it_retried(
    harness: Harness, tmp_path: Path
) -> None:
    failed = await harness.until(
        await harness.create(second_needs=str(tmp_path / "never")), terminal
    )
    retry = await harness.until(await harness.controller.retry_run(failed.name), terminal)
    lines = [line.text async for line in harness.controller.read_step_logs(retry.name, "nap")]
    assert lines == ["first: sleeping 0.0s", "first: done"]


def step_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any(part.endswith("nap.py") for part in process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


async def test_a_killed_step_process_fails_the_run_clearly(harness: Harness) -> None:
    run = await harness.create(seconds=60.0)
    await harness.until(run, lambda r: any(s.state is StepState.RUNNING for s in r.steps))
    # RUNNING is reported once the process is started; it may not have exec'd nap.py yet.
    for _ in range(200):
        naps = step_processes()
        if naps:
            break
        await asyncio.sleep(0.05)
    assert len(naps) == 1
    naps[0].kill()
    done = await harness.until(run, terminal)
    assert done.state is RunState.FAILED
    assert "signal 9" in done.error.message or "SIGKILL" in done.error.message, done.error
    assert done.steps[0].state is StepState.FAILED


async def test_an_unwritable_artifact_store_fails_the_step_not_the_service(
    harness: Harness, tmp_path: Path
) -> None:
    # Root ignores permission bits, so block the store with a file where a directory must go.
    (tmp_path / "artifacts" / "runs").write_text("not a directory")
    run = await harness.until(await harness.create(), terminal)
    assert run.state is RunState.FAILED
    assert run.steps[0].state is StepState.FAILED and run.steps[0].error.message
    (tmp_path / "artifacts" / "runs").unlink()
    again = await harness.until(await harness.create(), terminal)
    assert again.state is RunState.SUCCEEDED
