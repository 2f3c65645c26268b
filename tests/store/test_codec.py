"""The stored JSON of runs: artifacts keep their type and metadata, snapshots stored
before artifacts had them still decode, and a run encoded with its steps' remembered JSON
is the run encoded whole."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from skit_pipelines.domain import Artifact, Metric, Run, RunState, Step, StepState
from skit_pipelines.identity_memo import IdentityMemo
from skit_pipelines.store import codec

AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def run_with(*artifacts: Artifact) -> Run:
    return Run(
        id="r",
        pipeline="p",
        pipeline_version="sha256:0",
        parameters={},
        labels={},
        state=RunState.SUCCEEDED,
        create_time=AT,
        update_time=AT,
        revision=3,
        steps=(Step(name="s", state=StepState.SUCCEEDED, output_artifacts=artifacts),),
        outputs=artifacts,
    )


def test_artifact_type_and_metadata_round_trip() -> None:
    metrics = Artifact(
        name="metrics",
        uri="file:///a/m",
        step="s",
        sha256="ab",
        size_bytes=27,
        type="system.Metrics",
        metadata={"accuracy": 0.5, "n": 3, "nested": {"k": ["v"]}},
    )
    run = run_with(metrics)

    decoded = codec.run_from_dict(json.loads(codec.dumps(codec.run_to_dict(run))))

    assert decoded == run
    assert decoded.steps[0].metrics == (
        Metric("accuracy", 0.5, "metrics"),
        Metric("n", 3.0, "metrics"),
    )


def test_snapshots_stored_before_types_and_metadata_decode() -> None:
    plain = Artifact(name="data", uri="file:///a/d", step="s", sha256="cd", size_bytes=4)
    stored = codec.run_to_dict(run_with(plain))
    # As written before artifacts had a type and metadata: neither key is there.
    assert set(stored["outputs"][0]) == {"name", "uri", "step", "sha256", "size_bytes"}

    decoded = codec.run_from_dict(json.loads(codec.dumps(stored)))

    assert decoded.outputs == (plain,)
    assert (decoded.outputs[0].type, decoded.outputs[0].metadata) == ("", {})
    assert decoded.steps[0].metrics == ()


def test_a_run_with_the_cache_off_round_trips() -> None:
    run = replace(run_with(), disable_cache=True)

    decoded = codec.run_from_dict(json.loads(codec.dumps(codec.run_to_dict(run))))

    assert decoded == run and decoded.disable_cache


def test_snapshots_stored_before_the_cache_switch_decode_with_the_cache_on() -> None:
    stored = codec.run_to_dict(run_with())
    # As written before runs could turn the cache off (and still, for the default).
    assert "disable_cache" not in stored

    decoded = codec.run_from_dict(json.loads(codec.dumps(stored)))

    assert decoded == run_with() and not decoded.disable_cache


def _steps(count: int) -> tuple[Step, ...]:
    return tuple(
        Step(name=f"s{i}", state=StepState.SUCCEEDED, start_time=AT, output_parameters={"n": i})
        for i in range(count)
    )


@pytest.mark.parametrize("count", [0, 1, 3, 20])
def test_run_json_is_the_run_encoded_whole(count: int) -> None:
    run = replace(run_with(), steps=_steps(count), disable_cache=count == 1)

    assert codec.run_json(run) == codec.dumps(codec.run_to_dict(run))
    assert codec.run_json(run, codec.StepJson()) == codec.dumps(codec.run_to_dict(run))


def test_run_json_places_the_steps_in_the_run_not_in_a_parameter_like_them() -> None:
    # Values that read '"steps":[]' in the encoded run, before and after its own steps key.
    run = replace(
        run_with(),
        parameters={"steps": [], "nested": {"steps": []}},
        output_parameters={"steps": []},
        labels={"steps": "[]"},
        error=None,
        steps=_steps(2),
    )

    text = codec.run_json(run)

    assert text == codec.dumps(codec.run_to_dict(run))
    assert codec.run_from_dict(json.loads(text)) == run


def test_a_remembered_step_is_encoded_once() -> None:
    encoded: list[str] = []
    steps = _steps(3)

    def counting(step: Step) -> str:
        encoded.append(step.name)
        return codec.step_json(step)

    memo = IdentityMemo(counting, size=16)
    first = replace(run_with(), steps=steps)
    second = replace(first, revision=4, steps=(steps[0], replace(steps[1], attempt=2), steps[2]))

    assert codec.run_json(first, memo) == codec.dumps(codec.run_to_dict(first))
    assert codec.run_json(second, memo) == codec.dumps(codec.run_to_dict(second))
    assert encoded == ["s0", "s1", "s2", "s1"]
