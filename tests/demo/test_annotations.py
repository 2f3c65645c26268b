"""The demo annotation store: deterministic, consistent with the calls database, and as
noisy as people are."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from skit_components.db import Database, connect, sqlite_url
from skit_components.migrations import ANNOTATIONS, latest_version, migrate, schema_version
from skit_demo import DemoDataExists, ensure_demo_data, generate, write_annotations
from skit_demo import annotations as a
from skit_demo import calls as simulated_calls
from skit_demo import vocabulary as v
from skit_demo.bootstrap import ANNOTATIONS_DB, CALLS_DB, METRICS_DB

pytest_plugins = ["skit_testing.postgres"]

TABLES = ("annotation_projects", "annotation_tasks", "annotations")
ALIASES = {alias for aliases in v.INTENT_ALIASES.values() for alias in aliases}


def make(tmp_path: Path, name: str, **kwargs) -> tuple[str, str]:
    """(calls URL, annotations URL) of a fresh demo."""
    calls = sqlite_url(tmp_path / f"{name}-calls.db")
    annotations = sqlite_url(tmp_path / f"{name}-annotations.db")
    metrics = sqlite_url(tmp_path / f"{name}-metrics.db")
    generate(calls, metrics, annotations_db_url=annotations, **kwargs)
    return calls, annotations


def rows(db: Database, table: str) -> list[dict]:
    """A table's rows without engine differences (JSON text, timestamps, booleans)."""
    cursor = db.execute(f"SELECT * FROM {table} ORDER BY id")
    names = [c[0] for c in cursor.description]
    out = []
    for row in cursor.fetchall():
        record = dict(zip(names, row, strict=True))
        for key in ("data", "tag", "labels"):
            if isinstance(record.get(key), str):
                record[key] = json.loads(record[key])
        for key in ("reftime", "created_at", "tagged_at"):
            if record.get(key) is not None:
                record[key] = db.dialect.to_datetime(record[key])
        if "is_gold" in record:
            record["is_gold"] = bool(record["is_gold"])
        out.append(record)
    return out


def fingerprint(url: str) -> str:
    digest = hashlib.sha256()
    with connect(url) as db:
        for table in TABLES:
            digest.update(repr(rows(db, table)).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The default demo (2000 calls), loaded: turns by uuid, tasks, annotations by task."""
    root = tmp_path_factory.mktemp("demo")
    calls_url, annotations_url = make(root, "d")
    with connect(calls_url) as db:
        turns = {turn.uuid: turn for turn in a.read_turns(db)}
    with connect(annotations_url) as db:
        projects = {p["id"]: p for p in rows(db, "annotation_projects")}
        tasks = rows(db, "annotation_tasks")
        labels = defaultdict(list)
        for annotation in rows(db, "annotations"):
            labels[annotation["task_id"]].append(annotation)
    return {"turns": turns, "projects": projects, "tasks": tasks, "labels": labels}


def of_type(demo: dict, task_type: str) -> list[dict]:
    return [t for t in demo["tasks"] if demo["projects"][t["project_id"]]["task_type"] == task_type]


def test_same_seed_same_store_and_another_seed_another(tmp_path):
    first = fingerprint(make(tmp_path, "a", seed=4, calls=150)[1])
    again = fingerprint(make(tmp_path, "b", seed=4, calls=150)[1])
    other = fingerprint(make(tmp_path, "c", seed=5, calls=150)[1])
    assert first == again != other


def test_projects_cover_every_flow_once_per_task_type():
    assert {p.task_type for p in a.PROJECTS} == {"intent", "entity", "transcription"}
    for task_type in ("intent", "entity", "transcription"):
        flows = [f for p in a.PROJECTS if p.task_type == task_type for f in p.flow_ids]
        assert sorted(flows) == sorted(f.id for f in v.FLOWS), task_type
    assert {p.source for p in a.PROJECTS} == {a.LABEL_STUDIO, a.TOG}
    assert len({p.id for p in a.PROJECTS}) == len(a.PROJECTS)


def test_every_task_is_a_caller_turn_of_the_calls_database(demo):
    assert len(demo["tasks"]) > 2000
    for task in demo["tasks"]:
        turn = demo["turns"][task["conversation_uuid"]]
        data = task["data"]
        assert turn.utterances, "silent turns are not labelled"
        assert (task["call_uuid"], task["language"]) == (turn.call_uuid, turn.language)
        assert task["reftime"] == turn.reftime
        assert datetime.fromisoformat(data["reftime"]) == turn.reftime
        assert data["timezone"] == "Asia/Kolkata"
        assert data["utterances"] == turn.utterances and data["text"] == turn.primary_utterance
        assert (data["intent"], data["entities"]) == (turn.intent, turn.entities)
        project = next(p for p in a.PROJECTS if p.id == task["project_id"])
        assert turn.flow_id in project.flow_ids
        labels = demo["labels"][task["id"]]
        assert labels, "every task is annotated"
        times = [label["tagged_at"] for label in labels]
        assert task["reftime"] < task["created_at"] < times[0]
        assert times == sorted(times)


def test_entity_tasks_are_the_turns_with_dates_and_times_and_spans_fit_the_text(demo):
    tasks = of_type(demo, "entity")
    assert len(tasks) > 300
    same = changed = 0
    for task in tasks:
        predicted = [e for e in task["data"]["entities"] if e["type"] in ("date", "time")]
        assert predicted
        text = task["data"]["text"]
        for label in demo["labels"][task["id"]]:
            tagged = label["tag"]["entities"]
            for entity in tagged:
                assert text[entity["start"] : entity["end"]] == entity["text"]
            spans = [(e["type"], e["start"], e["end"]) for e in tagged]
            if spans == [(e["type"], e["start"], e["end"]) for e in predicted]:
                same += 1
            else:
                changed += 1
    # Most annotators agree with the parser's spans; some miss, overreach or retype one.
    assert 0.03 < changed / (same + changed) < 0.2


def test_intent_labels_are_mostly_right_with_disagreement_and_legacy_names(demo):
    tasks = of_type(demo, "intent")
    truth = {t["id"]: a.recover_spoken(demo["turns"][t["conversation_uuid"]]) for t in tasks}
    pairs = disagreements = wrong = total = 0
    legacy = Counter()
    for task in tasks:
        project = demo["projects"][task["project_id"]]
        people = [x for x in demo["labels"][task["id"]] if x["annotator"] != a.REVIEWER]
        choices = [x["tag"]["choices"][0] for x in people]
        canonical = [next((k for k, al in v.INTENT_ALIASES.items() if c in al), c) for c in choices]
        total += len(choices)
        wrong += sum(c != truth[task["id"]].intent for c in canonical)
        legacy[project["source"]] += sum(c in ALIASES for c in choices)
        if len(canonical) == 2:
            pairs += 1
            disagreements += canonical[0] != canonical[1]
    assert 0.02 < wrong / total < 0.1
    assert pairs > 100 and 0.02 < disagreements / pairs < 0.2
    assert legacy[a.LABEL_STUDIO] == 0 and legacy[a.TOG] > 20


def test_gold_tasks_end_with_the_reviewers_right_label(demo):
    gold = [t for t in demo["tasks"] if t["is_gold"]]
    assert 0.03 < len(gold) / len(demo["tasks"]) < 0.08
    for task in gold:
        labels = demo["labels"][task["id"]]
        assert len(labels) >= 2 and labels[-1]["annotator"] == a.REVIEWER
        spoken = a.recover_spoken(demo["turns"][task["conversation_uuid"]])
        tag = labels[-1]["tag"]
        if "choices" in tag:
            assert tag == {"choices": [spoken.intent]}
        elif "text" in tag:
            assert tag == {"text": spoken.text}
    assert all(
        label["annotator"] != a.REVIEWER
        for task in demo["tasks"]
        if not task["is_gold"]
        for label in demo["labels"][task["id"]]
    )


def test_transcripts_differ_from_what_asr_heard_as_in_real_data(demo):
    tasks = of_type(demo, "transcription")
    assert {t["language"] for t in tasks} == set(v.LANGUAGES)
    transcripts = [label["tag"]["text"] for t in tasks for label in demo["labels"][t["id"]]]
    heard = [" ".join(s[0]["transcript"] for s in t["data"]["utterances"]) for t in tasks]
    latest = [demo["labels"][t["id"]][-1]["tag"]["text"] for t in tasks]
    differs = sum(x != y for x, y in zip(latest, heard, strict=True)) / len(tasks)
    assert 0.2 < differs < 0.5
    markup = sum(t.startswith("<") or t.endswith(">") for t in transcripts) / len(transcripts)
    assert 0.04 < markup < 0.15
    assert "<unintelligible>" in transcripts


def test_recovered_speech_is_what_the_simulated_callers_said(tmp_path, monkeypatch):
    said: list[str] = []
    render = simulated_calls._asr_alternatives

    def recording(rng, language, words, entity):
        said.append(simulated_calls._render(words, entity[1] if entity else "")[0])
        return render(rng, language, words, entity)

    monkeypatch.setattr(simulated_calls, "_asr_alternatives", recording)
    calls_url = sqlite_url(tmp_path / "c.db")
    generate(calls_url, sqlite_url(tmp_path / "m.db"), seed=11, calls=1000)
    with connect(calls_url) as db:
        spoken = [t for t in a.read_turns(db) if t.utterances]
    assert len(spoken) == len(said)
    right = 0
    for turn, truth in zip(spoken, said, strict=True):
        words = a.recover_spoken(turn).text.split()
        fillers = len(turn.utterances) - 1
        right += " ".join(words[: len(words) - fillers]) == truth
    # The rest are ambiguous: ASR dropped the words that told two phrases apart.
    assert right / len(said) > 0.97


def test_refuses_to_write_over_an_annotation_store_unless_replacing(tmp_path):
    calls_url, annotations_url = make(tmp_path, "x", calls=30)
    with pytest.raises(DemoDataExists):
        write_annotations(calls_url, annotations_url)
    assert write_annotations(calls_url, annotations_url, seed=2, replace=True)[0] > 0


def test_no_calls_give_projects_and_no_tasks(tmp_path):
    _, annotations_url = make(tmp_path, "empty", calls=0)
    with connect(annotations_url) as db:
        assert db.fetchone("SELECT count(*) FROM annotation_projects")[0] == len(a.PROJECTS)
        assert db.fetchone("SELECT count(*) FROM annotation_tasks")[0] == 0


def test_summary_counts_and_generation_time(tmp_path):
    calls_url = sqlite_url(tmp_path / "c.db")
    generate(calls_url, sqlite_url(tmp_path / "m.db"))
    began = time.perf_counter()
    tasks, annotations = write_annotations(calls_url, sqlite_url(tmp_path / "a.db"))
    assert time.perf_counter() - began < 5
    with connect(sqlite_url(tmp_path / "a.db")) as db:
        assert db.fetchone("SELECT count(*) FROM annotation_tasks")[0] == tasks
        assert db.fetchone("SELECT count(*) FROM annotations")[0] == annotations > tasks
    summary = generate(
        sqlite_url(tmp_path / "c2.db"),
        sqlite_url(tmp_path / "m2.db"),
        calls=100,
        annotations_db_url=sqlite_url(tmp_path / "a2.db"),
    )
    assert summary.annotation_tasks > 0 and summary.annotations > summary.annotation_tasks


def test_migration_is_versioned_and_idempotent(tmp_path):
    with connect(sqlite_url(tmp_path / "a.db"), create=True) as db:
        assert schema_version(db, ANNOTATIONS) == 0
        assert migrate(db, ANNOTATIONS) == [1, 2]
        assert migrate(db, ANNOTATIONS) == []
        assert schema_version(db, ANNOTATIONS) == latest_version(ANNOTATIONS) == 2


def test_ensure_demo_data_adds_the_store_to_an_existing_demo(tmp_path):
    root = tmp_path / "demo"
    env = ensure_demo_data(root)
    assert env["ANNOTATIONS_DB_URL"] == sqlite_url(root / ANNOTATIONS_DB)
    assert {CALLS_DB, METRICS_DB, ANNOTATIONS_DB} <= {p.name for p in root.iterdir()}
    before = {p.name: p.stat().st_ino for p in root.iterdir()}
    assert ensure_demo_data(root) == env
    assert {p.name: p.stat().st_ino for p in root.iterdir()} == before

    # A demo made before the store existed gets one, from its own calls.
    (root / ANNOTATIONS_DB).unlink()
    assert ensure_demo_data(root) == env
    assert (root / CALLS_DB).stat().st_ino == before[CALLS_DB]
    with connect(env["ANNOTATIONS_DB_URL"]) as store, connect(env["CALLS_DB_URL"]) as calls:
        uuids = {r[0] for r in store.fetchall("SELECT conversation_uuid FROM annotation_tasks")}
        known = {r[0] for r in calls.fetchall("SELECT uuid FROM turns")}
    assert uuids and uuids <= known


@pytest.mark.postgres
def test_postgresql_gets_the_same_store_as_sqlite(tmp_path, postgres_dsn):
    _, lite = make(tmp_path, "p", seed=6, calls=250)
    summary = generate(
        postgres_dsn, postgres_dsn, seed=6, calls=250, annotations_db_url=postgres_dsn
    )
    assert summary.annotation_tasks > 0
    with connect(lite) as sqlite_db, connect(postgres_dsn) as pg:
        for table in TABLES:
            assert rows(pg, table) == rows(sqlite_db, table), table
        new_id = pg.fetchone(
            "INSERT INTO annotation_projects (source, name, task_type) "
            "VALUES ('tog', 'new job', 'intent') RETURNING id"
        )[0]
    assert new_id > max(p.id for p in a.PROJECTS)
