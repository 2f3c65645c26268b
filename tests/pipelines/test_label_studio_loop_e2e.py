"""The annotation loop against a real Label Studio server: sample-and-tag-calls pushes
pre-annotated turn tasks and call tasks into Label Studio projects, the test annotates the
turn tasks through Label Studio's API as an annotator would (accepting or correcting the
model's pre-annotation), download-tagged-dataset exports them, and retrain-slu trains and
evaluates an intent classifier on them. Every pipeline runs through the run controller,
the local backend and the local executor with the real components; the steps get
LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN of the server as their declared env."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import asyncio
import csv
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pytest

from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.catalog import Catalog, compile_pipeline, pipeline_from_spec
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore

if TYPE_CHECKING:
    from skit_testing.label_studio import LabelStudio

pytest_plugins = ["skit_testing.label_studio"]
pytestmark = pytest.mark.xdist_group("label-studio-loop")

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = (
    "sample_and_tag_calls",
    "download_tagged_dataset",
    "retrain_slu",
    "generate_and_upload_conversations",
)
WRITES_DEMO_DATA = True
RUN_TIMEOUT_SECONDS = 300
CORRECTED_SHARE = 0.2
"""Share of the pre-annotations the annotator corrects (to the bot's intent at call time)."""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    pipelines = []
    for name in PIPELINES:
        compiled = compile_pipeline(ROOT / "pipelines" / f"{name}.py")
        pipelines.append(pipeline_from_spec(compiled.spec, compiled.rules))
    return Catalog({p.id: p for p in pipelines})


@pytest.fixture
def run_named(
    tmp_path: Path, demo_env: dict[str, str], catalog: Catalog, label_studio: "LabelStudio"
):
    """Runs a pipeline of PIPELINES by name with the steps pointed at Label Studio."""

    async def _run(name: str, env: dict[str, str] | None = None, **parameters: Any) -> Run:
        store = SqliteRunStore(tmp_path / f"runs-{name}.db")
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=ROOT / "images",
                work_root=tmp_path / "work",
                step_env={**demo_env, **label_studio.env, **(env or {})},
            ),
            LocalArtifactStore(tmp_path / "artifacts"),
            cache=StoreStepCache(store),
        )
        backend = LocalBackend(executor)
        controller = RunController(store, catalog, backend)
        backend.start(controller)
        try:
            run = await controller.create_run(
                CreateRunInput(
                    pipeline=f"pipelines/{name.replace('_', '-')}", parameters=parameters
                )
            )

            async def finished() -> Run:
                async for snapshot in controller.watch_run(run.name):
                    if snapshot.state.terminal:
                        return snapshot
                raise AssertionError("the watch ended before the run did")

            return await asyncio.wait_for(finished(), RUN_TIMEOUT_SECONDS)
        finally:
            await backend.shutdown()
            await store.close()

    return _run


def project_tasks(label_studio: "LabelStudio", project_id: int) -> list[dict[str, Any]]:
    session = label_studio.session()
    tasks: list[dict[str, Any]] = []
    page = 1
    while True:
        response = session.get(
            f"{label_studio.url}/api/tasks/",
            params={"project": project_id, "fields": "all", "page": page, "page_size": 100},
            timeout=30,
        )
        if response.status_code == 404:  # past the last page
            break
        response.raise_for_status()
        body = response.json()
        batch = body["tasks"] if isinstance(body, dict) else body
        tasks.extend(batch)
        if len(batch) < 100:
            break
        page += 1
    return tasks


def annotate(label_studio: "LabelStudio", task_id: int, intent: str) -> None:
    response = label_studio.session().post(
        f"{label_studio.url}/api/tasks/{task_id}/annotations/",
        json={
            "result": [
                {
                    "from_name": "intent",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": [intent]},
                }
            ]
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text


def csv_rows(run: Run, name: str) -> list[dict[str, str]]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    with Path(unquote(urlparse(artifact.uri).path)).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def test_sample_tag_in_label_studio_download_and_retrain(run_named, label_studio):
    # 1. Sample and push: turn tasks with the production model's intents, and call tasks.
    tagged = await run_named("sample_and_tag_calls", lang="en", call_quantity=80, turn_quantity=150)
    assert tagged.state is RunState.SUCCEEDED, tagged.error
    out = tagged.output_parameters
    turns = csv_rows(tagged, "turns")
    assert out["turn_tasks_created"] == len(turns) > 100
    tasks = project_tasks(label_studio, out["turn_project_id"])
    assert len(tasks) == len(turns)
    by_text = {t["primary_utterance"]: t for t in turns}
    for task in tasks:
        (prediction,) = task["predictions"]
        (result,) = prediction["result"]
        turn = by_text[task["data"]["text"]]
        assert result["value"]["choices"] == [turn["predicted_intent"]]
        assert prediction["model_version"] == out["prediction_model_version"] != ""
    calls = project_tasks(label_studio, out["call_project_id"])
    assert len(calls) == out["call_tasks_created"] > 0
    assert all(c["data"]["dialogue"] for c in calls)

    # Rerunning the same sample adds nothing to either project.
    again = await run_named("sample_and_tag_calls", lang="en", call_quantity=80, turn_quantity=150)
    assert again.state is RunState.SUCCEEDED, again.error
    assert again.output_parameters["turn_tasks_created"] == 0
    assert again.output_parameters["call_tasks_created"] == 0
    assert len(project_tasks(label_studio, out["turn_project_id"])) == len(tasks)

    # 2. Annotate as an annotator would: accept the pre-annotation, or correct it to the
    # bot's intent at call time for some tasks; leave a few untouched.
    rng = random.Random(7)
    labels: dict[int, str] = {}
    corrected = 0
    for task in tasks[:-5]:
        turn = by_text[task["data"]["text"]]
        intent = turn["predicted_intent"]
        if turn["intent"] and rng.random() < CORRECTED_SHARE:
            intent = turn["intent"]
            corrected += intent != turn["predicted_intent"]
        annotate(label_studio, task["id"], intent)
        labels[task["id"]] = intent

    # 3. Export the annotations through download-tagged-dataset.
    downloaded = await run_named("download_tagged_dataset", project_ids=[out["turn_project_id"]])
    assert downloaded.state is RunState.SUCCEEDED, downloaded.error
    rows = csv_rows(downloaded, "dataset")
    assert downloaded.output_parameters["row_count"] == len(rows) == len(labels)
    assert {int(r["data_id"]) for r in rows} == set(labels)
    for row in rows:
        assert row["tag"] and labels[int(row["data_id"])] in row["tag"]
        assert row["raw.text"] in by_text

    # 4. Retrain on them.
    retrained = await run_named(
        "retrain_slu", project_ids=[out["turn_project_id"]], model_name="slu-loop"
    )
    assert retrained.state is RunState.SUCCEEDED, retrained.error
    assert all(s.state is StepState.SUCCEEDED for s in retrained.steps)
    macro_f1 = retrained.output_parameters["macro_f1"]
    assert 0 < macro_f1 <= 1
    assert retrained.output_parameters["promoted"] is False
    # The numbers the README states (`pytest -s -k retrain` prints them).
    print(
        f"Label Studio loop: {len(tasks)} pre-annotated turn tasks and {len(calls)} call tasks "
        f"pushed; {len(labels)} annotated ({corrected} corrected); {len(rows)} rows exported; "
        f"retrained macro F1 {macro_f1:.3f} (production on the same test set "
        f"{retrained.output_parameters['production_macro_f1']:.3f})"
    )


async def test_generated_conversations_become_label_studio_tasks_once(run_named, label_studio):
    run = await run_named("generate_and_upload_conversations", situation_limit=3)
    assert run.state is RunState.SUCCEEDED, run.error
    out = run.output_parameters
    tasks = project_tasks(label_studio, out["project_id"])
    assert len(tasks) == out["tasks_created"] == out["conversations_recorded"] == 6
    for task in tasks:
        dialogue = task["data"]["dialogue"]
        assert {turn["author"] for turn in dialogue} == {"bot", "user"}
        assert task["data"]["situation"] and task["data"]["scenario_category"]
    again = await run_named("generate_and_upload_conversations", situation_limit=3)
    assert again.state is RunState.SUCCEEDED, again.error
    assert (
        again.output_parameters["tasks_created"],
        again.output_parameters["tasks_existing"],
    ) == (
        0,
        6,
    )
    assert len(project_tasks(label_studio, out["project_id"])) == 6


async def test_a_wrong_token_fails_the_push_with_one_line(run_named, label_studio):
    run = await run_named(
        "sample_and_tag_calls", env={"LABEL_STUDIO_TOKEN": "0" * 40}, call_quantity=2
    )
    assert run.state is RunState.FAILED
    failed = [s for s in run.steps if s.state is StepState.FAILED]
    assert failed and {s.name for s in failed} <= {
        "push-annotation-tasks",
        "push-annotation-tasks-2",
    }
    assert "push_annotation_tasks: annotation store:" in run.error.message
    assert label_studio.url in run.error.message and "\n" not in run.error.message
    assert "refused the token (HTTP 401" in run.error.message


async def test_an_unknown_label_studio_project_fails_the_push(run_named):
    run = await run_named("sample_and_tag_calls", call_quantity=2, call_project_id=9999)
    assert run.state is RunState.FAILED
    assert "unknown annotation project 9999" in run.error.message
