"""push_annotation_tasks: push tasks into a project of the annotation store for people to label.

The tasks come from a dataset: one task per caller turn of a turns CSV (`intent`: the
utterance to pick an intent for, with the SLU model's prediction attached when the CSV has
one, so annotators start from it), one per call of a turns CSV (`call`: the whole dialogue),
or one per generated conversation of a conversations JSON lines file (`conversation`).

The project is the id given, or the one with the title given, created (with the store's
labeling config for the task type) when asked. Each task carries a stable key (the turn's
uuid, the call's uuid, a hash of the conversation), and the store skips keys the project
already holds, so rerunning a run adds nothing twice. The store is whichever the step's
env names (`skit_components.annotations.open_store`): Label Studio or the embedded one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.annotations import (
    AnnotationStore,
    AnnotationStoreError,
    NewTask,
    Prediction,
    Project,
    ProjectSpec,
    RequestRefused,
    UnknownProject,
    open_store,
)
from skit_components.conversations import conversation_key
from skit_components.outputs import write_json, write_parameter

logger = logging.getLogger("push_annotation_tasks")

TASK_TYPES = ("intent", "call", "conversation")
"""The task types this component makes (the store also knows entity and transcription)."""
PREDICTED_INTENT = "predicted_intent"
PREDICTION_MODEL = "prediction_model"
PREDICTED_SCORE = "predicted_score"
"""The prediction columns pre_annotate_turns adds to a turns CSV."""
BATCH_SIZE = 500
"""Tasks per push request: Label Studio imports 100 tasks in 0.08 s, and a failed batch
loses no more than this much progress (a rerun skips what was pushed)."""
MIN_TITLE_CHARS = 3
MAX_TITLE_CHARS = 50
"""Label Studio refuses shorter and longer project titles."""
_TURN_KEYS = (
    "call_id",
    "call_uuid",
    "conversation_uuid",
    "turn_index",
    "reftime",
    "language",
    "state",
    "bot_response",
    "audio_url",
    "call_url",
    "flow_id",
    "client_id",
    "template_id",
)
"""Turn CSV columns copied into an intent task's data as they are (besides `text`,
`utterances`, `intent`, `intent_score`, `entities` and `slots`, which are typed below) — the
keys the demo store's intent tasks have."""
_INT_KEYS = ("call_id", "turn_index", "flow_id", "client_id", "template_id")
_REQUIRED = {
    "intent": ("call_uuid", "conversation_uuid", "primary_utterance"),
    "call": ("call_uuid", "turn_index", "bot_response", "primary_utterance"),
}


@dataclass(frozen=True)
class Options:
    task_type: str
    project_id: int = 0
    """An existing project; 0 to find (or create) one by `project_title`."""
    project_title: str = ""
    create_project: bool = False
    labels: tuple[str, ...] = ()
    """The choices of a created project; empty for the intents in the data."""
    language: str = ""
    """The language of a created project; empty for the data's when it has one."""


@dataclass(frozen=True)
class Pushed:
    """What one push did; the step's outputs."""

    project: Project
    project_created: bool
    tasks: int
    created: int
    existing: int
    predictions: int
    labels: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "project_id": self.project.id,
            "project_title": self.project.title,
            "project_created": self.project_created,
            "task_type": self.project.task_type,
            "tasks": self.tasks,
            "created": self.created,
            "existing": self.existing,
            "with_prediction": self.predictions,
            "labels": list(self.labels),
        }


def read_tasks(path: Path, task_type: str) -> list[NewTask]:
    """The tasks in the dataset at `path`, in its order.

    Raises:
        cli.BadInput: an unknown task type, a file that is not the expected dataset, or no task.
    """
    if task_type not in TASK_TYPES:
        raise cli.BadInput(f"task_type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    if not path.is_file():
        raise cli.BadInput(f"the tasks dataset {path} does not exist")
    if task_type == "conversation":
        tasks = list(_conversation_tasks(path))
    else:
        rows = _read_turns(path, _REQUIRED[task_type])
        tasks = list(_intent_tasks(rows) if task_type == "intent" else _call_tasks(rows))
    if not tasks:
        what = {
            "intent": "caller turns with an utterance",
            "call": "calls",
            "conversation": "conversations",
        }[task_type]
        raise cli.BadInput(f"the dataset {path.name} has no {what}: nothing to push")
    return tasks


def _read_turns(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise cli.BadInput(
                f"{path.name} is not a turns CSV (fetch_calls): no column {', '.join(missing)}"
            )
        return list(reader)


def _intent_tasks(rows: Sequence[Mapping[str, str]]) -> Iterator[NewTask]:
    seen: set[str] = set()
    for row in rows:
        text = row["primary_utterance"].strip()
        uuid = row["conversation_uuid"].strip()
        if not text or not uuid or uuid in seen:
            continue
        seen.add(uuid)
        data: dict[str, Any] = {key: row[key] for key in _TURN_KEYS if key in row}
        for key in _INT_KEYS:
            if data.get(key, "") != "":
                data[key] = int(float(data[key]))
        data["text"] = text
        data["utterances"] = _json_cell(row.get("utterances", ""), [])
        data["intent"] = row.get("intent", "")
        data["intent_score"] = _float_or_none(row.get("intent_score", ""))
        data["entities"] = _json_cell(row.get("entities", ""), [])
        data["slots"] = _json_cell(row.get("slots", ""), {})
        predicted = row.get(PREDICTED_INTENT, "").strip()
        prediction = (
            Prediction(
                tag={"choices": [predicted]},
                model_version=row.get(PREDICTION_MODEL, "").strip() or "unknown",
                score=_float_or_none(row.get(PREDICTED_SCORE, "")),
            )
            if predicted
            else None
        )
        yield NewTask(
            key=f"turn:{uuid}",
            data=data,
            prediction=prediction,
            call_uuid=row["call_uuid"],
            conversation_uuid=uuid,
            language=row.get("language", ""),
            reftime=_time_or_none(row.get("reftime", "")),
        )


def _call_tasks(rows: Sequence[Mapping[str, str]]) -> Iterator[NewTask]:
    calls: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        if row["call_uuid"].strip():
            calls.setdefault(row["call_uuid"].strip(), []).append(row)
    for call_uuid, turns in calls.items():
        turns = sorted(turns, key=lambda r: int(float(r["turn_index"] or 0)))
        first = turns[0]
        dialogue: list[dict[str, Any]] = []
        for turn in turns:
            if turn["bot_response"].strip():
                dialogue.append({"role": "bot", "text": turn["bot_response"].strip()})
            if turn["primary_utterance"].strip():
                dialogue.append(
                    {
                        "role": "user",
                        "text": turn["primary_utterance"].strip(),
                        "turn_uuid": turn.get("conversation_uuid", ""),
                        "intent": turn.get("intent", ""),
                        "audio_url": turn.get("audio_url", ""),
                    }
                )
        data: dict[str, Any] = {
            "call_uuid": call_uuid,
            "call_id": _int_or_none(first.get("call_id", "")),
            "call_url": first.get("call_url", ""),
            "language": first.get("language", ""),
            "reftime": first.get("reftime", ""),
            "flow_id": _int_or_none(first.get("flow_id", "")),
            "flow_name": first.get("flow_name", ""),
            "client_id": _int_or_none(first.get("client_id", "")),
            "template_id": _int_or_none(first.get("template_id", "")),
            "call_type": first.get("call_type", ""),
            "call_end_status": first.get("call_end_status", ""),
            "duration": _float_or_none(first.get("call_duration", "")),
            "dialogue": _dialogue(dialogue),
            "turns": dialogue,
        }
        yield NewTask(
            key=f"call:{call_uuid}",
            data=data,
            call_uuid=call_uuid,
            language=first.get("language", ""),
            reftime=_time_or_none(first.get("reftime", "")),
        )


def _conversation_tasks(path: Path) -> Iterator[NewTask]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                turns = [{"role": str(t["role"]), "text": str(t["text"])} for t in record["turns"]]
                data = {
                    "situation_id": int(record["situation_id"]),
                    "situation": str(record["situation"]),
                    "scenario": str(record["scenario"]),
                    "scenario_category": str(record["scenario_category"]),
                    "generator": str(record.get("generator", "")),
                    "index": int(record.get("index", 0)),
                    "dialogue": _dialogue(turns),
                    "turns": turns,
                }
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise cli.BadInput(
                    f"{path.name} line {number} is not a generated conversation "
                    f"(generate_conversations): {type(exc).__name__}: {exc}"
                ) from None
            yield NewTask(key=f"conversation:{conversation_key(record)}", data=data)


def _dialogue(turns: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The turns as Label Studio's Paragraphs (dialogue layout) read them: author and text."""
    return [{"author": str(t["role"]), "text": str(t["text"])} for t in turns]


def labels_in(tasks: Sequence[NewTask]) -> tuple[str, ...]:
    """The intents a project of these tasks offers by default: the bot's predictions and the
    SLU model's, sorted."""
    found: set[str] = set()
    for task in tasks:
        intent = task.data.get("intent")
        if isinstance(intent, str) and intent.strip():
            found.add(intent.strip())
        for turn in task.data.get("turns", ()) or ():
            if isinstance(turn, Mapping) and str(turn.get("intent", "")).strip():
                found.add(str(turn["intent"]).strip())
        if task.prediction is not None:
            for choice in task.prediction.tag.get("choices", ()):
                found.add(str(choice))
    return tuple(sorted(found))


def resolve_project(
    store: AnnotationStore, options: Options, labels: tuple[str, ...], language: str
) -> tuple[Project, bool]:
    """The project to push into, and whether this call created it.

    Raises:
        cli.BadInput: an unknown project id, a project of another task type, no project
            with the title (and none to be created), or neither id nor title.
    """
    o = options
    if o.project_id:
        try:
            project = store.project(o.project_id)
        except UnknownProject as exc:
            raise cli.BadInput(f"unknown annotation project {o.project_id}: {exc}") from None
        _check_type(project, o.task_type)
        return project, False
    title = o.project_title.strip()
    if not title:
        raise cli.BadInput("give project_id, or project_title to find (or create) the project")
    if not MIN_TITLE_CHARS <= len(title) <= MAX_TITLE_CHARS:
        raise cli.BadInput(
            f"project_title must be {MIN_TITLE_CHARS} to {MAX_TITLE_CHARS} characters, "
            f"got {len(title)}"
        )
    found = store.find_project(title)
    if found is not None:
        _check_type(found, o.task_type)
        return found, False
    if not o.create_project:
        raise cli.BadInput(
            f"no annotation project is titled {title!r}; set create_project to create it"
        )
    spec = ProjectSpec(title=title, task_type=o.task_type, labels=labels, language=language)
    project = store.create_project(spec)
    logger.info(
        "created %s project %d %r with %d labels", o.task_type, project.id, title, len(labels)
    )
    return project, True


def _check_type(project: Project, task_type: str) -> None:
    if project.task_type != task_type:
        raise cli.BadInput(
            f"annotation project {project.id} ({project.title!r}) holds {project.task_type} "
            f"tasks, not {task_type} tasks"
        )


def push(store: AnnotationStore, tasks: Sequence[NewTask], options: Options) -> Pushed:
    """Pushes `tasks` into the project `options` name, in batches.

    Raises:
        cli.BadInput: see `resolve_project`; the store refused a request (a rejected token,
            a taken title, data its labeling config cannot show).
        cli.ComponentError: the store is unusable (unreachable, a database that cannot be
            used), with its one-line reason.
    """
    labels = options.labels or labels_in(tasks)
    languages = {t.language for t in tasks if t.language}
    language = options.language or (languages.pop() if len(languages) == 1 else "")
    try:
        project, created_project = resolve_project(store, options, labels, language)
        created = existing = 0
        for start in range(0, len(tasks), BATCH_SIZE):
            result = store.push_tasks(project.id, tasks[start : start + BATCH_SIZE])
            created += result.created
            existing += result.existing
    except RequestRefused as exc:
        # A wrong token, a taken title, data the labeling config cannot show: retrying
        # will not help.
        raise cli.BadInput(f"annotation store: {exc}") from None
    except AnnotationStoreError as exc:
        raise cli.ComponentError(f"annotation store: {exc}") from None
    if created + existing != len(tasks):
        raise cli.ComponentError(
            f"the annotation store accounted for {created + existing} of {len(tasks)} tasks"
        )
    predictions = sum(t.prediction is not None for t in tasks)
    logger.info(
        "pushed %d %s tasks into project %d: %d created, %d already there; %d with a prediction",
        len(tasks),
        options.task_type,
        project.id,
        created,
        existing,
        predictions,
    )
    return Pushed(project, created_project, len(tasks), created, existing, predictions, labels)


def _json_cell(text: str, empty: Any) -> Any:
    if not text.strip():
        return empty
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _float_or_none(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


def _int_or_none(text: str) -> int | None:
    value = _float_or_none(text)
    return int(value) if value is not None else None


def _time_or_none(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip()) if text.strip() else None
    except ValueError:
        return None
    return moment if moment is None or moment.tzinfo is not None else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="push_annotation_tasks", description=__doc__)
    parser.add_argument("--tasks", type=Path, required=True, help="input: the dataset")
    parser.add_argument("--task-type", required=True)
    parser.add_argument("--project-id", type=cli.integer, default=0)
    parser.add_argument("--project-title", default="")
    parser.add_argument("--create-project", type=cli.boolean, default=False)
    parser.add_argument("--labels", type=cli.json_list(str), default=[])
    parser.add_argument("--language", default="")
    parser.add_argument("--pushed-project-id", type=Path, required=True, help="output")
    parser.add_argument("--created-count", type=Path, required=True, help="output")
    parser.add_argument("--existing-count", type=Path, required=True, help="output")
    parser.add_argument("--summary", type=Path, required=True, help="output: JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, pushes the tasks, writes the outputs; returns the exit code."""

    def body() -> None:
        args = _parse_args(argv)
        options = Options(
            task_type=args.task_type.strip(),
            project_id=args.project_id,
            project_title=args.project_title,
            create_project=args.create_project,
            labels=tuple(sorted({str(label).strip() for label in args.labels} - {""})),
            language=args.language.strip(),
        )
        if options.project_id < 0:
            raise cli.BadInput(
                f"project_id must be positive (0: by title), got {options.project_id}"
            )
        tasks = read_tasks(args.tasks, options.task_type)
        try:
            store = open_store(os.environ)
        except AnnotationStoreError as exc:
            raise cli.BadInput(f"annotation store: {exc}") from None
        try:
            pushed = push(store, tasks, options)
        finally:
            store.close()
        write_parameter(args.pushed_project_id, pushed.project.id)
        write_parameter(args.created_count, pushed.created)
        write_parameter(args.existing_count, pushed.existing)
        write_json(args.summary, pushed.summary())

    return cli.run("push_annotation_tasks", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
