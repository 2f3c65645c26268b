"""download-tagged-entity-dataset end to end on the demo data: the run controller, the local
backend and the local executor in process, running the real components."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import csv
import json
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from skit_components.annotations import NewTask, ProjectSpec, open_store
from skit_components.annotations.labeling import tag_to_result
from skit_components.db import connect
from skit_demo import vocabulary
from skit_pipelines.domain import Run, RunState, StepState

PIPELINE = "download_tagged_entity_dataset"
pytest_plugins = ["skit_testing.label_studio"]


def output_csv(run: Run, name: str) -> list[dict]:
    (artifact,) = [a for a in run.outputs if a.name == name]
    path = Path(unquote(urlparse(artifact.uri).path))
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def unresolved_share(rows: list[dict]) -> tuple[float, str]:
    """The unresolved share of the dataset's date and time entities, and the line that
    states it, overall and per language (`pytest -s -k defaults` prints it)."""
    counts: dict[str, Counter[bool]] = {}
    for row in rows:
        for e in json.loads(row["normalized_entities"]):
            if e["type"] in ("date", "time"):
                language = counts.setdefault(row["raw.language"], Counter())
                language[e["status"] == "resolved"] += 1
    total = sum(counts.values(), Counter())
    share = total[False] / (total[True] + total[False])
    parts = [f"{k} {c[False]}/{c[True] + c[False]}" for k, c in sorted(counts.items())]
    return share, (
        f"unresolved: {total[False]} of {total[True] + total[False]} date/time entities "
        f"({share:.1%}); by language: {', '.join(parts)}"
    )


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
    share, line = unresolved_share(rows)
    print(line)
    assert run.output_parameters["unresolved_count"] == status["unparseable"] + status["imprecise"]
    assert set(status) <= {"resolved", "unparseable", "imprecise"}
    # Nothing is dropped: unresolved entities are there, with a reason and no value.
    assert all(e["reason"] and not e["value"] for _, e in entities if e["status"] != "resolved")
    assert {r["entity_status"] for r in rows} <= {"resolved", "unresolved", "none"}

    # Every phrase the demo callers say resolves, in every language; what stays unresolved
    # is the annotators' mistakes (a date tagged as a time, a span missing its first word).
    assert share < 0.03, line
    said = {(k, "date", p) for k, v in vocabulary.DATE_PHRASES.items() for p, _, _ in v} | {
        (k, "time", p) for k, v in vocabulary.TIME_PHRASES.items() for p, _ in v
    }
    assert {r["raw.language"] for r, _ in entities} == set(vocabulary.DATE_PHRASES)
    as_said = [e for r, e in entities if (r["raw.language"], e["type"], e["text"]) in said]
    assert len(as_said) > len(entities) / 2
    assert [e for e in as_said if e["status"] != "resolved"] == []

    resolved = [(r, e) for r, e in entities if e["status"] == "resolved"]
    # Resolved values agree with the bot's own entity parser (the demo's ground truth).
    compared = [e["matches_prediction"] for _, e in resolved if e["matches_prediction"] is not None]
    assert sum(compared) / len(compared) > 0.97

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


@pytest.mark.xdist_group("label-studio-download-tagged-entity-dataset")
async def test_entities_tagged_in_label_studio_are_resolved(run_pipeline, label_studio):
    """Entity spans an annotator marks in a real Label Studio (the step env names it) come
    out resolved relative to the call's time, as the demo store's do."""
    store = open_store(label_studio.env)
    project = store.create_project(ProjectSpec("Dates and times", "entity"))
    said = {"turn:1": ("i will pay tomorrow", "date", "tomorrow"),
            "turn:2": ("call me at five pm", "time", "five pm")}  # fmt: skip
    reftime = "2026-11-02T10:00:00.000+05:30"
    store.push_tasks(
        project.id,
        [
            NewTask(key, {"text": text, "reftime": reftime, "timezone": "Asia/Kolkata",
                          "language": "en", "entities": []})
            for key, (text, _, _) in said.items()
        ],
    )  # fmt: skip
    store.close()
    for task in label_studio.tasks(project.id):
        text, kind, span = said[task["data"]["skit_key"]]
        start = text.index(span)
        entity = {"type": kind, "text": span, "start": start, "end": start + len(span)}
        label_studio.annotate(task["id"], tag_to_result("entity", {"entities": [entity]}))

    run = await run_pipeline(extra_env=label_studio.env, timezone="Asia/Kolkata")
    assert run.state is RunState.SUCCEEDED, run.error
    rows = output_csv(run, "dataset")
    assert run.output_parameters["entity_count"] == 2
    assert run.output_parameters["unresolved_count"] == 0
    values = {e["text"]: e["value"] for r in rows for e in json.loads(r["normalized_entities"])}
    assert values["tomorrow"] == "2026-11-03"
    five_pm = datetime.fromisoformat(values["five pm"])
    assert (five_pm.hour, five_pm.utcoffset()) == (17, timedelta(hours=5, minutes=30))
