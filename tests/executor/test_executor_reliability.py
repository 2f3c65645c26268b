"""LocalExecutor reliability: retries with backoff, step timeouts, reuse of earlier steps."""

# No `from __future__ import annotations`: kfp reads component signatures' annotations
# as real types, and string annotations break its type checks.

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler, dsl
from kfp.pipeline_spec import pipeline_spec_pb2

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import Artifact, Code, Step, StepState
from skit_pipelines.errors import InvalidArgument
from skit_pipelines.executor import ExecutorConfig, LocalExecutor, PipelineFailed, _process
from skit_pipelines.executor._logs import AttemptLog
from skit_pipelines.executor._process import StepProcess
from skit_pipelines.executor._retry import RetryPolicy
from skit_pipelines.images import parse_duration, resolve_image

IMAGES = Path(__file__).parent / "images"
IMAGE = "skit-pipelines/t-tool:0.1.0"
TOOL = ["python", "-m", "tool"]


class Recorder:
    """A RunObserver that keeps every step change."""

    def __init__(self) -> None:
        self.events: list[Step] = []

    async def step_changed(self, *steps: Step) -> None:
        self.events.extend(steps)

    def final(self) -> dict[str, Step]:
        return {step.name: step for step in self.events}

    def of(self, name: str) -> list[Step]:
        return [step for step in self.events if step.name == name]

    def states(self, name: str) -> list[tuple[StepState, int]]:
        return [(step.state, step.attempt) for step in self.of(name)]


def compile_spec(pipeline: Any, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return yaml.safe_load(path.read_text())


def make_executor(
    tmp_path: Path,
    *,
    images_root: Path = IMAGES,
    grace: float = 10.0,
    default_timeout: float | None = None,
) -> LocalExecutor:
    return LocalExecutor(
        ExecutorConfig(
            images_root=images_root,
            work_root=tmp_path / "work",
            cancel_grace_seconds=grace,
            default_step_timeout_seconds=default_timeout,
        ),
        LocalArtifactStore(tmp_path / "artifacts"),
    )


class _RetryPolicy:
    """RetryPolicy.of for a task as compiled to YAML: the executor reads the parsed proto."""

    @staticmethod
    def of(task: dict[str, Any]) -> RetryPolicy | None:
        return RetryPolicy.of(json_format.ParseDict(task, pipeline_spec_pb2.PipelineTaskSpec()))


def set_backoff(spec: dict[str, Any], task: str, **fields: Any) -> None:
    """Edits a root task's compiled retryPolicy: kfp only compiles whole seconds, and the
    tests should not wait that long."""
    spec["root"]["dag"]["tasks"][task]["retryPolicy"].update(fields)


def content(uri: str) -> str:
    return Path(unquote(uri.removeprefix("file://"))).read_text()


def attempt_times(counter: Path) -> list[float]:
    return [float(t) for t in Path(f"{counter}.times").read_text().split()]


def flaky_component(counter: Path, failures: int) -> Any:
    @dsl.container_component
    def flaky(out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["flaky", str(counter), str(failures), out]
        )

    return flaky


def counted_component(log: Path) -> Any:
    @dsl.container_component
    def counted(text: str, out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["count", str(log), out.path, text]
        )

    return counted


@dsl.container_component
def append_text(data: dsl.Input[dsl.Dataset], suffix: str, out: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(
        image=IMAGE, command=TOOL, args=["append", data.path, out.path, suffix]
    )


@dsl.container_component
def emit(text: str, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["write", out, text])


@dsl.container_component
def sleep_interval(seconds: float, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["interval", out, seconds])


@dsl.container_component
def report_status(status: dsl.PipelineTaskFinalStatus, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["argv", out, status])


# Retries


def test_kfp_compiles_set_retry_into_a_retry_policy(tmp_path: Path) -> None:
    @dsl.pipeline(name="policy")
    def policy():
        emit(text="a").set_retry(
            num_retries=3, backoff_duration="2m", backoff_factor=1.5, backoff_max_duration="1h"
        )
        emit(text="b").set_retry(num_retries=2)

    tasks = compile_spec(policy, tmp_path)["root"]["dag"]["tasks"]
    assert tasks["emit"]["retryPolicy"] == {
        "maxRetryCount": 3,
        "backoffDuration": "120s",
        "backoffFactor": 1.5,
        "backoffMaxDuration": "3600s",
    }
    assert tasks["emit-2"]["retryPolicy"] == {
        "maxRetryCount": 2,
        "backoffDuration": "0s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
    }
    first = _RetryPolicy.of(tasks["emit"])
    assert first is not None
    assert [first.delay(n, elapsed=0) for n in (1, 2, 3, 4)] == [120, 180, 270, None]
    assert first.delay(1, elapsed=3600 - 119) is None, "past backoffMaxDuration"
    assert _RetryPolicy.of({"retryPolicy": {"maxRetryCount": 0}}) is None
    assert _RetryPolicy.of({}) is None


async def test_a_failed_attempt_is_retried_after_its_backoff(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    flaky = flaky_component(counter, failures=2)

    @dsl.pipeline(name="retried")
    def retried() -> str:
        first = flaky().set_retry(num_retries=3, backoff_duration="1s", backoff_factor=2)
        return emit(text=first.output).output

    spec = compile_spec(retried, tmp_path)
    set_backoff(spec, "flaky", backoffDuration="0.3s")
    recorder = Recorder()
    result = await make_executor(tmp_path).execute("run-1", spec, {}, recorder)

    assert result.output_parameters == {"Output": "ok after 3"}
    assert recorder.states("flaky") == [
        (StepState.PENDING, 1),
        (StepState.RUNNING, 1),
        (StepState.PENDING, 2),
        (StepState.RUNNING, 2),
        (StepState.PENDING, 3),
        (StepState.RUNNING, 3),
        (StepState.SUCCEEDED, 3),
    ]
    waiting = [s for s in recorder.of("flaky") if s.state is StepState.PENDING and s.error]
    assert [s.error.message for s in waiting] == [
        "flaky: attempt 1 failed",
        "flaky: attempt 2 failed",
    ]
    final = recorder.final()["flaky"]
    assert final.error is None
    assert final.start_time == recorder.of("flaky")[1].start_time, "the first attempt's start"
    first, second, third = attempt_times(counter)
    assert second - first >= 0.3, "the first backoff was not respected"
    assert third - second >= 0.6, "the backoff did not grow by backoffFactor"


async def test_the_run_fails_only_when_the_retries_are_exhausted(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    flaky = flaky_component(counter, failures=5)

    @dsl.pipeline(name="exhausted")
    def exhausted():
        emit(text="never").after(flaky().set_retry(num_retries=2))

    recorder = Recorder()
    with pytest.raises(PipelineFailed) as failure:
        await make_executor(tmp_path).execute(
            "run-1", compile_spec(exhausted, tmp_path), {}, recorder
        )

    assert counter.read_text() == "3"
    error = failure.value.error
    assert (error.code, error.reason) == (Code.ABORTED, "STEP_FAILED")
    assert error.message == "step flaky failed after 3 attempts: flaky: attempt 3 failed"
    step = recorder.final()["flaky"]
    assert (step.state, step.attempt) == (StepState.FAILED, 3)
    assert step.error.message == "flaky: attempt 3 failed (after 3 attempts)"
    assert [s for s, _ in recorder.states("flaky")].count(StepState.FAILED) == 1
    assert recorder.final()["emit"].state is StepState.SKIPPED


async def test_no_attempt_starts_after_the_backoff_max_duration(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    flaky = flaky_component(counter, failures=5)

    @dsl.pipeline(name="bounded")
    def bounded():
        flaky().set_retry(num_retries=5)

    spec = compile_spec(bounded, tmp_path)
    # Waits of 0.3s then 1.2s: the second would start past the 1s window.
    set_backoff(spec, "flaky", backoffDuration="0.3s", backoffFactor=4, backoffMaxDuration="1s")
    recorder = Recorder()
    with pytest.raises(PipelineFailed, match="after 2 attempts"):
        await make_executor(tmp_path).execute("run-1", spec, {}, recorder)
    assert counter.read_text() == "2"


async def test_cancel_during_a_backoff_wait_is_prompt(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    flaky = flaky_component(counter, failures=5)

    @dsl.pipeline(name="patient")
    def patient():
        flaky().set_retry(num_retries=3, backoff_duration="60s")

    recorder = Recorder()
    task = asyncio.create_task(
        make_executor(tmp_path).execute("run-1", compile_spec(patient, tmp_path), {}, recorder)
    )
    deadline = time.monotonic() + 20
    while (StepState.PENDING, 2) not in recorder.states("flaky"):
        assert time.monotonic() < deadline, "the first attempt never failed"
        await asyncio.sleep(0.02)

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout=15)

    assert time.monotonic() - started < 2, "cancel waited for the backoff"
    assert recorder.states("flaky")[-1] == (StepState.CANCELLED, 2)
    assert counter.read_text() == "1"


# Timeouts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600s", 600), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("90", 90)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "-5s", "5s extra"])
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def image_folder(images_root: Path, name: str, annotations: dict[str, str]) -> Path:
    """A copy of t_tool under another name, with its own component.yaml annotations."""
    folder = images_root / name
    folder.mkdir(parents=True)
    shutil.copy(IMAGES / "t_tool" / "tool.py", folder / "tool.py")
    (folder / "VERSION").write_text("0.1.0\n")
    component = yaml.safe_load((IMAGES / "t_tool" / "component.yaml").read_text())
    component["metadata"]["annotations"] = annotations
    (folder / "component.yaml").write_text(yaml.safe_dump(component))
    return folder


def test_an_image_folder_declares_its_timeout(tmp_path: Path) -> None:
    image_folder(tmp_path, "t_timed", {"skit.ai/timeout": "15m"})
    image_folder(tmp_path, "t_untimed", {})
    image_folder(tmp_path, "t_badly_timed", {"skit.ai/timeout": "a while"})

    assert resolve_image("skit-pipelines/t-timed:0.1.0", tmp_path).timeout_seconds == 900
    assert resolve_image("skit-pipelines/t-untimed:0.1.0", tmp_path).timeout_seconds is None
    with pytest.raises(InvalidArgument, match=r"skit\.ai/timeout"):
        resolve_image("skit-pipelines/t-badly-timed:0.1.0", tmp_path)


async def test_a_step_past_the_default_timeout_fails_with_deadline_exceeded(
    tmp_path: Path,
) -> None:
    @dsl.pipeline(name="slow")
    def slow():
        sleep_interval(seconds=60.0)

    recorder = Recorder()
    started = time.monotonic()
    with pytest.raises(PipelineFailed) as failure:
        await make_executor(tmp_path, default_timeout=0.5).execute(
            "run-1", compile_spec(slow, tmp_path), {}, recorder
        )

    assert time.monotonic() - started < 10
    error = failure.value.error
    assert (error.code, error.reason) == (4, "STEP_TIMEOUT")
    assert error.message == "step sleep-interval failed: timed out after 0.5s"
    step = recorder.final()["sleep-interval"]
    assert step.state is StepState.FAILED
    assert (step.error.code, step.error.reason) == (4, "STEP_TIMEOUT")
    assert step.error.message == "timed out after 0.5s"


async def test_the_image_timeout_sigkills_a_step_that_ignores_sigterm(tmp_path: Path) -> None:
    images = tmp_path / "images"
    image_folder(images, "t_stubborn", {"skit.ai/timeout": "1s"})
    pidfile = tmp_path / "pids"

    @dsl.container_component
    def stubborn():
        return dsl.ContainerSpec(
            image="skit-pipelines/t-stubborn:0.1.0", command=TOOL, args=["sleeper", str(pidfile)]
        )

    @dsl.pipeline(name="stubborn")
    def stubborn_pipeline():
        stubborn()

    recorder = Recorder()
    started = time.monotonic()
    # The image's 1s wins over the default.
    executor = make_executor(tmp_path, images_root=images, grace=0.5, default_timeout=300)
    with pytest.raises(PipelineFailed, match="timed out after 1s"):
        await executor.execute("run-1", compile_spec(stubborn_pipeline, tmp_path), {}, recorder)

    assert time.monotonic() - started >= 1.5, "SIGKILL came before the grace period"
    for pid in map(int, pidfile.read_text().split()):
        assert _gone(pid), f"process {pid} survived the timeout"


async def test_a_timed_out_attempt_is_retried(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    @dsl.container_component
    def hangs_once(out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["hang-then", str(counter), "1", out]
        )

    @dsl.pipeline(name="hang")
    def hang() -> str:
        return hangs_once().set_retry(num_retries=1).output

    recorder = Recorder()
    result = await make_executor(tmp_path, default_timeout=1).execute(
        "run-1", compile_spec(hang, tmp_path), {}, recorder
    )

    assert result.output_parameters == {"Output": "done on run 2"}
    retrying = next(s for s in recorder.of("hangs-once") if s.attempt == 2)
    assert retrying.state is StepState.PENDING
    assert (retrying.error.code, retrying.error.reason) == (4, "STEP_TIMEOUT")
    assert recorder.final()["hangs-once"].state is StepState.SUCCEEDED


async def test_timeouts_exhaust_the_retries(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    @dsl.container_component
    def hangs(out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["hang-then", str(counter), "9", out]
        )

    @dsl.pipeline(name="hang-always")
    def hang_always():
        hangs().set_retry(num_retries=1)

    with pytest.raises(PipelineFailed) as failure:
        await make_executor(tmp_path, default_timeout=0.5).execute(
            "run-1", compile_spec(hang_always, tmp_path), {}, Recorder()
        )
    error = failure.value.error
    assert (error.code, error.reason) == (4, "STEP_TIMEOUT")
    assert error.message == "step hangs failed after 2 attempts: timed out after 0.5s"


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# Reuse of earlier steps (resume after a crash, RetryRun)


def as_cached(step: Step) -> Step:
    """What RetryRun passes: the earlier step converted to CACHED."""
    return replace(step, state=StepState.CACHED, cached=True)


def copied_to(run_id: str, step: Step) -> Step:
    """A reused step as the reusing run reports it: its artifacts copied below that run
    (from run-1's folder)."""
    artifacts = tuple(
        replace(a, uri=a.uri.replace("/runs/run-1/", f"/runs/{run_id}/"))
        for a in step.output_artifacts
    )
    return replace(step, output_artifacts=artifacts)


def runs(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


async def test_a_reused_step_is_reported_as_given_and_feeds_the_next(tmp_path: Path) -> None:
    log = tmp_path / "spawns.log"
    counted = counted_component(log)

    @dsl.pipeline(name="chain")
    def chain() -> dsl.Dataset:
        first = counted(text="x")
        return append_text(data=first.outputs["out"], suffix="y").outputs["out"]

    spec = compile_spec(chain, tmp_path)
    executor = make_executor(tmp_path)
    earlier = Recorder()
    await executor.execute("run-1", spec, {}, earlier)
    reused = as_cached(earlier.final()["counted"])

    recorder = Recorder()
    result = await executor.execute("run-2", spec, {}, recorder, reuse={"counted": reused})

    assert runs(log) == 1, "the reused step ran again"
    assert recorder.of("counted") == [copied_to("run-2", reused)], (
        "reported once, with no PENDING, unchanged but for its artifacts' copies"
    )
    assert [s for s, _ in recorder.states("append-text")] == [
        StepState.PENDING,
        StepState.RUNNING,
        StepState.SUCCEEDED,
    ]
    assert [content(a.uri) for a in result.outputs] == ["xy"]
    assert reused.output_artifacts[0].uri.endswith("/runs/run-1/counted/out")


async def test_resume_reruns_what_had_not_completed(tmp_path: Path) -> None:
    log = tmp_path / "spawns.log"
    counted = counted_component(log)

    @dsl.pipeline(name="resume")
    def resume_pipeline() -> dsl.Dataset:
        first = counted(text="a")
        return append_text(data=first.outputs["out"], suffix="b").outputs["out"]

    spec = compile_spec(resume_pipeline, tmp_path)
    executor = make_executor(tmp_path)
    earlier = Recorder()
    await executor.execute("run-1", spec, {}, earlier)
    # As the store holds it after a crash: the first step done, the second mid-flight.
    completed = earlier.final()["counted"]
    mid_flight = next(s for s in earlier.of("append-text") if s.state is StepState.RUNNING)

    recorder = Recorder()
    result = await executor.execute(
        "run-1", spec, {}, recorder, reuse={"counted": completed, "append-text": mid_flight}
    )

    assert runs(log) == 1
    assert recorder.of("counted") == [completed]
    assert recorder.final()["append-text"].state is StepState.SUCCEEDED
    assert [content(a.uri) for a in result.outputs] == ["ab"]


async def test_reused_iterations_of_a_parallel_for(tmp_path: Path) -> None:
    log = tmp_path / "spawns.log"
    counted = counted_component(log)

    @dsl.container_component
    def join(parts: dsl.Input[list[dsl.Dataset]], out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["join", out, parts])

    @dsl.pipeline(name="loop")
    def loop(words: list) -> str:
        with dsl.ParallelFor(words) as word:
            written = counted(text=word)
        return join(parts=dsl.Collected(written.outputs["out"])).output

    spec = compile_spec(loop, tmp_path)
    executor = make_executor(tmp_path)
    earlier = Recorder()
    await executor.execute("run-1", spec, {"words": ["b", "c", "a"]}, earlier)
    done = earlier.final()
    kept = ("for-loop-1[0]/counted", "for-loop-1[2]/counted")
    reuse = {name: as_cached(done[name]) for name in kept}

    recorder = Recorder()
    result = await executor.execute(
        "run-2", spec, {"words": ["b", "c", "a"]}, recorder, reuse=reuse
    )

    assert runs(log) == 3 + 1, "only the iteration not reused ran"
    steps = recorder.final()
    assert steps["for-loop-1[0]/counted"] == copied_to("run-2", reuse["for-loop-1[0]/counted"])
    assert steps["for-loop-1[1]/counted"].state is StepState.SUCCEEDED
    assert result.output_parameters == {"Output": "abc"}


async def test_a_reused_step_in_a_condition(tmp_path: Path) -> None:
    log = tmp_path / "spawns.log"
    counted = counted_component(log)

    @dsl.pipeline(name="cond")
    def cond(flag: str = "on"):
        with dsl.If(flag == "on"):
            inside = counted(text="in")
            append_text(data=inside.outputs["out"], suffix="!")

    spec = compile_spec(cond, tmp_path)
    executor = make_executor(tmp_path)
    earlier = Recorder()
    await executor.execute("run-1", spec, {"flag": "on"}, earlier)
    name = "condition-1/counted"

    recorder = Recorder()
    await executor.execute(
        "run-2", spec, {"flag": "on"}, recorder, reuse={name: as_cached(earlier.final()[name])}
    )
    assert runs(log) == 1
    steps = recorder.final()
    assert steps[name].cached
    appended = steps["condition-1/append-text"]
    assert [content(a.uri) for a in appended.output_artifacts] == ["in!"]


async def test_a_reused_step_whose_artifact_is_gone_runs_again(tmp_path: Path) -> None:
    log = tmp_path / "spawns.log"
    counted = counted_component(log)

    @dsl.pipeline(name="gone")
    def gone() -> dsl.Dataset:
        first = counted(text="x")
        return append_text(data=first.outputs["out"], suffix="z").outputs["out"]

    spec = compile_spec(gone, tmp_path)
    executor = make_executor(tmp_path)
    earlier = Recorder()
    await executor.execute("run-1", spec, {}, earlier)
    done = earlier.final()
    Path(unquote(done["counted"].output_artifacts[0].uri.removeprefix("file://"))).unlink()
    no_uri = replace(
        done["counted"], output_artifacts=(Artifact(name="out", uri="", step="counted"),)
    )

    for run_id, first in (("run-2", done["counted"]), ("run-3", no_uri)):
        recorder = Recorder()
        result = await executor.execute(
            run_id,
            spec,
            {},
            recorder,
            reuse={"counted": as_cached(first), "append-text": as_cached(done["append-text"])},
        )
        steps = recorder.final()
        assert steps["counted"].state is StepState.SUCCEEDED
        assert not steps["counted"].cached
        # Its input was produced again, so the earlier result does not stand.
        assert steps["append-text"].state is StepState.SUCCEEDED
        assert [content(a.uri) for a in result.outputs] == ["xz"]
    assert runs(log) == 3


async def test_retry_of_a_failed_run_reuses_what_succeeded_and_reruns_the_exit_handler(
    tmp_path: Path,
) -> None:
    log = tmp_path / "spawns.log"
    counter = tmp_path / "counter"
    counted = counted_component(log)
    flaky = flaky_component(counter, failures=1)

    @dsl.pipeline(name="retry-run")
    def retry_run():
        final = report_status()
        with dsl.ExitHandler(final):
            first = counted(text="x")
            flaky().after(first)

    spec = compile_spec(retry_run, tmp_path)
    executor = make_executor(tmp_path)
    earlier = Recorder()
    with pytest.raises(PipelineFailed):
        await executor.execute("run-1", spec, {}, earlier)
    done = earlier.final()
    assert "FAILED" in done["report-status"].output_parameters["out"]
    reuse = {
        name: as_cached(step)
        for name, step in done.items()
        if step.state in (StepState.SUCCEEDED, StepState.CACHED)
    }
    assert set(reuse) == {"exit-handler-1/counted", "report-status"}

    recorder = Recorder()
    await executor.execute("run-2", spec, {}, recorder, reuse=reuse)

    assert runs(log) == 1
    steps = recorder.final()
    assert steps["exit-handler-1/counted"] == copied_to("run-2", reuse["exit-handler-1/counted"])
    assert steps["exit-handler-1/flaky"].state is StepState.SUCCEEDED
    exit_step = steps["report-status"]
    assert exit_step.state is StepState.SUCCEEDED and not exit_step.cached
    assert "SUCCEEDED" in exit_step.output_parameters["out"]


async def test_cancel_reports_reuse_candidates_as_given(tmp_path: Path) -> None:
    @dsl.pipeline(name="slow-then")
    def slow_then():
        emit(text="after").after(sleep_interval(seconds=30.0))

    spec = compile_spec(slow_then, tmp_path)
    given = Step(name="emit", state=StepState.SUCCEEDED, output_parameters={"out": "after"})
    recorder = Recorder()
    task = asyncio.create_task(
        make_executor(tmp_path, grace=0.5).execute(
            "run-1", spec, {}, recorder, reuse={"emit": given}
        )
    )
    deadline = time.monotonic() + 20
    while StepState.RUNNING not in [s for s, _ in recorder.states("sleep-interval")]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout=15)

    assert recorder.states("sleep-interval")[-1][0] is StepState.CANCELLED
    assert recorder.of("emit") == [given], "a completed step is not cancelled"


# Cancel while a step process starts


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and not _gone(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5, 8])
async def test_a_cancel_while_a_step_starts_leaves_nothing_running(
    tmp_path: Path, turns: int
) -> None:
    marker = f"{time.time() % 1000:.6f}"
    log = AttemptLog(tmp_path / "attempt-1.log")
    starting = asyncio.create_task(
        StepProcess.start(
            ["sleep", marker],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log=log,
            grace_seconds=0.5,
        )
    )
    for _ in range(turns):
        await asyncio.sleep(0)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    log.close()
    assert _processes_with(marker) == []


async def test_a_step_process_is_spawned_and_reaped_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fork and exec take milliseconds the event loop owes to WatchRun deliveries.
    loop_thread = threading.current_thread()
    spawned_in: list[threading.Thread] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> Any:
        spawned_in.append(threading.current_thread())
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(_process.subprocess, "Popen", recording_popen)
    process, returncode, lines = await _shell_step(tmp_path, "echo out; echo err >&2; exit 3")
    assert returncode == 3
    assert len(spawned_in) == 1 and spawned_in[0] is not loop_thread
    assert process.last_error_line == "err"
    # Two pipes: their lines may reach the log in either order.
    assert sorted((line["stream"], line["line"]) for line in lines) == [
        ("stderr", "err"),
        ("stdout", "out"),
    ]


async def test_a_step_and_what_it_spawns_run_at_a_lower_cpu_priority(tmp_path: Path) -> None:
    _, returncode, lines = await _shell_step(
        # The step's own niceness, then that of a process it spawns.
        tmp_path,
        "cut -d' ' -f19 /proc/self/stat; sh -c \"cut -d' ' -f19 /proc/self/stat\"",
    )
    assert returncode == 0
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + _process.STEP_NICENESS, 19)
    assert [int(line["line"]) for line in lines] == [expected, expected]


async def test_a_step_has_its_own_process_group_in_the_servers_session(tmp_path: Path) -> None:
    """Its own group, so cancel reaches what it spawned; the server's session, so its lower
    priority holds against the server: with autogroup scheduling a new session would be a
    scheduling group of its own, with its own share of the CPU."""
    process, returncode, lines = await _shell_step(
        # Its pid, process group and session (fields 1, 5 and 6), then its scheduling group.
        tmp_path,
        "cut -d' ' -f1,5,6 /proc/$$/stat; cat /proc/$$/autogroup || true",
    )
    assert returncode == 0
    pid, group, session = map(int, lines[0]["line"].split())
    assert pid == group == process.pid
    assert session == os.getsid(0)
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        # A process in the kernel's root scheduling group (one that never started a session
        # under autogroup) reads an empty file; a new session would read a group of its own.
        assert [line["line"] for line in lines[1:]] == autogroup.read_text().splitlines()


async def _shell_step(tmp_path: Path, script: str) -> tuple[StepProcess, int, list[dict[str, Any]]]:
    """Runs `script` as a step process to its end: the process, its exit code and its
    log's lines."""
    log = AttemptLog(tmp_path / "attempt-1.log")
    process = await StepProcess.start(
        ["sh", "-c", script],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log=log,
        grace_seconds=0.5,
    )
    returncode = await asyncio.wait_for(process.wait(), 10)
    log.close()
    return (
        process,
        returncode,
        [json.loads(line) for line in (tmp_path / "attempt-1.log").read_text().splitlines()],
    )
