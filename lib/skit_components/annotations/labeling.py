"""What annotators see and what their labels look like, per task type: the Label Studio
labeling configs (XML) of our projects, the task data each needs, and the two-way mapping
between Label Studio's annotation/prediction `result` lists and our tag JSON
(`Annotation.tag`).

Label Studio's shapes, from its documentation and source (label-studio 1.23.2):

- Labeling configs: control tags name a `toName` object tag; object tags read task data by
  `value="$key"` (labelstud.io/tags/choices, /tags/labels, /tags/textarea, /tags/paragraphs).
  Import checks that every `$key` a config uses is in each task's data
  (label_studio/data_import/api.py, "Imported data is verified against a project
  label_config"), so push_tasks checks REQUIRED_DATA first and says which key is missing.
- A result item is `{"from_name", "to_name", "type", "value"}` with `value` by type:
  choices `{"choices": [...]}`, labels `{"start", "end", "text", "labels": [...]}`
  (character offsets into the Text), textarea `{"text": [...]}`
  (labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from skit_components.annotations import NewTask, RequestRefused

DEFAULT_LABELS: Mapping[str, tuple[str, ...]] = {
    "entity": ("date", "time"),
    "conversation": ("good", "bad"),
}
"""Labels a project of these types offers when its spec names none; intent and call
projects must name theirs (the intents)."""


@dataclass(frozen=True)
class Layout:
    """Which tags of a task type's config carry the label."""

    object_name: str
    """The object tag the controls label (to_name)."""
    choices: str = ""
    """The Choices control's name, when the type has one."""
    labels: str = ""
    """The Labels (span) control's name."""
    textarea: str = ""
    """The TextArea control's name."""
    required_data: tuple[str, ...] = ()
    """Task data keys the config reads."""


LAYOUTS: Mapping[str, Layout] = {
    "intent": Layout("text", choices="intent", required_data=("text",)),
    "entity": Layout("text", labels="entities", required_data=("text",)),
    "transcription": Layout("audio", textarea="transcription", required_data=("audio_url", "text")),
    "call": Layout("dialogue", choices="intent", required_data=("dialogue",)),
    "conversation": Layout(
        "dialogue", choices="verdict", textarea="notes", required_data=("dialogue",)
    ),
}
"""Per task type. `dialogue` is a list of {"author": ..., "text": ...} turns (Label Studio's
Paragraphs in dialogue layout)."""


def project_labels(task_type: str, labels: Sequence[str]) -> tuple[str, ...]:
    """The labels a new project offers; RequestRefused when a type that needs labels
    has none."""
    chosen = tuple(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if chosen:
        return chosen
    if task_type in DEFAULT_LABELS:
        return DEFAULT_LABELS[task_type]
    if task_type in ("intent", "call"):
        raise RequestRefused(
            f"a {task_type} project needs labels (the intents annotators choose from)"
        )
    return ()


def label_config(task_type: str, labels: Sequence[str]) -> str:
    """The Label Studio labeling config (XML) of a project of `task_type`."""
    options = "".join(f"<Choice value={quoteattr(label)}/>" for label in labels)
    spans = "".join(f"<Label value={quoteattr(label)}/>" for label in labels)
    dialogue = (
        '<Paragraphs name="dialogue" value="$dialogue" layout="dialogue" '
        'nameKey="author" textKey="text"/>'
    )
    if task_type == "intent":
        return (
            '<View><Header value="What does the caller want?"/>'
            '<Text name="text" value="$text"/>'
            f'<Choices name="intent" toName="text" choice="single" showInline="true">'
            f"{options}</Choices></View>"
        )
    if task_type == "entity":
        return (
            '<View><Header value="Mark every date and time the caller says"/>'
            f'<Labels name="entities" toName="text">{spans}</Labels>'
            '<Text name="text" value="$text"/></View>'
        )
    if task_type == "transcription":
        return (
            '<View><Header value="Write what the caller says"/>'
            '<Audio name="audio" value="$audio_url"/>'
            '<Text name="asr" value="$text"/>'
            '<TextArea name="transcription" toName="audio" editable="true" '
            'maxSubmissions="1" rows="2"/></View>'
        )
    if task_type == "call":
        return (
            '<View><Header value="What did the caller want in this call?"/>'
            f"{dialogue}"
            f'<Choices name="intent" toName="dialogue" choice="multiple">{options}</Choices>'
            "</View>"
        )
    if task_type == "conversation":
        return (
            '<View><Header value="Is this a realistic conversation?"/>'
            f"{dialogue}"
            f'<Choices name="verdict" toName="dialogue" choice="single" showInline="true">'
            f"{options}</Choices>"
            '<TextArea name="notes" toName="dialogue" placeholder="What is wrong with it?" '
            'maxSubmissions="1" rows="2"/></View>'
        )
    raise RequestRefused(f"unknown task type {task_type!r}")


def missing_data(task_type: str, data: Mapping[str, Any]) -> list[str]:
    """The keys of REQUIRED_DATA that `data` lacks."""
    return [key for key in LAYOUTS[task_type].required_data if key not in data]


def result_to_tag(task_type: str, result: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Label Studio result list as our tag JSON (`Annotation.tag`)."""
    tag: dict[str, Any] = {}
    entities: list[dict[str, Any]] = []
    for item in result:
        kind = item.get("type")
        value = item.get("value") or {}
        if kind == "choices":
            tag.setdefault("choices", []).extend(value.get("choices", []))
        elif kind == "labels":
            for label in value.get("labels", []):
                entities.append(
                    {
                        "type": label,
                        "text": value.get("text", ""),
                        "start": value.get("start"),
                        "end": value.get("end"),
                    }
                )
        elif kind == "textarea":
            text = value.get("text", [])
            tag["text"] = " ".join(text) if isinstance(text, list) else str(text)
    layout = LAYOUTS.get(task_type)
    if layout is None:
        return tag
    # An empty submission still has the type's keys: the embedded store's tags always do.
    if layout.choices:
        tag.setdefault("choices", [])
    if layout.labels:
        tag["entities"] = sorted(entities, key=lambda e: (e["start"] or 0, e["end"] or 0))
    if task_type == "transcription":
        tag.setdefault("text", "")
    return tag


def tag_to_result(task_type: str, tag: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Our tag JSON as a Label Studio result list (for predictions)."""
    layout = LAYOUTS[task_type]
    result: list[dict[str, Any]] = []

    def item(from_name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"from_name": from_name, "to_name": layout.object_name, "type": kind, "value": value}

    if layout.choices and tag.get("choices"):
        result.append(item(layout.choices, "choices", {"choices": list(tag["choices"])}))
    if layout.labels:
        for entity in tag.get("entities", []):
            result.append(
                item(
                    layout.labels,
                    "labels",
                    {
                        "start": entity["start"],
                        "end": entity["end"],
                        "text": entity.get("text", ""),
                        "labels": [entity["type"]],
                    },
                )
            )
    if layout.textarea and tag.get("text"):
        result.append(item(layout.textarea, "textarea", {"text": [str(tag["text"])]}))
    return result


def unique_tasks(task_type: str, tasks: Sequence[NewTask]) -> list[NewTask]:
    """The tasks with the first of each key, after checking keys and data (shared by both
    stores so that a task valid in one is valid in the other)."""
    if task_type not in LAYOUTS:
        raise RequestRefused(
            f"the project's labeling config is not one of ours (task type {task_type!r}): "
            "push to a project the pipelines created"
        )
    seen: set[str] = set()
    unique = []
    for index, task in enumerate(tasks):
        if not task.key.strip():
            raise RequestRefused(f"task {index} has no idempotency key")
        missing = missing_data(task_type, task.data)
        if missing:
            raise RequestRefused(
                f"task {task.key!r} lacks data {', '.join(missing)} that a {task_type} "
                "project's labeling config shows"
            )
        if task.key not in seen:
            seen.add(task.key)
            unique.append(task)
    return unique
