"""The Label Studio annotation store: a Label Studio server over its HTTP API, with plain
`requests` and `Authorization: Token <token>` (a user's legacy API token).

Shapes used, as Label Studio 1.23.2 serves them (API reference api.labelstud.io; source
HumanSignal/label-studio, paths under label_studio/):

- `GET /api/projects/?page=&page_size=` -> `{"count", "next", "results": [project]}`
  (projects/api.py ProjectListAPI, DRF page-number pagination); a project carries `id`,
  `title`, `label_config` and `parsed_label_config` (control name -> {"type", "labels",
  "inputs": [{"type"}]}).
- `GET /api/projects/N/` -> the project, 404 `{"detail": "No Project matches the given
  query."}` when there is none (projects/api.py ProjectAPI).
- `POST /api/projects/` `{"title", "label_config", "description"}` -> 201 the project; the
  title must be 3 to 50 characters (projects/models.py Project.title).
- `GET /api/tasks/?project=N&page=&page_size=&include=id,data` -> `{"total", "tasks":
  [{"id", "data"}]}`; a page past the end is 404 "Invalid page." (data_manager/api.py
  TaskListAPI via tasks/api.py, "List tasks" in the API reference).
- `POST /api/projects/N/import` with a JSON list of `{"data": {...}, "predictions":
  [{"model_version", "score", "result": [...]}]}` -> 201 `{"task_count",
  "prediction_count", ...}`; predictions inline in the task are the documented way to
  pre-annotate (data_import/api.py ImportAPI; guide "Import pre-annotated data").
- `GET /api/projects/N/export?exportType=JSON` -> a JSON list of the annotated tasks, each
  `{"id", "data", "annotations": [{"id", "completed_by", "result", "ground_truth",
  "was_cancelled", "created_at", "updated_at"}]}` (data_export/api.py ExportAPI, "Easy
  export"; `completed_by` is a user id).
- `GET /api/users/` -> `[{"id", "email", ...}]` (users/api.py UserAPI), for annotators' emails.
- Errors are JSON `{"status_code", "detail", "validation_errors"}`
  (core/utils/common.py custom_exception_handler); a wrong token is 401 "Invalid token."

Idempotency: each task's key is kept in its data as `skit_key` (with the NewTask's call and
conversation uuids, language and reference time as `skit_*` keys); a push first lists the
keys the project holds and imports only the others. Two pushes running at the same moment
into one project can still both import a task: pushes are meant to be rerun, not raced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

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
from skit_components.annotations.labeling import (
    label_config,
    project_labels,
    result_to_tag,
    tag_to_result,
    unique_tasks,
)

logger = logging.getLogger(__name__)

KEY_FIELD = "skit_key"
"""The task data key holding a task's idempotency key."""
META_PREFIX = "skit_"
"""Task data keys we add (KEY_FIELD and the NewTask's metadata); readers take them out of
`data` again, so both stores give the same `raw.*` columns."""
TIMEOUT_SECONDS = 60.0
"""Per request; an export of a large project is one long response."""
IMPORT_BATCH = 500
"""Tasks per import request (the server's limit is 250k tasks or 200 MB per request)."""
PAGE_SIZE = 1000
GET_ATTEMPTS = 3
"""Reads are retried on connection errors and 5xx; writes are not (an import that reached
the server must not be sent twice)."""
RETRY_DELAY_SECONDS = 1.0
TITLE_LENGTH = (3, 50)
"""Label Studio's bounds on a project title."""


class LabelStudioStore:
    """AnnotationStore over the Label Studio server at `url` (e.g. http://127.0.0.1:8080)."""

    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RequestRefused(
                f"LABEL_STUDIO_URL {url!r} is not an http(s) URL like http://label-studio:8080"
            )
        self.url = url.strip().rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token.strip()}"
        self._session.headers["Accept"] = "application/json"
        self._users: dict[int, str] | None = None

    def close(self) -> None:
        self._session.close()

    def __repr__(self) -> str:
        return f"LabelStudioStore({self.url!r})"

    # HTTP

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        project_id: int | None = None,
    ) -> Any:
        """The response's JSON. One line AnnotationStoreError for anything else;
        UnknownProject for a 404 on a request about `project_id`."""
        url = f"{self.url}{path}"
        attempts = GET_ATTEMPTS if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._session.request(
                    method, url, params=params, json=body, timeout=self._timeout
                )
            except requests.RequestException as exc:
                if attempt < attempts:
                    time.sleep(RETRY_DELAY_SECONDS * attempt)
                    continue
                raise AnnotationStoreError(
                    f"Label Studio at {self.url} is unreachable ({method} {path}): "
                    f"{type(exc).__name__}: {_first_line(exc)}"
                ) from exc
            if response.status_code >= 500 and attempt < attempts:
                time.sleep(RETRY_DELAY_SECONDS * attempt)
                continue
            return self._decode(response, method, path, project_id)
        raise AssertionError("unreachable")

    def _decode(
        self, response: requests.Response, method: str, path: str, project_id: int | None
    ) -> Any:
        status = response.status_code
        if status in (401, 403):
            raise RequestRefused(
                f"Label Studio at {self.url} refused the token (HTTP {status}: "
                f"{_detail(response)}): check LABEL_STUDIO_TOKEN; legacy tokens also need "
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server"
            )
        if status == 404 and project_id is not None:
            raise UnknownProject(f"Label Studio at {self.url} has no project {project_id}")
        if 400 <= status < 500:
            raise RequestRefused(
                f"Label Studio at {self.url}: {method} {path} failed with HTTP {status}: "
                f"{_detail(response)}"
            )
        if status >= 400:
            raise AnnotationStoreError(
                f"Label Studio at {self.url}: {method} {path} failed with HTTP {status}: "
                f"{_detail(response)}"
            )
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise AnnotationStoreError(
                f"{self.url} answered {method} {path} with {kind}, not Label Studio's JSON: "
                "is LABEL_STUDIO_URL the server's base URL?"
            ) from None

    # Projects

    def projects(self, task_type: str | None = None) -> Sequence[Project]:
        found: list[Project] = []
        page = 1
        while True:
            listing = self._request(
                "GET", "/api/projects/", params={"page": page, "page_size": 100}
            )
            found.extend(_project(item) for item in listing.get("results", []))
            if not listing.get("next"):
                break
            page += 1
        return [p for p in found if task_type is None or p.task_type == task_type]

    def project(self, project_id: int) -> Project:
        return _project(
            self._request("GET", f"/api/projects/{int(project_id)}/", project_id=project_id)
        )

    def find_project(self, title: str) -> Project | None:
        matches = [p for p in self.projects() if p.title == title]
        return min(matches, key=lambda p: p.id) if matches else None

    def create_project(self, spec: ProjectSpec) -> Project:
        check_task_type(spec.task_type)
        labels = project_labels(spec.task_type, spec.labels)
        low, high = TITLE_LENGTH
        if not low <= len(spec.title) <= high:
            raise RequestRefused(
                f"Label Studio project titles are {low} to {high} characters; "
                f"{spec.title!r} has {len(spec.title)}"
            )
        if self.find_project(spec.title) is not None:
            raise RequestRefused(
                f"Label Studio at {self.url} already has a project titled {spec.title!r}"
            )
        description = f"skit-pipelines {spec.task_type} tasks"
        if spec.language:
            description += f", language {spec.language}"
        if spec.client_id is not None:
            description += f", client {spec.client_id}"
        created = self._request(
            "POST",
            "/api/projects/",
            body={
                "title": spec.title,
                "label_config": label_config(spec.task_type, labels),
                "description": description,
            },
        )
        project = _project(created)
        logger.info("created Label Studio %s project %d %r", spec.task_type, project.id, spec.title)
        return project

    # Tasks

    def task_keys(self, project_id: int) -> set[str]:
        """The idempotency keys of the project's tasks."""
        keys: set[str] = set()
        page, seen = 1, 0
        while True:
            listing = self._request(
                "GET",
                "/api/tasks/",
                params={"project": project_id, "page": page, "page_size": PAGE_SIZE,
                        "include": "id,data"},
                project_id=project_id,
            )  # fmt: skip
            tasks = listing.get("tasks", [])
            for task in tasks:
                key = (task.get("data") or {}).get(KEY_FIELD)
                if isinstance(key, str):
                    keys.add(key)
            seen += len(tasks)
            if not tasks or seen >= int(listing.get("total", 0)):
                return keys
            page += 1

    def push_tasks(self, project_id: int, tasks: Sequence[NewTask]) -> PushResult:
        project = self.project(project_id)
        unique = unique_tasks(project.task_type, tasks)
        held = self.task_keys(project_id)
        new = [task for task in unique if task.key not in held]
        for start in range(0, len(new), IMPORT_BATCH):
            batch = new[start : start + IMPORT_BATCH]
            reply = self._request(
                "POST",
                f"/api/projects/{project_id}/import",
                body=[_import_item(project.task_type, task) for task in batch],
                project_id=project_id,
            )
            if int(reply.get("task_count", len(batch))) != len(batch):
                raise AnnotationStoreError(
                    f"Label Studio at {self.url} imported {reply.get('task_count')} of "
                    f"{len(batch)} tasks into project {project_id}"
                )
        result = PushResult(project_id, len(new), len(tasks) - len(new))
        logger.info(
            "Label Studio project %d: %d tasks created, %d already there",
            project_id,
            result.created,
            result.existing,
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
        found: list[Annotation] = []
        for project_id in sorted(set(project_ids)):
            project = self.project(project_id)
            exported = self._request(
                "GET",
                f"/api/projects/{project_id}/export",
                params={"exportType": "JSON"},
                project_id=project_id,
            )
            for task in exported:
                labels = [
                    self._annotation(project, task, item)
                    for item in task.get("annotations", [])
                    # A skipped task is a cancelled annotation with no label.
                    if not item.get("was_cancelled")
                ]
                labels.sort(key=lambda a: (a.tagged_time, a.annotation_id))
                if latest_only:
                    labels = labels[-1:]
                found.extend(
                    a
                    for a in labels
                    if (tagged_from is None or a.tagged_time >= tagged_from)
                    and (tagged_until is None or a.tagged_time < tagged_until)
                )
        found.sort(key=lambda a: (a.task_id, a.tagged_time, a.annotation_id))
        return iter(found)

    def _annotation(
        self, project: Project, task: Mapping[str, Any], item: Mapping[str, Any]
    ) -> Annotation:
        raw = dict(task.get("data") or {})
        meta = {k: raw.pop(k) for k in list(raw) if k.startswith(META_PREFIX)}
        reftime = meta.get("skit_reftime")
        return Annotation(
            task_id=int(task["id"]),
            project_id=project.id,
            task_type=project.task_type,
            annotation_id=int(item["id"]),
            annotator=self._annotator(item.get("completed_by")),
            data=raw,
            tag=result_to_tag(project.task_type, item.get("result") or []),
            # updated_at: an annotator's later edit is the label's current value.
            tagged_time=_instant(item.get("updated_at") or item["created_at"]),
            is_gold=bool(item.get("ground_truth")),
            reftime=_instant(reftime) if isinstance(reftime, str) and reftime else None,
            extra={"task_key": meta.get(KEY_FIELD, ""), **meta},
            source=LABEL_STUDIO,
        )

    def _annotator(self, completed_by: Any) -> str:
        if isinstance(completed_by, Mapping):
            return str(completed_by.get("email") or completed_by.get("id", ""))
        if self._users is None:
            try:
                users = self._request("GET", "/api/users/")
            except RequestRefused:
                # A token that may export but not list the organisation's users: ids then.
                users = []
            self._users = {int(u["id"]): str(u.get("email") or u["id"]) for u in users}
        if isinstance(completed_by, int) and completed_by in self._users:
            return self._users[completed_by]
        return "" if completed_by is None else str(completed_by)


def _import_item(task_type: str, task: NewTask) -> dict[str, Any]:
    data = dict(task.data)
    data[KEY_FIELD] = task.key
    for name, value in (
        ("skit_call_uuid", task.call_uuid),
        ("skit_conversation_uuid", task.conversation_uuid),
        ("skit_language", task.language),
        ("skit_reftime", task.reftime.astimezone(UTC).isoformat() if task.reftime else ""),
    ):
        if value:
            data[name] = value
    item: dict[str, Any] = {"data": data}
    if task.prediction is not None:
        prediction: dict[str, Any] = {
            "model_version": task.prediction.model_version,
            "result": tag_to_result(task_type, task.prediction.tag),
        }
        if task.prediction.score is not None:
            prediction["score"] = task.prediction.score
        item["predictions"] = [prediction]
    return item


def _project(item: Mapping[str, Any]) -> Project:
    task_type, labels = _task_type(item.get("parsed_label_config") or {})
    return Project(
        id=int(item["id"]),
        title=str(item.get("title") or ""),
        task_type=task_type,
        source=LABEL_STUDIO,
        labels=labels,
    )


def _task_type(parsed: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A project's task type read from its parsed labeling config, so projects made by hand
    with a config like ours are read too: span Labels -> entity, a TextArea on Audio ->
    transcription, Choices on a dialogue -> call (conversation when the control is our
    "verdict"), Choices on Text -> intent; "" when none fits."""
    controls = {name: c for name, c in parsed.items() if isinstance(c, Mapping)}

    def inputs(control: Mapping[str, Any]) -> set[str]:
        return {str(i.get("type", "")).lower() for i in control.get("inputs", [])}

    def labels(control: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(label) for label in control.get("labels", []))

    for control in controls.values():
        if control.get("type") == "Labels":
            return "entity", labels(control)
    for control in controls.values():
        if control.get("type") == "TextArea" and inputs(control) & {"audio", "audioplus"}:
            return "transcription", ()
    for name, control in controls.items():
        if control.get("type") == "Choices" and "paragraphs" in inputs(control):
            return ("conversation" if name == "verdict" else "call"), labels(control)
    for control in controls.values():
        if control.get("type") == "Choices" and inputs(control) & {"text", "hypertext"}:
            return "intent", labels(control)
    return "", ()


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _detail(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return text[:200] or response.reason
    if isinstance(payload, Mapping):
        detail = str(payload.get("detail") or "")
        errors = payload.get("validation_errors")
        if errors:
            detail = f"{detail} {errors}".strip()
        return detail or str(payload)[:200]
    return str(payload)[:200]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
