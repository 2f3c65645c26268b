"""The embedded annotation store (skit_components.annotations.embedded) on SQLite and
PostgreSQL, and migration 2 of the annotations schema on a database that holds rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_components import migrations
from skit_components.annotations import (
    AnnotationStore,
    AnnotationStoreError,
    NewTask,
    Prediction,
    ProjectSpec,
    RequestRefused,
    UnknownProject,
    open_store,
)
from skit_components.annotations.embedded import EmbeddedStore
from skit_components.db import connect, sqlite_url
from skit_components.migrations import ANNOTATIONS, migrate, schema_version
from skit_demo import generate

pytest_plugins = ["skit_testing.postgres"]

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _migrated(url: str) -> str:
    with connect(url, create=url.startswith("sqlite")) as db:
        migrate(db, ANNOTATIONS)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _migrated(sqlite_url(tmp_path / "annotations.db"))
    return _migrated(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store(database_url: str) -> Iterator[AnnotationStore]:
    store = open_store({"ANNOTATIONS_DB_URL": database_url})
    assert isinstance(store, EmbeddedStore)
    yield store
    store.close()


def turn(n: int, **extra: object) -> NewTask:
    return NewTask(
        key=f"turn:{n}",
        data={"text": f"utterance {n}", "turn_index": n},
        call_uuid=f"call-{n // 2}",
        conversation_uuid=f"turn-{n}",
        language="en",
        reftime=T0 + timedelta(minutes=n),
        **extra,  # type: ignore[arg-type]
    )


def annotate(url: str, task_id: int, annotator: str, tag: dict, when: datetime) -> None:
    """As the demo's annotators' rows are written: straight into the database."""
    with connect(url) as db:
        db.execute(
            "INSERT INTO annotations (task_id, annotator, tag, tagged_at) VALUES (?, ?, ?, ?)",
            (task_id, annotator, json.dumps(tag), db.dialect.timestamp_param(when)),
        )


def test_push_is_idempotent_by_key_and_keeps_predictions(store, database_url):
    project = store.create_project(ProjectSpec("Kaveri: new intents", "intent", ("yes", "no")))
    assert store.find_project("Kaveri: new intents") == project
    assert project.labels == ("yes", "no") and project.source == "label_studio"
    first = store.push_tasks(
        project.id,
        [turn(1, prediction=Prediction({"choices": ["yes"]}, "slu-7", 0.82)), turn(2), turn(1)],
    )
    assert (first.created, first.existing) == (2, 1)
    again = store.push_tasks(project.id, [turn(1), turn(2), turn(3)])
    assert (again.created, again.existing) == (1, 2)
    with connect(database_url) as db:
        rows = db.fetchall(
            "SELECT task_key, call_uuid, reftime FROM annotation_tasks ORDER BY task_key"
        )
        assert [r[0] for r in rows] == ["turn:1", "turn:2", "turn:3"]
        assert rows[0][1] == "call-0"
        assert db.dialect.to_datetime(rows[0][2]) == T0 + timedelta(minutes=1)
        predictions = db.fetchall(
            f"SELECT model_version, score, {db.dialect.json_text('tag')}"
            " FROM annotation_predictions"
        )
    assert [(m, s, json.loads(t)) for m, s, t in predictions] == [
        ("slu-7", 0.82, {"choices": ["yes"]})
    ]


def test_annotations_come_back_in_task_order_with_latest_only_and_time_range(store, database_url):
    project = store.create_project(ProjectSpec("Metro: dates", "entity"))
    assert project.labels == ("date", "time")
    store.push_tasks(project.id, [turn(1), turn(2)])
    task_ids = sorted(a for (a,) in _task_ids(database_url))
    span = {"entities": [{"type": "date", "text": "utterance", "start": 0, "end": 9}]}
    annotate(database_url, task_ids[1], "b@x", {"entities": []}, T0 + timedelta(hours=1))
    annotate(database_url, task_ids[0], "a@x", span, T0 + timedelta(hours=2))
    annotate(database_url, task_ids[0], "c@x", {"entities": []}, T0 + timedelta(hours=3))

    every = list(store.annotations([project.id]))
    assert [(a.task_id, a.annotator) for a in every] == [
        (task_ids[0], "a@x"),
        (task_ids[0], "c@x"),
        (task_ids[1], "b@x"),
    ]
    first = every[0]
    assert first.tag == span and first.task_type == "entity" and first.project_id == project.id
    assert first.data == {"text": "utterance 1", "turn_index": 1}
    assert first.extra["task_key"] == "turn:1"
    assert first.tagged_time == T0 + timedelta(hours=2)
    assert first.reftime == T0 + timedelta(minutes=1)

    latest = list(store.annotations([project.id], latest_only=True))
    assert [a.annotator for a in latest] == ["c@x", "b@x"]
    window = store.annotations(
        [project.id], tagged_from=T0 + timedelta(hours=2), tagged_until=T0 + timedelta(hours=3)
    )
    assert [a.annotator for a in window] == ["a@x"]


def _task_ids(url: str) -> list[tuple[int]]:
    with connect(url) as db:
        return [(int(r[0]),) for r in db.fetchall("SELECT id FROM annotation_tasks")]


def test_call_and_conversation_projects_exist_after_migration_2(store):
    dialogue = [{"author": "bot", "text": "hello"}, {"author": "caller", "text": "hi"}]
    for task_type, labels in (("call", ("pay", "dispute")), ("conversation", ())):
        project = store.create_project(ProjectSpec(f"{task_type} tasks", task_type, labels))
        assert store.project(project.id).task_type == task_type
        result = store.push_tasks(project.id, [NewTask(f"{task_type}:1", {"dialogue": dialogue})])
        assert result.created == 1
    assert {p.task_type for p in store.projects()} == {"call", "conversation"}
    assert [p.title for p in store.projects("call")] == ["call tasks"]


def test_refusals_are_one_clear_line(store):
    with pytest.raises(UnknownProject, match="has no project 404"):
        store.push_tasks(404, [turn(1)])
    with pytest.raises(UnknownProject, match=r"has no projects \[404\]"):
        store.annotations([404])
    intent = store.create_project(ProjectSpec("intents", "intent", ("yes",)))
    with pytest.raises(RequestRefused, match="already exists"):
        store.create_project(ProjectSpec("intents", "intent", ("yes",)))
    with pytest.raises(RequestRefused, match="needs labels"):
        store.create_project(ProjectSpec("no labels", "intent"))
    with pytest.raises(RequestRefused, match="unknown task type 'sentiment'"):
        store.create_project(ProjectSpec("feelings", "sentiment"))
    with pytest.raises(RequestRefused, match="lacks data text"):
        store.push_tasks(intent.id, [NewTask("turn:9", {"utterance": "hi"})])
    with pytest.raises(RequestRefused, match="no idempotency key"):
        store.push_tasks(intent.id, [NewTask(" ", {"text": "hi"})])


def test_open_store_needs_a_configured_store(tmp_path):
    with pytest.raises(RequestRefused, match="no annotation store configured"):
        open_store({})
    with pytest.raises(RequestRefused, match="LABEL_STUDIO_TOKEN is not"):
        open_store({"LABEL_STUDIO_URL": "http://127.0.0.1:9"})
    absent = open_store({"ANNOTATIONS_DB_URL": sqlite_url(tmp_path / "absent.db")})
    with pytest.raises(AnnotationStoreError, match="no SQLite database") as failure:
        absent.projects()
    assert not isinstance(failure.value, RequestRefused)


def test_writing_needs_schema_2_but_reading_works_on_1(tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "v1.db")
    monkeypatch.setitem(migrations.MIGRATIONS, ANNOTATIONS, migrations.MIGRATIONS[ANNOTATIONS][:1])
    _migrated(url)
    monkeypatch.undo()
    store = open_store({"ANNOTATIONS_DB_URL": url})
    assert store.projects() == []
    with pytest.raises(AnnotationStoreError, match="version 1 but version 2 is needed"):
        store.create_project(ProjectSpec("x tasks", "transcription"))
    store.close()


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_migration_2_keeps_every_row_of_a_filled_v1_store(engine, request, tmp_path, monkeypatch):
    url = (
        sqlite_url(tmp_path / "annotations.db")
        if engine == "sqlite"
        else request.getfixturevalue("postgres_dsn")
    )
    # Today's demo rows, copied into a store that has only migration 1 (its columns).
    demo = sqlite_url(tmp_path / "demo.db")
    generate(
        sqlite_url(tmp_path / "calls.db"),
        sqlite_url(tmp_path / "metrics.db"),
        seed=2,
        calls=60,
        annotations_db_url=demo,
    )
    monkeypatch.setitem(migrations.MIGRATIONS, ANNOTATIONS, migrations.MIGRATIONS[ANNOTATIONS][:1])
    _migrated(url)
    monkeypatch.undo()
    v1_columns = {
        "annotation_projects": "id, source, name, task_type, language, client_id, created_at",
        "annotation_tasks": "id, project_id, data, call_uuid, conversation_uuid, language,"
        " reftime, is_gold, created_at",
        "annotations": "id, task_id, annotator, tag, tagged_at",
    }
    with connect(demo) as source, connect(url) as target, target.transaction():
        for table, columns in v1_columns.items():
            rows = source.fetchall(f"SELECT {columns} FROM {table} ORDER BY id")
            if target.dialect.name == "postgresql":
                rows = [_for_postgres(table, row) for row in rows]
            marks = ", ".join("?" * len(columns.split(",")))
            target.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        if target.dialect.name == "postgresql":
            for table in v1_columns:
                target.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
    tables = ("annotation_projects", "annotation_tasks", "annotations")
    with connect(url) as db:
        assert schema_version(db, ANNOTATIONS) == 1
        before = {t: db.fetchall(f"SELECT * FROM {t} ORDER BY id") for t in tables}
        assert all(before.values())
        assert migrate(db, ANNOTATIONS) == [2]
        after = {t: db.fetchall(f"SELECT * FROM {t} ORDER BY id") for t in tables}
        if engine == "sqlite":
            assert db.fetchall("PRAGMA foreign_key_check") == []
            assert db.fetchone("PRAGMA integrity_check") == ("ok",)
    # Old columns keep their values; migration 2 appends labels and task_key.
    assert [r[:7] for r in after["annotation_projects"]] == before["annotation_projects"]
    assert [r[:9] for r in after["annotation_tasks"]] == before["annotation_tasks"]
    assert after["annotations"] == before["annotations"]

    store = open_store({"ANNOTATIONS_DB_URL": url})
    demo_tasks = len(before["annotation_tasks"])
    project = store.create_project(ProjectSpec("calls to review", "call", ("pay",)))
    assert project.id > max(r[0] for r in before["annotation_projects"])
    store.push_tasks(project.id, [NewTask("call:1", {"dialogue": []})])
    assert len(list(store.annotations([p.id for p in store.projects()]))) == len(
        before["annotations"]
    )
    with connect(url) as db:
        # Deleting a project still cascades to its tasks through the rebuilt references.
        db.execute("DELETE FROM annotation_projects WHERE id = ?", (project.id,))
        assert db.fetchone("SELECT count(*) FROM annotation_tasks") == (demo_tasks,)
    store.close()


def _for_postgres(table: str, row: tuple) -> tuple:
    """A SQLite row as PostgreSQL parameters: timestamps as datetimes, 0/1 as booleans."""
    values = list(row)
    timestamps = {"annotation_projects": (6,), "annotation_tasks": (6, 8), "annotations": (4,)}
    for i in timestamps[table]:
        if values[i] is not None:
            values[i] = datetime.fromisoformat(values[i])
    if table == "annotation_tasks":
        values[7] = bool(values[7])
    return tuple(values)
