"""Annotation stores: where tasks are pushed for people to label and where their labels are
read back. Two implementations behind one interface, chosen by the step's declared env:

- Label Studio (`LABEL_STUDIO_URL` and `LABEL_STUDIO_TOKEN`): a real Label Studio server over
  its HTTP API (`label_studio.py`).
- The embedded store (`ANNOTATIONS_DB_URL`): the demo annotation database, the default of the
  embedded service (`embedded.py`).

Components open a store with `open_store()` and never know which one they got. `labeling.py`
holds what annotators see per task type (Label Studio labeling configs) and the mapping between
Label Studio results and our tag JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

LABEL_STUDIO_URL_ENV = "LABEL_STUDIO_URL"
LABEL_STUDIO_TOKEN_ENV = "LABEL_STUDIO_TOKEN"
ANNOTATIONS_DB_ENV = "ANNOTATIONS_DB_URL"

TASK_TYPES = ("intent", "entity", "transcription", "call", "conversation")
"""intent/entity/transcription: one caller turn per task; call: a whole call per task;
conversation: a generated conversation per task."""


class AnnotationStoreError(Exception):
    """The store cannot be used: unreachable, a rejected token, a refused request. The message
    is one line a person can act on (which URL, which status, what the server said)."""


class RequestRefused(AnnotationStoreError):
    """The store refused the request as given: a rejected token, a missing setting, a title
    already taken, task data the labeling config cannot show. Retrying will not help, so
    components exit with 2 (bad input) on it, and with 13 on other AnnotationStoreErrors
    (an unreachable server, an unusable database)."""


class UnknownProject(RequestRefused):
    """A project id the store does not have."""


LABEL_STUDIO = "label_studio"
TOG = "tog"
SOURCES = (LABEL_STUDIO, TOG)
"""Where a project's labels were made: a Label Studio project or a (legacy) Tog job. Only the
embedded store holds Tog jobs (the demo's history); everything created now is Label Studio."""


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    task_type: str
    """One of TASK_TYPES; "" for a Label Studio project whose labeling config fits none of
    ours (made by hand for something else), which no component selects."""
    source: str = LABEL_STUDIO
    """One of SOURCES."""
    labels: tuple[str, ...] = ()
    """The choices its labeling config offers (empty when the store does not know them)."""


@dataclass(frozen=True)
class ProjectSpec:
    """A project to create when none has this title."""

    title: str
    task_type: str
    """One of TASK_TYPES; decides the labeling config."""
    labels: tuple[str, ...] = ()
    """The choices an annotator picks from (intents for intent and call tasks)."""
    language: str = ""
    client_id: int | None = None


@dataclass(frozen=True)
class Prediction:
    """A model's label attached to a task so annotators start from it (Label Studio's
    predictions)."""

    tag: Mapping[str, Any]
    """The label in the same tag JSON as `Annotation.tag` for the project's task type (see
    there), e.g. {"choices": ["confirm"]} for an intent task."""
    model_version: str
    score: float | None = None


@dataclass(frozen=True)
class NewTask:
    key: str
    """Stable idempotency key (e.g. "turn:<turn uuid>", "call:<call uuid>"): pushing a task whose
    key the project already holds creates nothing, so a rerun does not duplicate tasks."""
    data: Mapping[str, Any]
    """The task's data as the labeling config reads it."""
    prediction: Prediction | None = None
    call_uuid: str = ""
    conversation_uuid: str = ""
    language: str = ""
    reftime: datetime | None = None


@dataclass(frozen=True)
class PushResult:
    project_id: int
    created: int
    """Tasks created by this push."""
    existing: int
    """Tasks skipped because the project already held their key."""


@dataclass(frozen=True)
class Annotation:
    """One annotation of a task, as fetch_tagged_dataset writes it."""

    task_id: int
    project_id: int
    task_type: str
    annotation_id: int
    annotator: str
    data: Mapping[str, Any]
    tag: Any
    """The label as JSON, by task type:

    - intent, call: {"choices": [intent, ...]}
    - entity: {"entities": [{"type": "date", "text": "...", "start": 3, "end": 9}, ...]}
      (character offsets into data["text"])
    - transcription: {"text": "..."}
    - conversation: {"choices": [verdict, ...]} plus "text" (the reviewer's notes) when given
    """
    tagged_time: datetime
    """When the label got its current value (aware, UTC)."""
    is_gold: bool = False
    reftime: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str = LABEL_STUDIO
    """The project's source (SOURCES)."""


class AnnotationStore(Protocol):
    def projects(self, task_type: str | None = None) -> Sequence[Project]: ...

    def project(self, project_id: int) -> Project:
        """Raises UnknownProject."""
        ...

    def find_project(self, title: str) -> Project | None: ...

    def create_project(self, spec: ProjectSpec) -> Project: ...

    def push_tasks(self, project_id: int, tasks: Sequence[NewTask]) -> PushResult: ...

    def annotations(
        self,
        project_ids: Sequence[int],
        *,
        tagged_from: datetime | None = None,
        tagged_until: datetime | None = None,
        latest_only: bool = False,
    ) -> Iterator[Annotation]:
        """Every annotation of the projects' tasks tagged in [tagged_from, tagged_until), in
        task id order, then tagged time, then annotation id. `latest_only`: each task's
        latest annotation only (a task whose latest annotation is outside the range is left
        out). Raises UnknownProject for an id the store does not have."""
        ...

    def close(self) -> None: ...


def check_task_type(task_type: str) -> str:
    """`task_type` if it is one of TASK_TYPES; RequestRefused otherwise."""
    if task_type not in TASK_TYPES:
        raise RequestRefused(
            f"unknown task type {task_type!r}: expected one of {', '.join(TASK_TYPES)}"
        )
    return task_type


def open_store(env: Mapping[str, str]) -> AnnotationStore:
    """Label Studio when LABEL_STUDIO_URL is set (LABEL_STUDIO_TOKEN required), else the
    embedded store at ANNOTATIONS_DB_URL; RequestRefused naming the variables when neither
    is set. Nothing is contacted yet: a bad URL or token fails on first use."""
    url = env.get(LABEL_STUDIO_URL_ENV, "").strip()
    if url:
        token = env.get(LABEL_STUDIO_TOKEN_ENV, "").strip()
        if not token:
            raise RequestRefused(
                f"{LABEL_STUDIO_URL_ENV} is set but {LABEL_STUDIO_TOKEN_ENV} is not: Label "
                "Studio needs an API token (Account & Settings, or `label-studio user`)"
            )
        from skit_components.annotations.label_studio import LabelStudioStore

        return LabelStudioStore(url, token)
    database_url = env.get(ANNOTATIONS_DB_ENV, "").strip()
    if database_url:
        from skit_components.annotations.embedded import EmbeddedStore

        return EmbeddedStore(database_url)
    raise RequestRefused(
        f"no annotation store configured: set {LABEL_STUDIO_URL_ENV} and "
        f"{LABEL_STUDIO_TOKEN_ENV} for Label Studio, or {ANNOTATIONS_DB_ENV} for the "
        "embedded store"
    )
