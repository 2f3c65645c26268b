"""LocalExecutor end to end: pipelines written with kfp's DSL, compiled, run as processes."""

# No `from __future__ import annotations`: kfp reads component signatures' annotations
# as real types, and string annotations break its type checks.

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psutil
import pytest
import yaml
from kfp import compiler, components, dsl

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import Code, Step, StepState
from skit_pipelines.executor import (
    ExecutorConfig,
    InMemoryStepCache,
    LocalExecutor,
    PipelineFailed,
    StepCache,
)

IMAGES = Path(__file__).parent / "images"
IMAGE = "skit-pipelines/t-tool:0.1.0"
TOOL = ["python", "-m", "tool"]


class Recorder:
    """A RunObserver that keeps every step change."""

    def __init__(self) -> None:
        self.events: list[Step] = []
        self.reports: list[tuple[Step, ...]] = []
        """The steps of each call, as reported together."""

    async def step_changed(self, *steps: Step) -> None:
        self.events.extend(steps)
        self.reports.append(steps)

    def final(self) -> dict[str, Step]:
        return {step.name: step for step in self.events}

    def states(self, name: str) -> list[StepState]:
        return [step.state for step in self.events if step.name == name]


def compile_spec(pipeline: Any, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return yaml.safe_load(path.read_text())


def make_executor(
    tmp_path: Path,
    *,
    cache: StepCache | None = None,
    max_parallel_steps: int = 4,
    grace: float = 10.0,
    step_env: dict[str, str] | None = None,
) -> LocalExecutor:
    return LocalExecutor(
        ExecutorConfig(
            images_root=IMAGES,
            work_root=tmp_path / "work",
            max_parallel_steps=max_parallel_steps,
            cancel_grace_seconds=grace,
            step_env=step_env or {},
            # The service passes its own environment (see ServerConfig): steps see PATH.
            inherited_env=os.environ,
        ),
        LocalArtifactStore(tmp_path / "artifacts"),
        cache,
    )


def content(uri: str) -> str:
    return Path(unquote(uri.removeprefix("file://"))).read_text()


def interval(step: Step) -> tuple[float, float]:
    start, end = step.output_parameters["out"].split()
    return float(start), float(end)


@dsl.container_component
def write_text(text: str, out: dsl.Output[dsl.Dataset], size: dsl.OutputPath(int)):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c", 'printf %s "$0" > "$1" && printf %s "${#0}" > "$2"'],
        args=[text, out.path, size],
    )


@dsl.container_component
def append_text(
    data: dsl.Input[dsl.Dataset], times: int, out: dsl.Output[dsl.Dataset], suffix: str = "!"
):
    return dsl.ContainerSpec(
        image=IMAGE, command=TOOL, args=["append", data.path, out.path, f"+{times}{suffix}"]
    )


@dsl.container_component
def sleep_interval(seconds: float, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["interval", out, seconds])


@dsl.container_component
def emit(text: str, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["write", out, text])


@dsl.container_component
def emit_int(value: int, out: dsl.OutputPath(int)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["write", out, value])


@dsl.container_component
def square(n: int, out: dsl.OutputPath(int)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["square", out, n])


@dsl.container_component
def total(values: list, out: dsl.OutputPath(int)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["sum", out, values])


@dsl.container_component
def fail(message: str):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["fail", message])


@dsl.container_component
def report_status(status: dsl.PipelineTaskFinalStatus, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["argv", out, status, "{{$}}"])


# A linear chain, parameters and artifacts


async def test_linear_chain_passes_parameters_and_artifacts(tmp_path: Path) -> None:
    @dsl.pipeline(name="chain")
    def chain(text: str = "hello", times: int = 2) -> dsl.Dataset:
        first = write_text(text=text)
        second = append_text(data=first.outputs["out"], times=first.outputs["size"])
        third = append_text(data=second.outputs["out"], times=times, suffix="?")
        return third.outputs["out"]

    recorder = Recorder()
    result = await make_executor(tmp_path).execute(
        "run-1", compile_spec(chain, tmp_path), {"text": "hi there", "times": 3}, recorder
    )

    [output] = result.outputs
    assert (output.name, output.step) == ("Output", "append-text-2")
    assert content(output.uri) == "hi there+8!+3?"
    assert output.uri.endswith("/runs/run-1/append-text-2/out")
    assert output.sha256 and output.size_bytes == len("hi there+8!+3?")
    steps = recorder.final()
    assert steps["write-text"].output_parameters == {"size": 8}
    assert [a.name for a in steps["write-text"].output_artifacts] == ["out"]
    for name in ("write-text", "append-text", "append-text-2"):
        assert recorder.states(name) == [StepState.PENDING, StepState.RUNNING, StepState.SUCCEEDED]
        assert steps[name].start_time <= steps[name].end_time
        assert steps[name].image == IMAGE
    assert steps["append-text"].component == "append-text"
    assert not (tmp_path / "work" / "runs" / "run-1").exists()
    # The DAG's steps are reported PENDING together (one revision), then one at a time.
    assert sorted((s.name, s.state) for s in recorder.reports[0]) == [
        (name, StepState.PENDING) for name in ("append-text", "append-text-2", "write-text")
    ]
    assert all(len(report) == 1 for report in recorder.reports[1:])


async def test_running_is_reported_before_the_process_starts(tmp_path: Path) -> None:
    """Reporting RUNNING waits for the run's watchers to be sent it (RunWrites): the step's
    process, which would compete with that delivery for the CPU, starts after it."""
    go = tmp_path / "go"
    processes_at_running: list[int] = []

    def step_processes() -> int:
        return sum(
            str(go) in " ".join(child.cmdline())
            for child in psutil.Process().children(recursive=True)
            if child.is_running()
        )

    class Checking(Recorder):
        async def step_changed(self, *steps: Step) -> None:
            if any(step.state is StepState.RUNNING for step in steps):
                processes_at_running.append(step_processes())
                go.touch()  # the step waits for it
            await super().step_changed(*steps)

    @dsl.container_component
    def wait_for(path: str):
        return dsl.ContainerSpec(
            image=IMAGE,
            command=["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.01; done'],
            args=[path],
        )

    @dsl.pipeline(name="waiting")
    def waiting(path: str):
        wait_for(path=path)

    recorder = Checking()
    await make_executor(tmp_path).execute(
        "run-1", compile_spec(waiting, tmp_path), {"path": str(go)}, recorder
    )
    assert processes_at_running == [0]
    assert recorder.states("wait-for") == [
        StepState.PENDING,
        StepState.RUNNING,
        StepState.SUCCEEDED,
    ]


async def test_unconsumed_artifacts_are_the_outputs_when_none_are_declared(
    tmp_path: Path,
) -> None:
    @dsl.pipeline(name="no-outputs")
    def no_outputs():
        first = write_text(text="a")
        append_text(data=first.outputs["out"], times=1)
        write_text(text="b")

    result = await make_executor(tmp_path).execute(
        "run-1", compile_spec(no_outputs, tmp_path), {}, Recorder()
    )

    assert sorted((a.step, a.name, content(a.uri)) for a in result.outputs) == [
        ("append-text", "out", "a+1!"),
        ("write-text-2", "out", "b"),
    ]


async def test_int_defaults_stored_as_floats_are_passed_as_ints(tmp_path: Path) -> None:
    @dsl.container_component
    def show(out: dsl.OutputPath(str), n: int = 200, ratio: float = 0.5, flag: bool = True):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["argv", out, n, ratio, flag])

    @dsl.pipeline(name="defaults")
    def defaults() -> str:
        return show().output

    spec = compile_spec(defaults, tmp_path)
    assert (
        spec["components"]["comp-show"]["inputDefinitions"]["parameters"]["n"]["defaultValue"]
        == 200.0
    )

    result = await make_executor(tmp_path).execute("run-1", spec, {}, Recorder())

    assert json.loads(result.output_parameters["Output"]) == ["200", "0.5", "true"]


async def test_outputs_written_to_the_executor_output_file(tmp_path: Path) -> None:
    @dsl.container_component
    def shout(text: str, out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["executor-output", "{{$}}"])

    @dsl.pipeline(name="executor-output")
    def executor_output() -> str:
        return shout(text="quiet").output

    result = await make_executor(tmp_path).execute(
        "run-1", compile_spec(executor_output, tmp_path), {}, Recorder()
    )

    assert result.output_parameters == {"Output": "QUIET"}


# Concurrency


async def test_independent_steps_overlap_and_fan_in_waits_for_both(tmp_path: Path) -> None:
    @dsl.pipeline(name="fan")
    def fan():
        left = sleep_interval(seconds=0.6)
        right = sleep_interval(seconds=0.6)
        emit(text="joined").after(left, right)

    recorder = Recorder()
    await make_executor(tmp_path).execute("run-1", compile_spec(fan, tmp_path), {}, recorder)

    steps = recorder.final()
    left, right = interval(steps["sleep-interval"]), interval(steps["sleep-interval-2"])
    assert max(left[0], right[0]) < min(left[1], right[1]), "the two steps did not overlap"
    assert steps["emit"].start_time >= max(
        steps["sleep-interval"].end_time, steps["sleep-interval-2"].end_time
    )


async def test_max_parallel_steps_is_shared_by_all_runs(tmp_path: Path) -> None:
    @dsl.pipeline(name="one")
    def one():
        sleep_interval(seconds=0.4)

    executor = make_executor(tmp_path, max_parallel_steps=1)
    spec = compile_spec(one, tmp_path)
    first, second = Recorder(), Recorder()
    await asyncio.gather(
        executor.execute("run-a", spec, {}, first), executor.execute("run-b", spec, {}, second)
    )

    a = interval(first.final()["sleep-interval"])
    b = interval(second.final()["sleep-interval"])
    assert a[1] <= b[0] or b[1] <= a[0], "steps of two runs ran at once despite the bound"


# Conditions


@dsl.pipeline(name="branches")
def branches(x: int = 0, mode: str = "yes") -> str:
    number = emit_int(value=x)
    with dsl.If(number.output > 0):
        positive = emit(text="positive")
    with dsl.Elif(number.output < 0):
        negative = emit(text="negative")
    with dsl.Else():
        zero = emit(text="zero")
    with dsl.If(mode == "yes"), dsl.If(x != 2):
        emit(text="nested")
    return dsl.OneOf(positive.output, negative.output, zero.output)


@pytest.mark.parametrize(
    ("x", "mode", "taken", "nested"),
    [
        (5, "yes", "positive", True),
        (-3, "no", "negative", False),
        (0, "yes", "zero", True),
        (2, "yes", "positive", False),
    ],
)
async def test_if_elif_else_runs_one_branch_and_skips_the_others(
    tmp_path: Path, x: int, mode: str, taken: str, nested: bool
) -> None:
    recorder = Recorder()
    result = await make_executor(tmp_path).execute(
        "run-1", compile_spec(branches, tmp_path), {"x": x, "mode": mode}, recorder
    )

    assert result.output_parameters == {"Output": taken}
    steps = recorder.final()
    by_text = {
        "positive": "condition-branches-1/condition-2/emit",
        "negative": "condition-branches-1/condition-3/emit-2",
        "zero": "condition-branches-1/condition-4/emit-3",
    }
    for text, name in by_text.items():
        expected = StepState.SUCCEEDED if text == taken else StepState.SKIPPED
        assert steps[name].state is expected, name
    nested_step = steps["condition-5/condition-6/emit-4"]
    assert nested_step.state is (StepState.SUCCEEDED if nested else StepState.SKIPPED)


# Loops


async def test_parallel_for_over_a_static_list_respects_parallelism(tmp_path: Path) -> None:
    @dsl.pipeline(name="static-loop")
    def static_loop() -> int:
        with dsl.ParallelFor([0.3, 0.3, 0.3, 0.3], parallelism=2) as seconds:
            sleep_interval(seconds=seconds)
        with dsl.ParallelFor([1, 2, 3]) as n:
            squared = square(n=n)
        return total(values=dsl.Collected(squared.output)).output

    recorder = Recorder()
    result = await make_executor(tmp_path, max_parallel_steps=8).execute(
        "run-1", compile_spec(static_loop, tmp_path), {}, recorder
    )

    assert result.output_parameters == {"Output": 14}
    steps = recorder.final()
    assert {steps[f"for-loop-4[{i}]/square"].output_parameters["out"] for i in range(3)} == {
        1,
        4,
        9,
    }
    spans = [interval(steps[f"for-loop-2[{i}]/sleep-interval"]) for i in range(4)]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak == 2


async def test_parallel_for_over_parameter_lists_including_dict_items(tmp_path: Path) -> None:
    @dsl.pipeline(name="param-loop")
    def param_loop(numbers: list, people: list) -> list:
        with dsl.ParallelFor(numbers) as n:
            squared = square(n=n)
        with dsl.ParallelFor(people) as person:
            emit(text=person.who)
            emit_int(value=person.age)
        return dsl.Collected(squared.output)

    recorder = Recorder()
    people = [{"who": "asha", "age": 31}, {"who": "ben", "age": 42}]
    result = await make_executor(tmp_path).execute(
        "run-1",
        compile_spec(param_loop, tmp_path),
        {"numbers": [3, 4, 5], "people": people},
        recorder,
    )

    assert result.output_parameters == {"Output": [9, 16, 25]}
    steps = recorder.final()
    assert steps["for-loop-2[1]/emit"].output_parameters == {"out": "ben"}
    assert steps["for-loop-2[0]/emit-int"].output_parameters == {"out": 31}


async def test_collected_artifacts_of_a_loop_feed_a_step_and_the_outputs(tmp_path: Path) -> None:
    @dsl.container_component
    def join(parts: dsl.Input[list[dsl.Dataset]], out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["join", out, parts])

    @dsl.pipeline(name="collect")
    def collect(words: list) -> list[dsl.Dataset]:
        with dsl.ParallelFor(words) as word:
            written = write_text(text=word)
        join(parts=dsl.Collected(written.outputs["out"]))
        return dsl.Collected(written.outputs["out"])

    recorder = Recorder()
    result = await make_executor(tmp_path).execute(
        "run-1", compile_spec(collect, tmp_path), {"words": ["b", "c", "a"]}, recorder
    )

    assert recorder.final()["join"].output_parameters == {"out": "abc"}
    assert [(a.name, a.step, content(a.uri)) for a in result.outputs] == [
        ("Output", "for-loop-1[0]/write-text", "b"),
        ("Output", "for-loop-1[1]/write-text", "c"),
        ("Output", "for-loop-1[2]/write-text", "a"),
    ]


# Exit handlers and failures


async def test_exit_handler_runs_after_a_failure_and_sees_the_status(tmp_path: Path) -> None:
    @dsl.pipeline(name="exit")
    def exit_pipeline():
        final = report_status()
        with dsl.ExitHandler(final):
            first = fail(message="disk on fire")
            emit(text="never").after(first)

    recorder = Recorder()
    with pytest.raises(PipelineFailed) as failure:
        await make_executor(tmp_path).execute(
            "run-1", compile_spec(exit_pipeline, tmp_path), {}, recorder
        )

    assert "exit-handler-1/fail" in failure.value.error.message
    steps = recorder.final()
    assert steps["exit-handler-1/emit"].state is StepState.SKIPPED
    exit_step = steps["report-status"]
    assert exit_step.state is StepState.SUCCEEDED
    status_arg, executor_input = json.loads(exit_step.output_parameters["out"])
    status = json.loads(status_arg)
    assert status["state"] == "FAILED"
    assert status["pipelineTaskName"] == "exit-handler-1"
    assert "disk on fire" in status["error"]["message"]
    assert json.loads(executor_input)["inputs"]["parameterValues"]["status"] == status


async def test_failure_reports_the_stderr_reason_and_skips_what_follows(tmp_path: Path) -> None:
    @dsl.pipeline(name="failing")
    def failing():
        broken = fail(message="bad input row 7")
        emit(text="after failure").after(broken)
        slow = sleep_interval(seconds=0.8)
        emit(text="after slow").after(slow)

    recorder = Recorder()
    with pytest.raises(PipelineFailed) as failure:
        await make_executor(tmp_path).execute(
            "run-1", compile_spec(failing, tmp_path), {}, recorder
        )

    error = failure.value.error
    assert (error.code, error.reason) == (Code.ABORTED, "STEP_FAILED")
    assert error.message == "step fail failed: RuntimeError: bad input row 7"
    steps = recorder.final()
    assert steps["fail"].state is StepState.FAILED
    assert steps["fail"].error.message == "RuntimeError: bad input row 7"
    assert steps["sleep-interval"].state is StepState.SUCCEEDED, "running steps may finish"
    assert steps["emit"].state is StepState.SKIPPED
    assert steps["emit-2"].state is StepState.SKIPPED, "nothing new starts after a failure"


async def test_a_missing_output_artifact_fails_the_step(tmp_path: Path) -> None:
    @dsl.container_component
    def lazy(out: dsl.Output[dsl.Model]):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["nothing", out.path])

    @dsl.pipeline(name="lazy")
    def lazy_pipeline():
        lazy()

    recorder = Recorder()
    with pytest.raises(PipelineFailed) as failure:
        await make_executor(tmp_path).execute(
            "run-1", compile_spec(lazy_pipeline, tmp_path), {}, recorder
        )

    assert "did not create output artifact 'out'" in failure.value.error.message
    assert recorder.final()["lazy"].state is StepState.FAILED


async def test_an_unknown_image_fails_the_step(tmp_path: Path) -> None:
    @dsl.container_component
    def ghost():
        return dsl.ContainerSpec(image="skit-pipelines/no-such-image:1.0.0", command=TOOL)

    @dsl.pipeline(name="ghost")
    def ghost_pipeline():
        ghost()

    recorder = Recorder()
    with pytest.raises(PipelineFailed, match="no image folder"):
        await make_executor(tmp_path).execute(
            "run-1", compile_spec(ghost_pipeline, tmp_path), {}, recorder
        )
    assert recorder.final()["ghost"].state is StepState.FAILED


# Classic component.yaml placeholders


async def test_if_present_and_concat_placeholders(tmp_path: Path) -> None:
    tool_args = components.load_component_from_file(str(IMAGES / "t_tool" / "component.yaml"))

    @dsl.pipeline(name="classic")
    def classic(text: str = "a b"):
        tool_args(text=text)
        tool_args(text=text, count=7, limit=3)

    recorder = Recorder()
    await make_executor(tmp_path).execute(
        "run-1", compile_spec(classic, tmp_path), {"text": "a b"}, recorder
    )

    steps = recorder.final()
    assert json.loads(steps["tool-args"].output_parameters["argv"]) == [
        "--text",
        "a b",
        "--no-count",
        "pre-a b-200",
    ]
    assert json.loads(steps["tool-args-2"].output_parameters["argv"]) == [
        "--text",
        "a b",
        "--count",
        "7",
        "pre-a b-3",
    ]


# Caching


async def test_a_cached_step_is_restored_without_running(tmp_path: Path) -> None:
    log = tmp_path / "spawns.log"

    @dsl.container_component
    def counted(text: str, out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["count", str(log), out.path, text]
        )

    @dsl.pipeline(name="cached")
    def cached(text: str = "x") -> dsl.Dataset:
        first = counted(text=text)
        return append_text(data=first.outputs["out"], times=1).outputs["out"]

    spec = compile_spec(cached, tmp_path)
    executor = make_executor(tmp_path, cache=InMemoryStepCache())
    first = await executor.execute("run-1", spec, {"text": "x"}, Recorder())
    recorder = Recorder()
    second = await executor.execute("run-2", spec, {"text": "x"}, recorder)

    assert log.read_text() == "ran\n", "the cached step spawned a process"
    assert recorder.states("counted") == [StepState.PENDING, StepState.CACHED]
    assert recorder.states("append-text") == [StepState.PENDING, StepState.CACHED]
    step = recorder.final()["counted"]
    assert step.cached
    # A copy below run-2: deleting run-1 must not take run-2's outputs along.
    assert step.output_artifacts[0].uri.endswith("/runs/run-2/counted/out")
    assert [(a.sha256, a.uri.replace("/runs/run-2/", "/runs/run-1/")) for a in second.outputs] == [
        (a.sha256, a.uri) for a in first.outputs
    ]

    third = Recorder()
    await executor.execute("run-3", spec, {"text": "y"}, third)
    assert log.read_text() == "ran\nran\n"
    assert third.final()["counted"].state is StepState.SUCCEEDED


async def test_a_run_with_the_cache_off_runs_every_step_and_still_fills_the_cache(
    tmp_path: Path,
) -> None:
    log = tmp_path / "spawns.log"

    @dsl.container_component
    def counted(text: str, out: dsl.Output[dsl.Dataset]):
        return dsl.ContainerSpec(
            image=IMAGE, command=TOOL, args=["count", str(log), out.path, text]
        )

    @dsl.pipeline(name="cached")
    def cached(text: str = "x") -> dsl.Dataset:
        return counted(text=text).outputs["out"]

    spec = compile_spec(cached, tmp_path)
    cache = InMemoryStepCache()
    executor = make_executor(tmp_path, cache=cache)
    await executor.execute("run-1", spec, {"text": "x"}, Recorder())
    uncached = Recorder()
    await executor.execute("run-2", spec, {"text": "x"}, uncached, disable_cache=True)

    assert log.read_text() == "ran\nran\n", "the run with the cache off reused a step"
    assert uncached.states("counted") == [
        StepState.PENDING,
        StepState.RUNNING,
        StepState.SUCCEEDED,
    ]
    assert not uncached.final()["counted"].cached
    assert len(cache) == 1
    # Its success replaced run-1's entry: with run-1's files gone, the next run still
    # finds everything it needs in the cache.
    await executor.delete_run("run-1")
    later = Recorder()
    await executor.execute("run-3", spec, {"text": "x"}, later)
    assert log.read_text() == "ran\nran\n"
    assert later.states("counted") == [StepState.PENDING, StepState.CACHED]


# Cancellation


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_cancel_kills_the_process_group_and_reports_cancelled(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    @dsl.container_component
    def sleeper():
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["sleeper", str(pidfile)])

    @dsl.pipeline(name="sleepy")
    def sleepy():
        emit(text="later").after(sleeper())

    recorder = Recorder()
    executor = make_executor(tmp_path, grace=0.5)
    task = asyncio.create_task(
        executor.execute("run-1", compile_spec(sleepy, tmp_path), {}, recorder)
    )
    deadline = time.monotonic() + 20
    while not pidfile.exists() or StepState.RUNNING not in recorder.states("sleeper"):
        assert time.monotonic() < deadline, "the sleeper never started"
        await asyncio.sleep(0.02)
    leader, child = map(int, pidfile.read_text().split())
    assert not _gone(leader) and not _gone(child)

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        # A bound, so a step that survives its SIGKILL fails the test instead of hanging it.
        await asyncio.wait_for(asyncio.shield(task), timeout=15)

    assert time.monotonic() - started >= 0.5, "SIGKILL came before the grace period"
    deadline = time.monotonic() + 5
    while not (_gone(leader) and _gone(child)):
        assert time.monotonic() < deadline, "a step process survived cancel"
        await asyncio.sleep(0.02)
    assert recorder.states("sleeper") == [
        StepState.PENDING,
        StepState.RUNNING,
        StepState.CANCELLED,
    ]
    assert recorder.states("emit") == [StepState.PENDING, StepState.CANCELLED]
    assert not (tmp_path / "work" / "runs" / "run-1").exists()


# Environment


async def test_only_declared_environment_variables_reach_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIT_TEST_SERVICE_SECRET", "do-not-leak")

    @dsl.container_component
    def dump_env(out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["env", out])

    @dsl.pipeline(name="env")
    def env_pipeline() -> str:
        return dump_env().output

    executor = make_executor(
        tmp_path,
        step_env={"SKIT_TEST_DECLARED": "granted", "SKIT_TEST_UNDECLARED": "withheld"},
    )
    result = await executor.execute("run-1", compile_spec(env_pipeline, tmp_path), {}, Recorder())

    env = json.loads(result.output_parameters["Output"])
    assert env["SKIT_TEST_DECLARED"] == "granted"
    assert "SKIT_TEST_UNDECLARED" not in env
    assert "SKIT_TEST_DECLARED_UNSET" not in env
    assert "SKIT_TEST_SERVICE_SECRET" not in env
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    extra = set(env) - {
        "PATH",
        "HOME",
        "LANG",
        "PYTHONUNBUFFERED",
        "TMPDIR",
        "SKIT_TEST_DECLARED",
        "PWD",
        "LC_CTYPE",
    }
    assert not extra, f"unexpected variables {sorted(extra)}"
