"""The DSL's control flow with Python components: conditions, dsl.OneOf, loops, fan-in,
exit handlers, sub-pipelines, retries, caching and the pipeline/task placeholders."""

# No `from __future__ import annotations`: kfp reads component signatures' real types.

import itertools
import json
from pathlib import Path

from kfp import dsl

from skit_pipelines.domain import StepState

BASE = "python:3.11"


@dsl.component(base_image=BASE)
def side(pick: int) -> str:
    return ["heads", "tails", "draw"][pick]


@dsl.component(base_image=BASE)
def print_and_return(text: str) -> str:
    print(text)
    return text


@dsl.component(base_image=BASE)
def special_print_and_return(text: str, output_key: dsl.OutputPath(str)):
    with open(output_key, "w") as f:
        f.write(text)


@dsl.pipeline(name="roll-die")
def roll_die(pick: int) -> str:
    flip = side(pick=pick)
    with dsl.If(flip.output == "heads"):
        t1 = print_and_return(text="Got heads!")
    with dsl.Elif(flip.output == "tails"):
        t2 = print_and_return(text="Got tails!")
    with dsl.Else():
        t3 = special_print_and_return(text="Draw!")
    return dsl.OneOf(t1.output, t2.output, t3.outputs["output_key"])


async def test_if_elif_else_with_one_of_through_a_sub_pipeline(kfp_local):
    """Adapted from if_elif_else_with_oneof_parameters.py (a given side, not a random one)."""

    @dsl.pipeline(name="outer-die")
    def outer(pick: int) -> str:
        rolled = roll_die(pick=pick)
        return print_and_return(text=rolled.output).output

    results = [(await kfp_local.succeed(outer, {"pick": p})) for p in (0, 1, 2)]

    assert [r.output_parameters["Output"] for r in results] == [
        "Got heads!",
        "Got tails!",
        "Draw!",
    ]
    states = results[2].states()
    assert states["roll-die/condition-branches-1/condition-4/special-print-and-return"] is (
        StepState.SUCCEEDED
    )
    assert states["roll-die/condition-branches-1/condition-2/print-and-return"] is (
        StepState.SKIPPED
    )


@dsl.component(base_image=BASE)
def flip(value: int) -> str:
    return "heads" if value % 2 == 0 else "tails"


@dsl.component(base_image=BASE)
def number(value: int) -> int:
    return value


async def test_nested_conditions(kfp_local):
    """Adapted from pipeline_with_nested_conditions.py."""

    @dsl.pipeline(name="nested-conditions")
    def pipeline(a: int = 2, b: int = 7):
        first = flip(value=a)
        with dsl.If(first.output == "heads"):
            second = number(value=b)
            with dsl.If(second.output > 5):
                print_and_return(text="heads and big")
            with dsl.If(second.output <= 5):
                print_and_return(text="heads and small")
        with dsl.If(first.output == "tails"):
            print_and_return(text="tails")

    ran = await kfp_local.succeed(pipeline)

    ran_texts = {
        step.output_parameters.get("Output")
        for step in ran.steps.values()
        if step.component == "print-and-return" and step.state is StepState.SUCCEEDED
    }
    assert ran_texts == {"heads and big"}


@dsl.component(base_image=BASE)
def double(num: int, out_dataset: dsl.Output[dsl.Dataset]) -> int:
    with open(out_dataset.path, "w") as f:
        f.write(str(2 * num))
    return 2 * num


@dsl.component(base_image=BASE)
def add_all(nums: list[int]) -> int:
    return sum(nums)


@dsl.component(base_image=BASE)
def add_datasets(in_datasets: dsl.Input[list[dsl.Dataset]], out_dataset: dsl.Output[dsl.Dataset]):
    total = 0
    for dataset in in_datasets:
        with open(dataset.path) as f:
            total += int(f.read())
    with open(out_dataset.path, "w") as f:
        f.write(str(total))


async def test_parallel_for_with_fan_in_of_parameters_and_artifacts(kfp_local):
    """Adapted from parallelfor_fan_in/parameters_simple.py and artifacts_simple.py."""

    @dsl.pipeline(name="fan-in")
    def pipeline(items: list[int] = [1, 2, 3]) -> int:  # noqa: B006
        with dsl.ParallelFor(items, parallelism=2) as x:
            t = double(num=x)
        add_datasets(in_datasets=dsl.Collected(t.outputs["out_dataset"]))
        return add_all(nums=dsl.Collected(t.outputs["Output"])).output

    ran = await kfp_local.succeed(pipeline)

    assert ran.output_parameters == {"Output": 12}
    assert kfp_local.content(ran.artifact("add-datasets", "out_dataset")) == "12"
    loop = sorted(name for name in ran.steps if "double" in name)
    assert loop == [f"for-loop-1[{i}]/double" for i in range(3)]


@dsl.component(base_image=BASE)
def pair(a: str, b: int) -> str:
    return f"{a}{b}"


async def test_nested_loops_over_static_and_dict_items(kfp_local):
    """Adapted from pipeline_with_loops.py: loop items that are dicts, nested loops."""

    @dsl.pipeline(name="nested-loops")
    def pipeline(
        rows: list[dict] = [{"a": "x", "b": 1}, {"a": "y", "b": 2}],  # noqa: B006
    ) -> list[str]:
        with dsl.ParallelFor(rows) as row, dsl.ParallelFor([10, 20]) as offset:
            inner = pair(a=row.a, b=offset)
        return dsl.Collected(inner.output)

    ran = await kfp_local.succeed(pipeline)

    # Collected from a nested loop: one list per outer iteration.
    assert ran.output_parameters == {"Output": [["x10", "x20"], ["y10", "y20"]]}


@dsl.component(base_image=BASE)
def fail_op(message: str):
    raise RuntimeError(message)


@dsl.component(base_image=BASE)
def get_run_state(status: dict) -> str:
    return f"{status['state']}:{status['pipelineTaskName']}:{status['error'].get('code')}"


@dsl.component(base_image=BASE)
def exit_op(status: dsl.PipelineTaskFinalStatus) -> str:
    return f"{status.state} {status.pipeline_task_name} {status.error_message}"


async def test_exit_handlers_run_after_a_failure_with_its_final_status(kfp_local):
    """Adapted from pipeline_with_exit_handler.py and pipeline_with_task_final_status.py."""

    @dsl.pipeline(name="exit-handler")
    def pipeline(message: str = "Hello World!"):
        handler = exit_op()
        with dsl.ExitHandler(handler):
            print_and_return(text=message)
            fail_op(message="Task failed.")

    ran = await kfp_local.run(pipeline)

    assert ran.steps["exit-handler-1/fail-op"].state is StepState.FAILED
    assert ran.steps["exit-handler-1/print-and-return"].state is StepState.SUCCEEDED
    assert ran.steps["exit-op"].state is StepState.SUCCEEDED
    state, task, message = ran.parameter("exit-op").split(" ", 2)
    assert (state, task) == ("FAILED", "exit-handler-1")
    assert "RuntimeError: Task failed." in message
    assert ran.error is not None
    assert ran.error.message.startswith("step exit-handler-1/fail-op failed:")


async def test_an_exit_task_sees_success(kfp_local):
    @dsl.pipeline(name="exit-success")
    def pipeline():
        handler = exit_op()
        with dsl.ExitHandler(handler):
            print_and_return(text="fine")

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("exit-op") == "SUCCEEDED exit-handler-1 None"


@dsl.component(base_image=BASE)
def flaky(counter: str, failures: int) -> int:
    from pathlib import Path

    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} failed")
    return attempt


async def test_retries_until_an_attempt_succeeds(kfp_local, tmp_path: Path):
    @dsl.pipeline(name="retries")
    def pipeline(counter: str) -> int:
        task = flaky(counter=counter, failures=2).set_retry(num_retries=3, backoff_duration="0s")
        return task.output

    ran = await kfp_local.succeed(pipeline, {"counter": str(tmp_path / "counter")})

    assert ran.output_parameters == {"Output": 3}
    assert ran.steps["flaky"].attempt == 3


@dsl.component(base_image=BASE)
def count_runs(log: str, text: str) -> str:
    with open(log, "a") as f:
        f.write("ran\n")
    return text.upper()


async def test_caching_reuses_identical_steps_unless_turned_off(kfp_cached, tmp_path: Path):
    log = tmp_path / "log"

    @dsl.pipeline(name="caching")
    def pipeline(log: str, text: str = "a"):
        count_runs(log=log, text=text).set_display_name("cached")
        count_runs(log=log, text=text).set_display_name("uncached").set_caching_options(False)

    first = await kfp_cached.succeed(pipeline, {"log": str(log)})
    second = await kfp_cached.succeed(pipeline, {"log": str(log)})
    third = await kfp_cached.succeed(pipeline, {"log": str(log), "text": "b"})

    assert first.states() == {"cached": StepState.SUCCEEDED, "uncached": StepState.SUCCEEDED}
    assert second.states() == {"cached": StepState.CACHED, "uncached": StepState.SUCCEEDED}
    assert second.parameter("cached") == "A"
    assert third.states()["cached"] is StepState.SUCCEEDED
    assert log.read_text().count("ran") == 5


@dsl.component(base_image=BASE)
def print_op(msg: str, value: str) -> str:
    return f"{msg} {value}"


async def test_pipeline_and_task_placeholders(kfp_local):
    """Adapted from pipeline_with_placeholders.py."""

    @dsl.pipeline(name="placeholders")
    def pipeline():
        print_op(msg="job name:", value=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).set_display_name(
            "job-name"
        )
        print_op(msg="job id:", value=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_display_name("job-id")
        print_op(msg="task name:", value=dsl.PIPELINE_TASK_NAME_PLACEHOLDER).set_display_name(
            "task-name"
        )
        print_op(msg="task id:", value=dsl.PIPELINE_TASK_ID_PLACEHOLDER).set_display_name("task-id")

    ran = await kfp_local.succeed(pipeline)

    assert ran.parameter("job-name") == "job name: run-1"
    assert ran.parameter("job-id") == "job id: run-1"
    assert ran.parameter("task-name") == "task name: task-name"
    assert ran.parameter("task-id") == "task id: run-1/task-id"


async def test_parameters_containing_format_strings(kfp_local):
    """Adapted from pipeline_with_params_containing_format.py: f-strings of channels."""

    @dsl.pipeline(name="formats")
    def pipeline(name: str = "KFP") -> str:
        first = print_and_return(text=f"Hello {name}")
        second = print_and_return(text=f"{first.output}, again. {{not a placeholder}}")
        return second.output

    ran = await kfp_local.succeed(pipeline)

    assert ran.output_parameters == {"Output": "Hello KFP, again. {not a placeholder}"}


async def test_sub_pipelines_in_a_loop(kfp_local):
    """Adapted from pipeline_in_pipeline_complex.py (a Python component in place of echo)."""

    @dsl.pipeline(name="inner-pipeline")
    def graph_component(msg: str):
        task = print_and_return(text=msg)
        with dsl.If(task.output == "Hello"):
            print_op(msg="world", value="!").set_display_name("world")
        with dsl.If(task.output != "Hello"):
            print_op(msg="Bye", value="!").set_display_name("bye")

    @dsl.pipeline(name="pipeline-in-pipeline")
    def pipeline(msg: str = "Hello"):
        print_and_return(text=msg)
        with dsl.ParallelFor(["Hello", "world!"]) as item:
            graph_component(msg=item)

    ran = await kfp_local.succeed(pipeline)

    succeeded = sorted(
        json.dumps([name.split("/")[0], name.rsplit("/", 1)[-1]])
        for name, step in ran.steps.items()
        if step.state is StepState.SUCCEEDED and step.component.startswith("print-op")
    )
    assert succeeded == [
        json.dumps(["for-loop-2[0]", "world"]),
        json.dumps(["for-loop-2[1]", "bye"]),
    ]


async def test_after_orders_independent_steps(kfp_local, tmp_path: Path):
    """Adapted from pipeline_with_after.py."""
    log = tmp_path / "order"

    @dsl.pipeline(name="after")
    def pipeline(log: str):
        first = count_runs(log=log, text="1").set_display_name("first")
        second = count_runs(log=log, text="2").set_display_name("second").after(first)
        count_runs(log=log, text="3").set_display_name("third").after(second)

    ran = await kfp_local.succeed(pipeline, {"log": str(log)})

    steps = [ran.steps[n] for n in ("first", "second", "third")]
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(steps))
