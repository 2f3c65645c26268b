"""generate-sample-conversations end to end on the demo data: the run controller, the local
backend and the local executor in process, running the real generate_conversations
component, with the template generator (no endpoint configured) and with the LLM
generator against a local OpenAI-compatible server."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from skit_components.db import connect
from skit_pipelines.artifacts.s3 import S3ArtifactStore, S3Settings
from skit_pipelines.domain import Run, RunState, StepState
from skit_testing.fake_openai import FakeChatServer, Reply, Request, chat_reply

PIPELINE = "generate_sample_conversations"
GOOD = json.dumps(
    {
        "turns": [
            {"role": "bot", "text": "Hello, this is Metro Telecom customer care."},
            {"role": "user", "text": "my internet is not working"},
        ]
    }
)


def artifact_path(run: Run, name: str) -> Path:
    (artifact,) = [a for a in run.outputs if a.name == name]
    return Path(unquote(urlparse(artifact.uri).path))


def conversations(run: Run) -> list[dict]:
    lines = artifact_path(run, "conversations").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def valid_ids(env: dict[str, str]) -> list[int]:
    with connect(env["METRICS_DB_URL"]) as db:
        rows = db.fetchall("SELECT id FROM situation_scenario_mapper WHERE is_valid ORDER BY id")
    return [row[0] for row in rows]


async def test_defaults_use_the_template_generator_on_the_demo_situations(run_pipeline, demo_env):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.state for s in run.steps] == [StepState.SUCCEEDED]
    assert run.output_parameters["generated_count"] == 20  # 10 situations, 2 each
    assert run.output_parameters["dropped_count"] == 0
    assert run.output_parameters["generator_used"] == "template"
    report = json.loads(artifact_path(run, "report").read_text())
    assert "template generator ran instead" in report["note"]
    written = conversations(run)
    assert sorted({c["situation_id"] for c in written}) == valid_ids(demo_env)[:10]
    assert all(c["turns"] and c["generator"] == "template" for c in written)


async def test_the_llm_generator_through_a_local_endpoint(run_pipeline, demo_env):
    calls = []

    def respond(request: Request) -> Reply:
        calls.append(request)
        if len(calls) == 1:
            return Reply(429, {"error": "slow down"}, headers={"Retry-After": "0"})
        return chat_reply(GOOD)

    ids = valid_ids(demo_env)[3:5]
    with FakeChatServer(respond) as server:
        run = await run_pipeline(
            extra_env={"LLM_BASE_URL": server.url, "LLM_MODEL": "fake-model", "LLM_API_KEY": "k"},
            situation_ids=ids,
            conversations_per_situation=3,
            temperature=0.2,
        )
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.output_parameters["generator_used"] == "llm:fake-model"
    assert run.output_parameters["generated_count"] == 6
    assert run.output_parameters["dropped_count"] == 0
    assert len(server.requests) == 7
    assert {r.body["temperature"] for r in server.requests} == {0.2}
    assert sorted({c["situation_id"] for c in conversations(run)}) == ids
    report = json.loads(artifact_path(run, "report").read_text())
    assert report["retries"] == {"HTTP 429": 1}


async def test_a_wrong_key_fails_the_run_with_one_clear_line(run_pipeline):
    def respond(request: Request) -> Reply:
        return Reply(401, {"error": {"message": "Incorrect API key provided"}})

    with FakeChatServer(respond) as server:
        run = await run_pipeline(
            extra_env={"LLM_BASE_URL": server.url, "LLM_MODEL": "m", "LLM_API_KEY": "wrong"},
            situation_limit=1,
        )
    assert run.state is RunState.FAILED
    assert "rejected the credentials (HTTP 401): check LLM_API_KEY" in run.error.message


async def test_an_invalidated_situation_is_refused(run_pipeline, demo_env):
    with connect(demo_env["METRICS_DB_URL"]) as db:
        (row,) = db.fetchall(
            "SELECT id FROM situation_scenario_mapper WHERE NOT is_valid ORDER BY id LIMIT 1"
        )
    run = await run_pipeline(situation_ids=[row[0]], generator="template")
    assert run.state is RunState.FAILED
    assert f"situations [{row[0]}] are invalidated" in run.error.message


async def test_with_s3_artifacts(run_pipeline, bucket, s3_endpoint, s3_client):
    """The executor uploads the conversations and the report to S3; the run names them there."""
    store = S3ArtifactStore.from_url(f"s3://{bucket}/runs", S3Settings(endpoint_url=s3_endpoint))
    run = await run_pipeline(artifacts=store, situation_limit=2, conversations_per_situation=2)
    assert run.state is RunState.SUCCEEDED, run.error
    (artifact,) = [a for a in run.outputs if a.name == "conversations"]
    assert artifact.uri.startswith(f"s3://{bucket}/runs/")
    key = artifact.uri.removeprefix(f"s3://{bucket}/")
    lines = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert len(lines) == 4 == run.output_parameters["generated_count"]
    assert all(json.loads(line)["turns"] for line in lines)
