"""generate-and-upload-conversations end to end on the demo data: the run controller, the
local backend and the local executor in process, running the real add_situations,
generate_conversations, push_annotation_tasks and record_conversations components against
the demo metrics database and the embedded annotation store (and, for the LLM generator,
a local OpenAI-compatible server)."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skit_components.db import connect
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.catalog import resolve_parameters
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.errors import InvalidArgument
from skit_testing.fake_openai import FakeChatServer, Reply, Request, chat_reply

PIPELINE = "generate_and_upload_conversations"
ROOT = Path(__file__).resolve().parents[2]
WRITES_DEMO_DATA = True
NEW = ["the caller was abroad and missed the due date", "the caller wants to pay in two parts"]


def conversations(run: Run) -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == "conversations"]
    text = Path(unquote(urlparse(artifact.uri).path)).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def conversation_tasks(env: dict[str, str], project_id: int) -> dict[str, dict]:
    with connect(env["ANNOTATIONS_DB_URL"]) as db:
        rows = db.fetchall(
            "SELECT task_key, data FROM annotation_tasks WHERE project_id = ?", (project_id,)
        )
    return {row[0]: json.loads(row[1]) for row in rows}


def recorded(env: dict[str, str]) -> list[tuple]:
    """(situation_id, conversation turns, project, key, annotation project, prompt's client,
    template, model) of the keyed (this pipeline's) conversations."""
    with connect(env["METRICS_DB_URL"]) as db:
        rows = db.fetchall(
            "SELECT c.situation_id, c.conversation, c.project_name, c.conversation_key,"
            " c.annotation_project_id, p.client_id, p.template_id, p.model, p.situation_id"
            " FROM generated_conversations c JOIN prompt_details p ON p.id = c.prompt_id"
            " WHERE c.conversation_key <> '' ORDER BY c.id"
        )
    for row in rows:
        assert row[0] == row[8], "a conversation's prompt is of another situation"
    return [(r[0], json.loads(r[1]), *r[2:8]) for r in rows]


async def test_defaults_generate_upload_and_record_once(run_pipeline, demo_env):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.state for s in run.steps] == [StepState.SUCCEEDED] * 4
    out = run.output_parameters
    assert out["situation_ids"] == [] and out["situations_added"] == 0
    assert out["generator_used"] == "template" and out["generated_count"] == 20
    written = conversations(run)
    tasks = conversation_tasks(demo_env, out["project_id"])
    assert out["tasks_created"] == len(tasks) == 20 and out["tasks_existing"] == 0
    assert out["conversations_recorded"] == 20 and out["prompts_recorded"] == 20
    rows = recorded(demo_env)
    assert [r[1] for r in rows] == [c["turns"] for c in written]
    assert {(r[2], r[4], r[5], r[6], r[7]) for r in rows} == {
        ("Generated conversations", out["project_id"], 0, 0, "template")
    }
    # The recorded conversation names its annotation task, and the task shows its turns.
    for row, conversation in zip(rows, written, strict=True):
        data = tasks[f"conversation:{row[3]}"]
        assert data["situation_id"] == conversation["situation_id"]
        assert [d["text"] for d in data["dialogue"]] == [t["text"] for t in conversation["turns"]]

    again = await run_pipeline()
    assert again.state is RunState.SUCCEEDED, again.error
    o = again.output_parameters
    assert (o["tasks_created"], o["tasks_existing"]) == (0, 20)
    assert (o["conversations_recorded"], o["prompts_recorded"]) == (0, 0)
    assert len(recorded(demo_env)) == 20
    assert len(conversation_tasks(demo_env, out["project_id"])) == 20


async def test_new_situations_through_the_llm_generator(run_pipeline, demo_env):
    good = json.dumps(
        {
            "turns": [
                {"role": "bot", "text": "Hello, this is City Bank about your loan payment."},
                {"role": "user", "text": "I was abroad, can I pay next week?"},
            ]
        }
    )

    def respond(request: Request) -> Reply:
        return chat_reply(good)

    with FakeChatServer(respond) as server:
        run = await run_pipeline(
            extra_env={"LLM_BASE_URL": server.url, "LLM_MODEL": "fake-model", "LLM_API_KEY": "k"},
            situations=NEW,
            scenario="promise to pay",
            scenario_category="debt_collection",
            conversations_per_situation=1,
            temperature=0.4,
            project_title="Debt collection conversations",
            client_id=101,
            template_id=1,
        )
    assert run.state is RunState.SUCCEEDED, run.error
    out = run.output_parameters
    assert out["situations_added"] == 2 and len(out["situation_ids"]) == 2
    with connect(demo_env["METRICS_DB_URL"]) as db:
        added = db.fetchall(
            "SELECT id, situation, scenario, scenario_category FROM situation_scenario_mapper"
            " ORDER BY id DESC LIMIT 2"
        )
    assert sorted(r[0] for r in added) == sorted(out["situation_ids"])
    assert {r[1:] for r in added} == {(s, "promise to pay", "debt_collection") for s in NEW}
    assert out["generator_used"] == "llm:fake-model" and out["tasks_created"] == 2
    rows = recorded(demo_env)
    assert sorted(r[0] for r in rows) == sorted(out["situation_ids"])
    assert {(r[2], r[5], r[6], r[7]) for r in rows} == {
        ("Debt collection conversations", 101, 1, "fake-model")
    }
    with connect(demo_env["METRICS_DB_URL"]) as db:
        temperatures = db.fetchall(
            "SELECT DISTINCT temperature FROM prompt_details WHERE prompt_key <> ''"
        )
    assert temperatures == [(0.4,)]


async def test_an_invalidated_situation_fails_before_generating(run_pipeline, demo_env):
    with connect(demo_env["METRICS_DB_URL"]) as db:
        (row,) = db.fetchall(
            "SELECT id FROM situation_scenario_mapper WHERE NOT is_valid ORDER BY id LIMIT 1"
        )
    run = await run_pipeline(situation_ids=[row[0]])
    assert run.state is RunState.FAILED
    assert [s.name for s in run.steps if s.state is StepState.FAILED] == ["add-situations"]
    assert f"add_situations: situations [{row[0]}] are invalidated" in run.error.message
    assert recorded(demo_env) == []


async def test_an_unknown_project_fails_and_records_nothing(run_pipeline, demo_env):
    run = await run_pipeline(project_id=424242, situation_limit=1)
    assert run.state is RunState.FAILED
    assert "unknown annotation project 424242" in run.error.message
    assert recorded(demo_env) == []


async def test_with_s3_artifacts(run_pipeline, demo_env, bucket, s3_endpoint, s3_client):
    store = S3ArtifactStore.from_url(f"s3://{bucket}/runs", S3Settings(endpoint_url=s3_endpoint))
    run = await run_pipeline(artifacts=store, situation_limit=2)
    assert run.state is RunState.SUCCEEDED, run.error
    (artifact,) = [a for a in run.outputs if a.name == "conversations"]
    assert artifact.uri.startswith(f"s3://{bucket}/runs/")
    key = artifact.uri.removeprefix(f"s3://{bucket}/")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    assert len(body.splitlines()) == 4 == run.output_parameters["tasks_created"]
    assert len(recorded(demo_env)) == 4


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"situations": ["ok", "   "]}, "situations[1]"),
        ({"situations": ["x" * 501]}, "situations[0]"),
        ({"scenario_category": "Debt Collection"}, "scenario_category"),
        ({"situation_ids": [0]}, "situation_ids[0]"),
        ({"generator": "gpt"}, "generator"),
        ({"project_title": "ab"}, "project_title"),
        ({"project_id": -1}, "project_id"),
        ({"conversations_per_situation": 0}, "conversations_per_situation"),
    ],
)
def test_what_a_step_would_refuse_is_refused_at_create_run(catalog, given, field):
    (pipeline,) = catalog.list()
    with pytest.raises(InvalidArgument) as refused:
        resolve_parameters(pipeline, given)
    assert [v.field for v in refused.value.violations] == [f"run.parameters.{field}"]


def test_good_situations_pass(catalog):
    (pipeline,) = catalog.list()
    given = {
        "situations": ["the caller\nlost their job", "x" * 500],
        "scenario": "promise to pay",
        "scenario_category": "debt_collection",
    }
    resolved = resolve_parameters(pipeline, given)
    assert {name: resolved[name] for name in given} == given
