"""download-tagged-dataset end to end on the demo data: the run controller, the local
backend and the local executor in process, running the real component."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import csv
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skit_components.annotations import NewTask, ProjectSpec, open_store
from skit_components.annotations.labeling import tag_to_result
from skit_components.db import connect
from skit_pipelines.domain import Run, RunState, StepState

PIPELINE = "download_tagged_dataset"
pytest_plugins = ["skit_testing.label_studio"]


def output_csv(run: Run, name: str) -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    path = Path(unquote(urlparse(artifact.uri).path))
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def test_defaults_download_every_intent_task_of_the_demo_store(run_pipeline, demo_env):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    rows = output_csv(run, "dataset")
    assert run.output_parameters["row_count"] == len(rows)
    with connect(demo_env["ANNOTATIONS_DB_URL"]) as db:
        (tasks,) = db.fetchone(
            "SELECT count(*) FROM annotation_tasks t JOIN annotation_projects p "
            "ON p.id = t.project_id WHERE p.task_type = 'intent'"
        )
    assert len(rows) == tasks > 1000
    assert {r["project_id"] for r in rows} == {"11", "12", "13", "4101"}
    assert {r["source"] for r in rows} == {"label_studio", "tog"}

    # Every task names a real turn of the calls database, with that turn's prediction.
    with connect(demo_env["CALLS_DB_URL"]) as db:
        turns = {
            uuid: (call_uuid, intent)
            for uuid, call_uuid, intent in db.fetchall(
                "SELECT t.uuid, c.uuid, t.intent FROM turns t JOIN calls c ON c.id = t.call_id"
            )
        }
    for row in rows:
        assert turns[row["raw.conversation_uuid"]] == (row["raw.call_uuid"], row["raw.intent"])

    # The labels are people's: mostly the bot's prediction, sometimes not, legacy names in
    # the Tog job, and a few gold tasks.
    labels = [json.loads(r["tag"])["choices"][0] for r in rows]
    agree = sum(label == r["raw.intent"] for label, r in zip(labels, rows, strict=True))
    assert 0.6 < agree / len(rows) < 0.97
    tog = {label for label, r in zip(labels, rows, strict=True) if r["source"] == "tog"}
    assert {"yes", "ptp"} & tog and "_confirm_" in tog
    assert 0.02 < sum(r["is_gold"] == "true" for r in rows) / len(rows) < 0.1


async def test_all_annotations_in_a_date_range_of_one_job(run_pipeline):
    run = await run_pipeline(
        job_ids=[4101],
        start_date="2026-10-10",
        end_date="2026-10-20",
        timezone="Asia/Kolkata",
        all_annotations=True,
    )
    assert run.state is RunState.SUCCEEDED, run.error
    rows = output_csv(run, "dataset")
    assert rows and {r["project_id"] for r in rows} == {"4101"}
    days = {r["tagged_time"][:10] for r in rows}
    assert min(days) >= "2026-10-10" and max(days) <= "2026-10-20"
    assert all(r["tagged_time"].endswith("+05:30") for r in rows)
    # Several annotations of one task: some tasks were labelled twice.
    assert len({r["data_id"] for r in rows}) < len(rows)


async def test_an_unknown_project_fails_the_run_with_one_clear_reason(run_pipeline):
    run = await run_pipeline(project_ids=[999])
    assert run.state is RunState.FAILED
    (step,) = run.steps
    assert step.state is StepState.FAILED
    assert "unknown Label Studio project ids [999]" in run.error.message
    assert not run.outputs


@pytest.mark.xdist_group("label-studio-download-tagged-dataset")
async def test_label_studio_step_env_reads_a_real_label_studio(run_pipeline, label_studio):
    """With LABEL_STUDIO_URL/TOKEN in the step env (as SKIT_STEP_ENV_* gives them), the
    step reads Label Studio instead of the demo store it also has."""
    store = open_store(label_studio.env)
    project = store.create_project(ProjectSpec("Pipeline intents", "intent", ("yes", "no")))
    store.push_tasks(
        project.id, [NewTask(f"turn:{n}", {"text": f"turn {n}", "n": n}) for n in range(4)]
    )
    store.close()
    for task in label_studio.tasks(project.id)[:3]:
        label_studio.annotate(task["id"], tag_to_result("intent", {"choices": ["yes"]}))

    run = await run_pipeline(extra_env=label_studio.env)
    assert run.state is RunState.SUCCEEDED, run.error
    rows = output_csv(run, "dataset")
    assert run.output_parameters["row_count"] == len(rows) == 3
    assert {r["project_id"] for r in rows} == {str(project.id)}
    assert {r["tag"] for r in rows} == {'{"choices": ["yes"]}'}
    assert sorted(r["raw.n"] for r in rows) == ["0", "1", "2"]

    wrong = {**label_studio.env, "LABEL_STUDIO_TOKEN": "0" * 40}
    run = await run_pipeline(extra_env=wrong, project_ids=[project.id])
    assert run.state is RunState.FAILED
    assert "refused the token (HTTP 401" in run.error.message
    assert not run.outputs
