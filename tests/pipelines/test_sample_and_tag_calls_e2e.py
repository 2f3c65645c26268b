"""sample-and-tag-calls end to end on the demo data: the run controller, the local backend
and the local executor in process, running the real fetch_calls, pre_annotate_turns and
push_annotation_tasks components against the embedded annotation store and the demo model
registry."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import csv
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skit_components.db import connect
from skit_components.model_registry import ModelRegistry
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.catalog import resolve_parameters
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.errors import InvalidArgument

PIPELINE = "sample_and_tag_calls"
ROOT = Path(__file__).resolve().parents[2]
WRITES_DEMO_DATA = True


def artifact_rows(run: Run, name: str) -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    with Path(unquote(urlparse(artifact.uri).path)).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tasks(env: dict[str, str], project_id: int) -> list[tuple]:
    """(key, data, prediction tag, prediction model) of a project's tasks in the store."""
    with connect(env["ANNOTATIONS_DB_URL"]) as db:
        rows = db.fetchall(
            "SELECT t.task_key, t.data, p.tag, p.model_version FROM annotation_tasks t "
            "LEFT JOIN annotation_predictions p ON p.task_id = t.id "
            "WHERE t.project_id = ? ORDER BY t.id",
            (project_id,),
        )
    return [(r[0], json.loads(r[1]), json.loads(r[2]) if r[2] else None, r[3]) for r in rows]


def project(env: dict[str, str], project_id: int) -> tuple[str, str, list[str]]:
    with connect(env["ANNOTATIONS_DB_URL"]) as db:
        row = db.fetchone(
            "SELECT name, task_type, labels FROM annotation_projects WHERE id = ?", (project_id,)
        )
    assert row is not None
    return row[0], row[1], json.loads(row[2])


async def test_defaults_push_pre_annotated_turns_and_calls_once(run_pipeline, demo_env):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.state for s in run.steps] == [StepState.SUCCEEDED] * 4
    out = run.output_parameters
    production = ModelRegistry.from_url(demo_env["MODEL_REGISTRY_URL"]).production("slu")
    assert production is not None and out["prediction_model_version"] == production.version

    turns = artifact_rows(run, "turns")
    assert len(turns) == 100 and all(t["primary_utterance"] for t in turns)
    turn_tasks = tasks(demo_env, out["turn_project_id"])
    assert out["turn_tasks_created"] == len(turn_tasks) == 100
    assert [t[0] for t in turn_tasks] == [f"turn:{t['conversation_uuid']}" for t in turns]
    # Every task starts from the production model's intent, which is one of the choices.
    name, task_type, labels = project(demo_env, out["turn_project_id"])
    assert (name, task_type) == ("Sampled turns", "intent")
    predicted = [t["predicted_intent"] for t in turns]
    assert [t[2] for t in turn_tasks] == [{"choices": [p]} for p in predicted]
    assert {t[3] for t in turn_tasks} == {production.version}
    assert set(predicted) <= set(labels)
    assert [t[1]["text"] for t in turn_tasks] == [t["primary_utterance"] for t in turns]

    calls = {t["call_uuid"] for t in turns}
    call_tasks = tasks(demo_env, out["call_project_id"])
    assert out["call_tasks_created"] == len(call_tasks) == 50
    # The turns are a sample of the caller turns of the sampled calls.
    assert calls < {t[1]["call_uuid"] for t in call_tasks}
    user_turns = sum(turn["role"] == "user" for t in call_tasks for turn in t[1]["turns"])
    assert user_turns > 100
    assert project(demo_env, out["call_project_id"])[:2] == ("Sampled calls", "call")
    assert all(t[1]["dialogue"] and t[2] is None for t in call_tasks)

    # The same run again: nothing is added twice.
    again = await run_pipeline()
    assert again.state is RunState.SUCCEEDED, again.error
    o = again.output_parameters
    assert (o["turn_project_id"], o["call_project_id"]) == (
        out["turn_project_id"],
        out["call_project_id"],
    )
    assert (o["turn_tasks_created"], o["turn_tasks_existing"]) == (0, 100)
    assert (o["call_tasks_created"], o["call_tasks_existing"]) == (0, 50)
    assert len(tasks(demo_env, out["turn_project_id"])) == 100


async def test_filters_without_pre_annotation_into_an_existing_project(run_pipeline, demo_env):
    first = await run_pipeline(lang="hi", call_quantity=3, turn_quantity=0, pre_annotate=False)
    assert first.state is RunState.SUCCEEDED, first.error
    project_id = first.output_parameters["turn_project_id"]
    turn_tasks = tasks(demo_env, project_id)
    assert turn_tasks and all(t[2] is None for t in turn_tasks)
    assert {t[1]["language"] for t in turn_tasks} == {"hi"}
    assert first.output_parameters["prediction_model_version"] == ""

    # Every Hindi call into the same project, by id: only the new turns are added.
    second = await run_pipeline(
        lang="hi",
        call_quantity=10_000,
        turn_quantity=0,
        pre_annotate=False,
        turn_project_id=project_id,
    )
    assert second.state is RunState.SUCCEEDED, second.error
    o = second.output_parameters
    assert o["turn_project_id"] == project_id
    assert o["turn_tasks_existing"] == len(turn_tasks) and o["turn_tasks_created"] >= 1
    assert len(tasks(demo_env, project_id)) == len(turn_tasks) + o["turn_tasks_created"]


async def test_an_empty_sample_fails_the_run_with_one_clear_line(run_pipeline, demo_env):
    run = await run_pipeline(start_date="2020-01-01", end_date="2020-01-02")
    assert run.state is RunState.FAILED
    assert "fetch_calls: no calls match the filters: start_date='2020-01-01'" in run.error.message
    assert [s.name for s in run.steps if s.state is StepState.FAILED] == ["fetch-calls"]
    with connect(demo_env["ANNOTATIONS_DB_URL"]) as db:
        assert (
            db.fetchone("SELECT id FROM annotation_projects WHERE name = 'Sampled turns'") is None
        )


async def test_an_unknown_project_fails_the_push(run_pipeline):
    run = await run_pipeline(call_quantity=2, turn_project_id=987654)
    assert run.state is RunState.FAILED
    failed = [s for s in run.steps if s.state is StepState.FAILED]
    assert [s.name for s in failed] == ["push-annotation-tasks"]
    assert "unknown annotation project 987654" in run.error.message


async def test_an_unreachable_label_studio_fails_the_push(run_pipeline):
    run = await run_pipeline(
        extra_env={"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_TOKEN": "x" * 40},
        call_quantity=2,
    )
    assert run.state is RunState.FAILED
    assert "127.0.0.1:9" in run.error.message and "\n" not in run.error.message


async def test_a_project_title_too_long_is_refused_at_create_run(run_pipeline):
    with pytest.raises(InvalidArgument) as refused:
        await run_pipeline(turn_project_title="x" * 51)
    assert [v.field for v in refused.value.violations] == ["run.parameters.turn_project_title"]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"turn_quantity": -1}, "turn_quantity"),
        ({"call_project_id": -2}, "call_project_id"),
        ({"call_project_title": "ab"}, "call_project_title"),
        ({"flow_ids": [0]}, "flow_ids[0]"),
        ({"end_date": "2026-10-01", "start_date": "2026-10-02"}, "end_date"),
    ],
)
def test_what_a_step_would_refuse_is_refused_at_create_run(catalog, given, field):
    (pipeline,) = catalog.list()
    with pytest.raises(InvalidArgument) as refused:
        resolve_parameters(pipeline, given)
    assert [v.field for v in refused.value.violations] == [f"run.parameters.{field}"]


async def test_with_s3_artifacts(run_pipeline, demo_env, bucket, s3_endpoint, s3_client):
    store = S3ArtifactStore.from_url(f"s3://{bucket}/runs", S3Settings(endpoint_url=s3_endpoint))
    run = await run_pipeline(artifacts=store, call_quantity=5, turn_quantity=10)
    assert run.state is RunState.SUCCEEDED, run.error
    (turns,) = [a for a in run.outputs if a.name == "turns"]
    assert turns.uri.startswith(f"s3://{bucket}/runs/")
    key = turns.uri.removeprefix(f"s3://{bucket}/")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    rows = list(csv.DictReader(body.splitlines()))
    assert len(rows) == 10 == run.output_parameters["turn_tasks_created"]
    assert len(tasks(demo_env, run.output_parameters["turn_project_id"])) == 10
