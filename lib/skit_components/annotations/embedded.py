"""The embedded annotation store: the demo annotation database (schema "annotations" in
skit_components.migrations), SQLite or PostgreSQL, at ANNOTATIONS_DB_URL.

Reading needs schema version 1; pushing tasks needs 2 (idempotency keys, predictions, call
and conversation tasks). The store opens SQLite read-only until something is written.
SQLite 3.35 or later (`INSERT ... RETURNING`; the images' Debian bookworm has 3.40).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime
from typing import Any

from skit_components.annotations import (
    LABEL_STUDIO,
    Annotation,
    AnnotationStoreError,
    NewTask,
    Project,
    ProjectSpec,
    PushResult,
    RequestRefused,
    UnknownProject,
    check_task_type,
)
from skit_components.annotations.labeling import project_labels, unique_tasks
from skit_components.db import Database, DatabaseError, connect, redact_url
from skit_components.migrations import ANNOTATIONS, SchemaError, require_schema, schema_version

logger = logging.getLogger(__name__)

READ_SCHEMA = 1
"""The schema version reading needs."""
WRITE_SCHEMA = 2
"""The schema version creating projects and pushing tasks needs."""


class EmbeddedStore:
    """AnnotationStore over the annotation database at `database_url`."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._stack = ExitStack()
        self._db: Database | None = None
        self._writable = False
        self._version = 0

    def _open(self, *, write: bool = False) -> Database:
        if self._db is not None and (self._writable or not write):
            return self._db
        self._stack.close()
        self._stack = ExitStack()
        try:
            db = self._stack.enter_context(connect(self._url, readonly=not write))
            self._version = schema_version(db, ANNOTATIONS)
            require_schema(db, ANNOTATIONS, WRITE_SCHEMA if write else READ_SCHEMA)
        except (DatabaseError, SchemaError) as exc:
            self._stack.close()
            raise AnnotationStoreError(f"annotation database: {exc}") from exc
        self._db, self._writable = db, write
        return db

    def close(self) -> None:
        self._stack.close()
        self._db = None

    def __repr__(self) -> str:
        return f"EmbeddedStore({redact_url(self._url)!r})"

    # Projects

    def _project_query(self, db: Database) -> str:
        labels = db.dialect.json_text("labels") if self._version >= WRITE_SCHEMA else "'[]'"
        return f"SELECT id, name, task_type, source, {labels} FROM annotation_projects"

    @staticmethod
    def _project(row: Sequence[Any]) -> Project:
        return Project(
            id=int(row[0]),
            title=row[1],
            task_type=row[2],
            source=row[3],
            labels=tuple(json.loads(row[4])),
        )

    def projects(self, task_type: str | None = None) -> Sequence[Project]:
        db = self._open()
        query = self._project_query(db)
        if task_type is None:
            rows = db.fetchall(f"{query} ORDER BY id")
        else:
            rows = db.fetchall(f"{query} WHERE task_type = ? ORDER BY id", (task_type,))
        return [self._project(row) for row in rows]

    def project(self, project_id: int) -> Project:
        db = self._open()
        row = db.fetchone(f"{self._project_query(db)} WHERE id = ?", (project_id,))
        if row is None:
            raise UnknownProject(f"the annotation store has no project {project_id}")
        return self._project(row)

    def find_project(self, title: str) -> Project | None:
        db = self._open()
        # Label Studio projects before Tog jobs of the same name: new tasks go to projects.
        row = db.fetchone(
            f"{self._project_query(db)} WHERE name = ? ORDER BY source = ? DESC, id LIMIT 1",
            (title, LABEL_STUDIO),
        )
        return self._project(row) if row else None

    def create_project(self, spec: ProjectSpec) -> Project:
        check_task_type(spec.task_type)
        labels = project_labels(spec.task_type, spec.labels)
        if not spec.title.strip():
            raise RequestRefused("a project needs a title")
        db = self._open(write=True)
        with db.transaction():
            if db.fetchone(
                "SELECT 1 FROM annotation_projects WHERE source = ? AND name = ?",
                (LABEL_STUDIO, spec.title),
            ):
                raise RequestRefused(f"a project titled {spec.title!r} already exists")
            row = db.fetchone(
                "INSERT INTO annotation_projects"
                " (source, name, task_type, language, client_id, labels)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    LABEL_STUDIO,
                    spec.title,
                    spec.task_type,
                    spec.language,
                    spec.client_id,
                    json.dumps(list(labels)),
                ),
            )
        assert row is not None
        logger.info("created %s project %d %r", spec.task_type, row[0], spec.title)
        return Project(int(row[0]), spec.title, spec.task_type, LABEL_STUDIO, labels)

    # Tasks

    def push_tasks(self, project_id: int, tasks: Sequence[NewTask]) -> PushResult:
        project = self.project(project_id)
        unique = unique_tasks(project.task_type, tasks)
        db = self._open(write=True)
        d = db.dialect
        created = 0
        with db.transaction():
            for task in unique:
                row = db.fetchone(
                    "INSERT INTO annotation_tasks"
                    " (project_id, task_key, data, call_uuid, conversation_uuid, language,"
                    " reftime)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (project_id, task_key) DO NOTHING RETURNING id",
                    (
                        project_id,
                        task.key,
                        json.dumps(task.data, ensure_ascii=False, default=str),
                        task.call_uuid,
                        task.conversation_uuid,
                        task.language,
                        d.timestamp_param(task.reftime) if task.reftime else None,
                    ),
                )
                if row is None:
                    continue
                created += 1
                if task.prediction is not None:
                    db.execute(
                        "INSERT INTO annotation_predictions (task_id, model_version, score, tag)"
                        " VALUES (?, ?, ?, ?)",
                        (
                            row[0],
                            task.prediction.model_version,
                            task.prediction.score,
                            json.dumps(task.prediction.tag, ensure_ascii=False),
                        ),
                    )
        result = PushResult(project_id, created, len(tasks) - created)
        logger.info(
            "project %d: %d tasks created, %d already there", project_id, created, result.existing
        )
        return result

    # Annotations

    def annotations(
        self,
        project_ids: Sequence[int],
        *,
        tagged_from: datetime | None = None,
        tagged_until: datetime | None = None,
        latest_only: bool = False,
    ) -> Iterator[Annotation]:
        db = self._open()
        wanted = sorted(set(project_ids))
        known = {p.id for p in self.projects()}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise UnknownProject(f"the annotation store has no projects {unknown}")
        d = db.dialect
        where = [d.any_of("t.project_id")]
        params: list[Any] = [d.list_param(wanted)]
        if tagged_from is not None:
            where.append("a.tagged_at >= ?")
            params.append(d.timestamp_param(tagged_from))
        if tagged_until is not None:
            where.append("a.tagged_at < ?")
            params.append(d.timestamp_param(tagged_until))
        if latest_only:
            # A task's label is its latest annotation (a reviewer's, on gold tasks).
            where.append(
                "a.id = (SELECT l.id FROM annotations l WHERE l.task_id = a.task_id "
                "ORDER BY l.tagged_at DESC, l.id DESC LIMIT 1)"
            )
        key = "t.task_key" if self._version >= WRITE_SCHEMA else "NULL"
        query = f"""
            SELECT t.id, p.id, p.source, p.task_type, a.id, a.annotator,
                   {d.json_text("t.data")}, {d.json_text("a.tag")}, t.is_gold, a.tagged_at,
                   t.reftime, {key}
            FROM annotations a
            JOIN annotation_tasks t ON t.id = a.task_id
            JOIN annotation_projects p ON p.id = t.project_id
            WHERE {" AND ".join(where)}
            ORDER BY t.id, a.tagged_at, a.id
        """
        return self._stream(db, query, params)

    @staticmethod
    def _stream(db: Database, query: str, params: list[Any]) -> Iterator[Annotation]:
        d = db.dialect
        try:
            for row in db.stream(query, params):
                yield Annotation(
                    task_id=int(row[0]),
                    project_id=int(row[1]),
                    source=row[2],
                    task_type=row[3],
                    annotation_id=int(row[4]),
                    annotator=row[5],
                    data=json.loads(row[6]),
                    tag=json.loads(row[7]),
                    is_gold=bool(row[8]),
                    tagged_time=d.to_datetime(row[9]),
                    reftime=d.to_datetime(row[10]) if row[10] is not None else None,
                    extra={"task_key": row[11] or ""},
                )
        except DatabaseError as exc:
            raise AnnotationStoreError(f"annotation database: {exc}") from exc
