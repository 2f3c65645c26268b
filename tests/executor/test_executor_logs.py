"""Step logs: each attempt's stdout and stderr, kept after the step, readable while written."""

# No `from __future__ import annotations`: kfp reads component signatures' annotations
# as real types, and string annotations break its type checks.

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.domain import LogLine, Step, StepState
from skit_pipelines.executor import (
    ExecutorConfig,
    LocalExecutor,
    PipelineFailed,
    read_log,
    read_step_logs,
    step_log_path,
)

IMAGES = Path(__file__).parent / "images"
IMAGE = "skit-pipelines/t-tool:0.1.0"
TOOL = ["python", "-m", "tool"]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Step] = []

    async def step_changed(self, *steps: Step) -> None:
        self.events.extend(steps)

    def final(self) -> dict[str, Step]:
        return {step.name: step for step in self.events}


def compile_spec(pipeline: Any, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return yaml.safe_load(path.read_text())


def make_executor(tmp_path: Path, logs_root: Path | None = None) -> LocalExecutor:
    return LocalExecutor(
        ExecutorConfig(images_root=IMAGES, work_root=tmp_path / "work", logs_root=logs_root),
        LocalArtifactStore(tmp_path / "artifacts"),
    )


async def collect(lines: Any) -> list[LogLine]:
    return [line async for line in lines]


@dsl.container_component
def chatty(lines: int, delay: float):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["chatty", lines, delay])


@dsl.container_component
def fail(message: str):
    return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["fail", message])


def test_step_log_paths_are_one_safe_component_per_step(tmp_path: Path) -> None:
    path = step_log_path(tmp_path, "run-1", "for-loop-2[0]/square", 3)
    assert path == tmp_path / "run-1" / "for-loop-2%5B0%5D%2Fsquare" / "attempt-3.log"
    assert step_log_path(tmp_path, "run-1", "..", 1).parent.name == "%2E%2E"
    assert step_log_path(tmp_path, "run-1", "a/b", 1) != step_log_path(tmp_path, "run-1", "a_b", 1)
    long = step_log_path(tmp_path, "run-1", "x" * 300, 1).parent.name
    other = step_log_path(tmp_path, "run-1", "x" * 299 + "y", 1).parent.name
    assert len(long) <= 200 and long != other


async def test_the_log_outlives_the_step_with_stderr_marked(tmp_path: Path) -> None:
    @dsl.pipeline(name="talk")
    def talk():
        with dsl.ParallelFor([3]) as n:
            chatty(lines=n, delay=0.0)

    recorder = Recorder()
    await make_executor(tmp_path).execute("run-1", compile_spec(talk, tmp_path), {}, recorder)

    name = "for-loop-2[0]/chatty"
    assert recorder.final()[name].state is StepState.SUCCEEDED
    assert not (tmp_path / "work" / "runs" / "run-1").exists(), "the scratch dir stayed"
    path = step_log_path(tmp_path / "work" / "logs", "run-1", name, 1)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(r) == {"t", "stream", "line"} for r in records)

    lines = await collect(read_log(path))
    assert all(isinstance(line.time, datetime) and line.attempt == 1 for line in lines)
    by_stream = {
        stream: [line.text for line in lines if line.stream == stream]
        for stream in ("stdout", "stderr")
    }
    assert by_stream == {
        "stdout": ["out 0", "out 1", "out 2"],
        "stderr": ["err 0", "err 1", "err 2"],
    }
    assert [line.time for line in lines] == sorted(line.time for line in lines)


async def test_the_last_stderr_line_is_the_error_and_the_log_keeps_all(tmp_path: Path) -> None:
    @dsl.pipeline(name="failing")
    def failing():
        fail(message="disk on fire")

    recorder = Recorder()
    logs = tmp_path / "elsewhere"
    with pytest.raises(PipelineFailed):
        await make_executor(tmp_path, logs_root=logs).execute(
            "run-1", compile_spec(failing, tmp_path), {}, recorder
        )

    assert recorder.final()["fail"].error.message == "RuntimeError: disk on fire"
    assert make_executor(tmp_path, logs_root=logs).logs_root == logs
    lines = await collect(read_log(step_log_path(logs, "run-1", "fail", 1)))
    assert [(line.stream, line.text) for line in lines] == [
        ("stderr", "some progress"),
        ("stderr", "RuntimeError: disk on fire"),
        ("stderr", ""),
        ("stderr", ""),
    ]


async def test_follow_yields_lines_while_a_step_prints_slowly(tmp_path: Path) -> None:
    @dsl.pipeline(name="slow-talk")
    def slow_talk():
        chatty(lines=5, delay=0.3)

    recorder = Recorder()
    run = asyncio.create_task(
        make_executor(tmp_path).execute("run-1", compile_spec(slow_talk, tmp_path), {}, recorder)
    )
    arrivals: list[tuple[float, LogLine]] = []
    async for line in read_step_logs(
        tmp_path / "work" / "logs",
        "run-1",
        "chatty",
        follow=lambda: not run.done(),
        poll_interval=0.05,
    ):
        arrivals.append((time.monotonic(), line))
    await run

    ended = time.monotonic()
    assert [line.text for _, line in arrivals if line.stream == "stdout"] == [
        f"out {i}" for i in range(5)
    ]
    assert len(arrivals) == 10
    assert ended - arrivals[0][0] >= 1.0, "the first line came only once the step ended"


async def test_each_attempt_has_its_own_log(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    @dsl.container_component
    def flaky(out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image=IMAGE, command=TOOL, args=["flaky", str(counter), "1", out])

    @dsl.pipeline(name="flaky")
    def flaky_pipeline():
        flaky().set_retry(num_retries=1)

    await make_executor(tmp_path).execute(
        "run-1", compile_spec(flaky_pipeline, tmp_path), {}, Recorder()
    )

    logs = tmp_path / "work" / "logs"
    first = await collect(read_step_logs(logs, "run-1", "flaky", attempt=1))
    assert [(line.stream, line.text) for line in first] == [
        ("stdout", "attempt 1 starting"),
        ("stderr", "flaky: attempt 1 failed"),
    ]
    every = await collect(read_step_logs(logs, "run-1", "flaky"))
    assert [(line.attempt, line.text) for line in every] == [
        (1, "attempt 1 starting"),
        (1, "flaky: attempt 1 failed"),
        (2, "attempt 2 starting"),
    ]
    with pytest.raises(FileNotFoundError):
        await collect(read_step_logs(logs, "run-1", "flaky", attempt=3))
    assert await collect(read_step_logs(logs, "run-1", "never-ran")) == []


async def test_read_log_waits_for_the_file_and_for_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "attempt-2.log"
    writing = True

    async def write() -> None:
        nonlocal writing
        await asyncio.sleep(0.1)
        with path.open("wb", buffering=0) as f:
            f.write(b'{"t": "2025-01-01T00:00:00+00:00", "stream": "stdout", "line": "one"}\n')
            await asyncio.sleep(0.1)
            f.write(b'{"t": "2025-01-01T00:00:01+00:00", "stream": "std')
            await asyncio.sleep(0.1)
            f.write(b'err", "line": "two"}\n')
        writing = False

    writer = asyncio.create_task(write())
    lines = await collect(read_log(path, follow=lambda: writing, poll_interval=0.02))
    await writer

    assert [(line.stream, line.text, line.attempt) for line in lines] == [
        ("stdout", "one", 2),
        ("stderr", "two", 2),
    ]
    with pytest.raises(FileNotFoundError):
        await collect(read_log(tmp_path / "attempt-9.log"))
