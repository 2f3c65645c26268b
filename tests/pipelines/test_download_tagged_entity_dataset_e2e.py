"""download-tagged-entity-dataset end to end on the demo data: the run controller, the local
backend and the local executor in process, running the real components."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import asyncio
import csv
import json
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skit_components.db import connect
from skit_pipelines.artifacts import LocalArtifactStore
from skit_pipelines.backends.local import LocalBackend, StoreStepCache
from skit_pipelines.catalog import Catalog, compile_module, pipeline_from_spec
from skit_pipelines.demo import ensure_demo_data
from skit_pipelines.domain import Run, RunState, StepState
from skit_pipelines.executor import ExecutorConfig, LocalExecutor
from skit_pipelines.runs import CreateRunInput, RunController
from skit_pipelines.store.sqlite import SqliteRunStore

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "download_tagged_entity_dataset"


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ensure_demo_data(tmp_path_factory.mktemp("home") / "demo")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    pipeline = pipeline_from_spec(compile_module(ROOT / "pipelines" / f"{PIPELINE}.py"))
    return Catalog({pipeline.id: pipeline})


@pytest.fixture
def run_pipeline(tmp_path: Path, demo_env: dict[str, str], catalog: Catalog):
    async def _run(**parameters) -> Run:
        store = SqliteRunStore(tmp_path / "runs.db")
        executor = LocalExecutor(
            ExecutorConfig(
                images_root=ROOT / "images", work_root=tmp_path / "work", step_env=demo_env
            ),
            LocalArtifactStore(tmp_path / "artifacts"),
            cache=StoreStepCache(store),
        )
        backend = LocalBackend(executor)
        controller = RunController(store, catalog, backend)
        try:
            (pipeline,) = catalog.list()
            run = await controller.create_run(
                CreateRunInput(pipeline=pipeline.name, parameters=parameters)
            )

            async def finished() -> Run:
                async for snapshot in controller.watch_run(run.name):
                    if snapshot.state.terminal:
                        return snapshot
                raise AssertionError("the watch ended before the run did")

            return await asyncio.wait_for(finished(), 120)
        finally:
            await backend.shutdown()
            await store.close()

    return _run


def output_csv(run: Run, name: str) -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    path = Path(unquote(urlparse(artifact.uri).path))
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def test_defaults_resolve_the_demo_stores_tagged_dates_and_times(run_pipeline, demo_env):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert {s.name: s.state for s in run.steps} == {
        "fetch-tagged-dataset": StepState.SUCCEEDED,
        "normalize-entities": StepState.SUCCEEDED,
    }
    rows = output_csv(run, "dataset")
    with connect(demo_env["ANNOTATIONS_DB_URL"]) as db:
        (tasks,) = db.fetchone("SELECT count(*) FROM annotation_tasks WHERE project_id = 21")
    assert len(rows) == tasks > 300

    entities = [(r, e) for r in rows for e in json.loads(r["normalized_entities"])]
    tagged = sum(len(json.loads(r["tag"])["entities"]) for r in rows)
    assert run.output_parameters["entity_count"] == len(entities) == tagged
    status = Counter(e["status"] for _, e in entities)
    assert run.output_parameters["unresolved_count"] == status["unparseable"] + status["imprecise"]
    assert set(status) <= {"resolved", "unparseable", "imprecise"}
    # Nothing is dropped: unresolved entities are there, with a reason and no value.
    assert all(e["reason"] and not e["value"] for _, e in entities if e["status"] != "resolved")
    assert {r["entity_status"] for r in rows} <= {"resolved", "unresolved", "none"}

    resolved = [(r, e) for r, e in entities if e["status"] == "resolved"]
    assert len(resolved) / len(entities) > 0.25
    # Resolved values mostly agree with the bot's own entity parser.
    compared = [e["matches_prediction"] for _, e in resolved if e["matches_prediction"] is not None]
    assert sum(compared) / len(compared) > 0.85

    # Ground truth for the phrases with one meaning: relative to the call's local day.
    checked = 0
    for row, e in resolved:
        local = datetime.fromisoformat(row["raw.reftime"])
        if e["type"] == "date" and e["text"] in ("tomorrow", "by tomorrow", "कल"):
            assert date.fromisoformat(e["value"]) == local.date() + timedelta(days=1)
            checked += 1
        if e["type"] == "time" and e["text"] == "five pm":
            value = datetime.fromisoformat(e["value"])
            assert value.utcoffset() == local.utcoffset() and value.hour == 17
            assert local < value <= local + timedelta(days=1)
            checked += 1
    assert checked > 20


async def test_projects_of_another_task_type_fail_the_run(run_pipeline):
    run = await run_pipeline(project_ids=[31])
    assert run.state is RunState.FAILED
    assert {s.name: s.state for s in run.steps} == {
        "fetch-tagged-dataset": StepState.FAILED,
        "normalize-entities": StepState.SKIPPED,
    }
    assert "task_type is entity but 31 is transcription" in run.error.message


async def test_an_empty_date_range_fails_the_run(run_pipeline):
    run = await run_pipeline(start_date="2027-01-01", timezone="Asia/Kolkata")
    assert run.state is RunState.FAILED
    assert "no annotations match: all entity projects and jobs, tagged from 2027-01-01" in (
        run.error.message
    )
