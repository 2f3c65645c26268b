"""convert: timestamps as Timestamp.FromDatetime gives them, and runs converted with the
steps of earlier revisions remembered."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from skit_pipelines import convert
from skit_pipelines.domain import ErrorInfo, Run, RunState, Step, StepState

_IST = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 7, 21, 30, 5, 123456, tzinfo=UTC),
        datetime(2026, 12, 7, 21, 30, 5, 999999, tzinfo=_IST),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30),  # naive: local time, as FromDatetime after astimezone
    ],
)
def test_timestamp_is_what_from_datetime_gives(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value.astimezone(UTC))

    assert convert.timestamp(value) == expected


def test_timestamp_of_none_is_none() -> None:
    assert convert.timestamp(None) is None


def _step(name: str, state: StepState = StepState.SUCCEEDED) -> Step:
    now = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    return Step(
        name=name,
        component="add",
        image="python:3.11",
        state=state,
        start_time=now,
        end_time=now + timedelta(seconds=3),
        output_parameters={"Output": 1},
    )


def _run(steps: tuple[Step, ...]) -> Run:
    now = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    return Run(
        id="r1",
        pipeline="chain",
        pipeline_version="v1",
        parameters={"start": 0},
        labels={"team": "slu"},
        state=RunState.RUNNING,
        create_time=now,
        update_time=now,
        revision=3,
        start_time=now,
        steps=steps,
    )


def test_a_run_with_remembered_steps_is_the_run_converted_afresh() -> None:
    steps = convert.StepMessages()
    first = _run((_step("add-1"), _step("add-2", StepState.RUNNING)))
    changed = replace(first.steps[1], state=StepState.FAILED, error=ErrorInfo(2, "exit 1"))
    second = replace(first, revision=4, steps=(first.steps[0], changed))

    assert convert.run(first, steps) == convert.run(first)
    assert convert.run(second, steps) == convert.run(second)


def test_a_remembered_message_is_not_changed_by_the_run_it_went_into() -> None:
    steps = convert.StepMessages()
    step = _step("add-1")
    message = convert.run(_run((step,)), steps)
    message.steps[0].state = 0  # type: ignore[assignment]  # a caller changing its copy

    assert convert.run(_run((step,)), steps).steps[0] == convert.step(step)
