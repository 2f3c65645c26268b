"""A run's steps are stored in execution order, whatever order a backend reports them in:
by the DAG (a step after those it waits for; a loop's or a condition's steps in the place
of the task holding them), then by start time, then by name. RetryRun's reused steps too."""

# No `from __future__ import annotations`: kfp reads the pipeline signature's real types.

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from skit_pipelines.catalog import Catalog, StepOrder, pipeline_from_spec
from skit_pipelines.domain import ErrorInfo, Pipeline, Step, StepState
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore

ECHO = """
name: Echo
inputs:
- {name: text, type: String}
outputs:
- {name: out, type: Dataset}
implementation:
  container:
    image: skit-pipelines/echo:0.1.0
    command: [python3, -c, "import sys; open(sys.argv[2], 'w').write(sys.argv[1])"]
    args: [{inputValue: text}, {outputPath: out}]
"""
T0 = datetime(2026, 11, 26, 10, tzinfo=UTC)
# The execution order of the pipeline below when no step has started; display names are
# chosen so that it is not the alphabetical one.
EXECUTION_ORDER = [
    "beta-side",
    "zeta-fetch",
    "alpha-train",
    "condition-3/aardvark-publish",
    "for-loop-2[0]/body",
    "for-loop-2[1]/body",
    "for-loop-2[10]/body",
]


@pytest.fixture(scope="module")
def ordered(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    from kfp import compiler, components, dsl

    echo = components.load_component_from_text(ECHO)

    @dsl.pipeline(name="ordered")
    def pipeline(flag: bool = True):
        fetch = echo(text="a").set_display_name("zeta-fetch")
        echo(text="b").set_display_name("beta-side")
        train = echo(text="c").after(fetch).set_display_name("alpha-train")
        with dsl.ParallelFor(["x", "y"]) as item:
            echo(text=item).after(train).set_display_name("body")
        with dsl.If(flag == True):  # noqa: E712 - a kfp condition, not a Python comparison
            echo(text="d").after(train).set_display_name("aardvark-publish")

    path = tmp_path_factory.mktemp("ordered") / "ordered.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return pipeline_from_spec(yaml.safe_load(path.read_text()))


@pytest.fixture
async def controller(
    tmp_path: Path, ordered: Pipeline, fake_backend_class: Any
) -> AsyncIterator[RunController]:
    store = SqliteRunStore(tmp_path / "runs.db")
    backend = fake_backend_class()
    controller = RunController(store, Catalog({ordered.id: ordered}), backend)
    backend.start(controller)
    try:
        yield controller
    finally:
        await store.close()


async def names_after(controller: RunController, run_id: str) -> list[str]:
    return [step.name for step in (await controller.get_run(f"runs/{run_id}")).steps]


async def test_pending_steps_are_stored_in_dag_order_not_as_reported(controller) -> None:
    run = await controller.create_run(CreateRunInput(pipeline="pipelines/ordered"))
    for name in sorted(EXECUTION_ORDER, reverse=True):
        await controller.step_changed(run.id, Step(name=name))

    assert await names_after(controller, run.id) == EXECUTION_ORDER


async def test_steps_reported_together_are_one_revision_in_dag_order(controller) -> None:
    run = await controller.create_run(CreateRunInput(pipeline="pipelines/ordered"))
    await controller.step_changed(run.id, *(Step(name=n) for n in reversed(EXECUTION_ORDER)))

    stored = await controller.get_run(f"runs/{run.id}")
    assert stored.revision == run.revision + 1
    assert [step.name for step in stored.steps] == EXECUTION_ORDER
    # A later change of one of them replaces it in place.
    await controller.step_changed(run.id, Step(name="alpha-train", state=StepState.RUNNING))
    stored = await controller.get_run(f"runs/{run.id}")
    assert stored.revision == run.revision + 2
    assert [step.state for step in stored.steps] == [
        StepState.RUNNING if step.name == "alpha-train" else StepState.PENDING
        for step in stored.steps
    ]


async def test_steps_of_one_level_are_ordered_by_start_time(controller) -> None:
    run = await controller.create_run(CreateRunInput(pipeline="pipelines/ordered"))
    for name in EXECUTION_ORDER:
        await controller.step_changed(run.id, Step(name=name))
    later = [("for-loop-2[10]/body", 1), ("for-loop-2[0]/body", 2), ("zeta-fetch", 0)]
    for name, seconds in later:
        started = T0 + timedelta(seconds=seconds)
        await controller.step_changed(
            run.id, Step(name=name, state=StepState.RUNNING, start_time=started)
        )

    assert await names_after(controller, run.id) == [
        "zeta-fetch",  # started: before its sibling that has not
        "beta-side",
        "alpha-train",
        "condition-3/aardvark-publish",
        "for-loop-2[0]/body",  # iterations keep their own order, by index
        "for-loop-2[1]/body",
        "for-loop-2[10]/body",
    ]


async def test_a_step_the_dag_does_not_name_comes_last(controller) -> None:
    run = await controller.create_run(CreateRunInput(pipeline="pipelines/ordered"))
    for name in ["mystery", "alpha-train", "zeta-fetch"]:
        await controller.step_changed(run.id, Step(name=name))

    assert await names_after(controller, run.id) == ["zeta-fetch", "alpha-train", "mystery"]


async def test_a_retry_lists_its_reused_steps_in_their_place(controller) -> None:
    run = await controller.create_run(CreateRunInput(pipeline="pipelines/ordered"))
    ran = [
        ("zeta-fetch", StepState.SUCCEEDED, 0),
        ("beta-side", StepState.SUCCEEDED, 1),
        ("alpha-train", StepState.FAILED, 2),
    ]
    for name, state, seconds in ran:
        start = T0 + timedelta(seconds=seconds)
        await controller.step_changed(
            run.id, Step(name=name, state=state, start_time=start, end_time=start)
        )
    await controller.run_failed(run.id, ErrorInfo(code=10, message="step alpha-train failed"))

    retry = await controller.retry_run(run.name)
    assert [(s.name, s.state) for s in retry.steps] == [
        ("zeta-fetch", StepState.CACHED),
        ("beta-side", StepState.CACHED),
    ]
    # The failed step runs again and takes its place after them, then what follows it.
    await controller.step_changed(retry.id, Step(name="for-loop-2[0]/body"))
    await controller.step_changed(retry.id, Step(name="alpha-train"))
    assert await names_after(controller, retry.id) == [
        "zeta-fetch",
        "beta-side",
        "alpha-train",
        "for-loop-2[0]/body",
    ]


async def test_a_run_of_a_version_the_server_no_longer_has_keeps_the_reported_order(
    controller,
) -> None:
    run = await controller.create_run(CreateRunInput(pipeline="pipelines/ordered"))
    await controller.store.update_run(
        run.id, lambda stored: replace(stored, pipeline_version="sha256:gone")
    )
    for name in ["alpha-train", "zeta-fetch"]:
        await controller.step_changed(run.id, Step(name=name))

    assert await names_after(controller, run.id) == ["alpha-train", "zeta-fetch"]


def test_the_order_key_places_nested_steps_under_their_task(ordered) -> None:
    order = StepOrder(ordered.spec)

    assert order.place("zeta-fetch") == ((0, -1),)
    assert order.place("alpha-train") == ((1, -1),)
    assert order.place("for-loop-2[3]/body") == ((2, 3), (0, -1))
    assert order.place("condition-3/aardvark-publish") == ((2, -1), (0, -1))
    assert order.place("condition-3/nothing") == ((2, -1), (1 << 30, -1))
