from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from skit_components.annotations import (
    Annotation,
    AnnotationStoreError,
    NewTask,
    Project,
    ProjectSpec,
    PushResult,
    RequestRefused,
    UnknownProject,
)
from skit_components.loader import import_component

FOLDER = Path(__file__).resolve().parents[1]
TURNS = FOLDER / "tests" / "fixtures" / "turns.csv"
push_annotation_tasks = import_component(FOLDER)


@dataclass
class FakeStore:
    """The AnnotationStore protocol in memory: projects by id, tasks by key per project (a
    key already held is skipped, as the contract says), and a switch that makes every call
    fail as an unreachable server would."""

    projects_by_id: dict[int, Project] = field(default_factory=dict)
    specs: dict[int, ProjectSpec] = field(default_factory=dict)
    tasks: dict[int, dict[str, NewTask]] = field(default_factory=dict)
    pushes: list[int] = field(default_factory=list)
    down: str = ""
    refuse: str = ""
    closed: bool = False

    def _check(self) -> None:
        if self.down:
            raise AnnotationStoreError(self.down)
        if self.refuse:
            raise RequestRefused(self.refuse)

    def projects(self, task_type: str | None = None) -> Sequence[Project]:
        self._check()
        return [p for p in self.projects_by_id.values() if task_type in (None, p.task_type)]

    def project(self, project_id: int) -> Project:
        self._check()
        if project_id not in self.projects_by_id:
            raise UnknownProject(f"project {project_id} does not exist")
        return self.projects_by_id[project_id]

    def find_project(self, title: str) -> Project | None:
        self._check()
        return next((p for p in self.projects_by_id.values() if p.title == title), None)

    def create_project(self, spec: ProjectSpec) -> Project:
        self._check()
        project = Project(len(self.projects_by_id) + 1, spec.title, spec.task_type)
        self.projects_by_id[project.id] = project
        self.specs[project.id] = spec
        self.tasks[project.id] = {}
        return project

    def push_tasks(self, project_id: int, tasks: Sequence[NewTask]) -> PushResult:
        self._check()
        self.pushes.append(len(tasks))
        held = self.tasks[self.project(project_id).id]
        new = [t for t in tasks if t.key not in held]
        held.update((t.key, t) for t in new)
        return PushResult(project_id, len(new), len(tasks) - len(new))

    def annotations(
        self,
        project_ids: Sequence[int],
        *,
        tagged_from: datetime | None = None,
        tagged_until: datetime | None = None,
    ) -> Iterator[Annotation]:
        return iter(())

    def close(self) -> None:
        self.closed = True


def options(**kwargs) -> object:
    return push_annotation_tasks.Options(**kwargs)


def turn_rows() -> list[dict[str, str]]:
    with TURNS.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_turns(path: Path, rows: list[dict[str, str]], extra: Sequence[str] = ()) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*turn_rows()[0], *extra])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_intent_tasks_are_the_caller_turns_with_their_predictions(tmp_path):
    rows = turn_rows()
    for row in rows:
        row["predicted_intent"] = "_confirm_" if row["primary_utterance"] else ""
        row["prediction_model"] = "slu-1"
    tasks = push_annotation_tasks.read_tasks(
        write_turns(tmp_path / "t.csv", rows, ["predicted_intent", "prediction_model"]), "intent"
    )
    caller = [r for r in rows if r["primary_utterance"].strip()]
    assert [t.key for t in tasks] == [f"turn:{r['conversation_uuid']}" for r in caller]
    first, row = tasks[0], caller[0]
    assert first.data["text"] == row["primary_utterance"]
    assert first.data["conversation_uuid"] == row["conversation_uuid"]
    assert first.data["call_id"] == int(row["call_id"]) and isinstance(
        first.data["utterances"], list
    )
    assert first.call_uuid == row["call_uuid"] and first.reftime is not None
    assert first.prediction is not None
    assert dict(first.prediction.tag) == {"choices": ["_confirm_"]}
    assert first.prediction.model_version == "slu-1"


def test_call_tasks_hold_each_calls_dialogue_in_order():
    rows = turn_rows()
    tasks = push_annotation_tasks.read_tasks(TURNS, "call")
    calls = list(dict.fromkeys(r["call_uuid"] for r in rows))
    assert [t.key for t in tasks] == [f"call:{c}" for c in calls]
    task = tasks[0]
    turns = [r for r in rows if r["call_uuid"] == calls[0]]
    assert task.data["turns"][0] == {"role": "bot", "text": turns[0]["bot_response"]}
    users = [t["text"] for t in task.data["turns"] if t["role"] == "user"]
    assert users == [r["primary_utterance"] for r in turns if r["primary_utterance"].strip()]
    assert task.data["dialogue"][0] == {"author": "bot", "text": turns[0]["bot_response"]}
    assert len(task.data["dialogue"]) == len(task.data["turns"])
    assert task.prediction is None


def conversation(index: int, text: str = "my internet is down") -> dict:
    return {
        "situation_id": 4,
        "situation": "internet down since morning",
        "scenario": "network issue",
        "scenario_category": "customer_support",
        "index": index,
        "generator": "template",
        "prompt": "write it",
        "turns": [{"role": "bot", "text": "Hello"}, {"role": "user", "text": text}],
    }


def test_conversation_tasks_are_keyed_by_their_content(tmp_path):
    path = tmp_path / "c.jsonl"
    records = [conversation(0), conversation(1), conversation(0, "other words")]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tasks = push_annotation_tasks.read_tasks(path, "conversation")
    assert len({t.key for t in tasks}) == 3
    assert tasks[0].data["dialogue"] == [
        {"author": "bot", "text": "Hello"},
        {"author": "user", "text": "my internet is down"},
    ]
    assert tasks[0].data["scenario_category"] == "customer_support"
    again = push_annotation_tasks.read_tasks(path, "conversation")
    assert [t.key for t in again] == [t.key for t in tasks]


def test_a_created_project_gets_the_intents_and_a_rerun_adds_nothing(tmp_path):
    store = FakeStore()
    tasks = push_annotation_tasks.read_tasks(TURNS, "intent")
    o = options(task_type="intent", project_title="Sampled turns", create_project=True)
    first = push_annotation_tasks.push(store, tasks, o)
    assert first.project_created and first.created == len(tasks) and first.existing == 0
    spec = store.specs[first.project.id]
    intents = {r["intent"] for r in turn_rows() if r["intent"]}
    assert set(spec.labels) == intents and spec.task_type == "intent" and spec.language == "en"
    second = push_annotation_tasks.push(store, tasks, o)
    assert not second.project_created and second.project.id == first.project.id
    assert (second.created, second.existing) == (0, len(tasks))
    assert len(store.tasks[first.project.id]) == len(tasks)


def test_batches_are_bounded(monkeypatch):
    monkeypatch.setattr(push_annotation_tasks, "BATCH_SIZE", 4)
    store = FakeStore()
    tasks = push_annotation_tasks.read_tasks(TURNS, "intent")
    pushed = push_annotation_tasks.push(
        store, tasks, options(task_type="intent", project_title="Turns", create_project=True)
    )
    assert pushed.created == len(tasks) > 4
    assert max(store.pushes) == 4 and sum(store.pushes) == len(tasks)


@pytest.mark.parametrize(
    ("o", "expected"),
    [
        ({"project_id": 99}, "unknown annotation project 99"),
        ({"project_id": 1}, "holds call tasks, not intent tasks"),
        (
            {"project_title": "missing"},
            "no annotation project is titled 'missing'; set create_project",
        ),
        ({}, "give project_id, or project_title"),
    ],
)
def test_a_project_that_cannot_be_used_is_bad_input(o, expected):
    store = FakeStore()
    store.create_project(ProjectSpec(title="calls", task_type="call"))
    tasks = push_annotation_tasks.read_tasks(TURNS, "intent")
    with pytest.raises(push_annotation_tasks.cli.BadInput, match=expected):
        push_annotation_tasks.push(store, tasks, options(task_type="intent", **o))
    assert len(store.tasks[1]) == 0


def test_an_unusable_store_is_one_line_internal_error():
    store = FakeStore(down="cannot reach http://127.0.0.1:9/ (connection refused)")
    tasks = push_annotation_tasks.read_tasks(TURNS, "intent")
    with pytest.raises(push_annotation_tasks.cli.ComponentError) as raised:
        push_annotation_tasks.push(
            store, tasks, options(task_type="intent", project_title="Turns", create_project=True)
        )
    assert not isinstance(raised.value, push_annotation_tasks.cli.BadInput)
    assert "annotation store: cannot reach http://127.0.0.1:9/" in str(raised.value)


@pytest.fixture
def main_run(tmp_path, monkeypatch, capsys):
    """main() with open_store replaced by `store`; returns (code, outputs, stderr line)."""

    def _run(store: FakeStore | None, *args: str, tasks: Path = TURNS):
        if store is not None:
            monkeypatch.setattr(push_annotation_tasks, "open_store", lambda env: store)
        out = tmp_path / "out"
        code = push_annotation_tasks.main(
            [
                f"--tasks={tasks}",
                *args,
                f"--pushed-project-id={out / 'project'}",
                f"--created-count={out / 'created'}",
                f"--existing-count={out / 'existing'}",
                f"--summary={out / 'summary.json'}",
            ]
        )
        err = capsys.readouterr().err.strip()
        if code:
            assert not (out / "project").exists()
            return code, {}, err
        outputs = {
            "project": int((out / "project").read_text()),
            "created": int((out / "created").read_text()),
            "existing": int((out / "existing").read_text()),
            "summary": json.loads((out / "summary.json").read_text()),
        }
        return code, outputs, err

    return _run


def test_main_writes_the_counts_and_closes_the_store(main_run):
    store = FakeStore()
    code, out, _ = main_run(
        store, "--task-type=call", "--project-title=Calls", "--create-project=true"
    )
    assert code == 0 and store.closed
    calls = len({r["call_uuid"] for r in turn_rows()})
    assert out["project"] == 1 and out["created"] == calls and out["existing"] == 0
    assert out["summary"]["task_type"] == "call" and out["summary"]["project_created"]


def test_main_an_empty_dataset_fails_before_touching_the_store(main_run, tmp_path):
    empty = tmp_path / "empty.csv"
    write_turns(empty, [])
    store = FakeStore()
    code, _, err = main_run(store, "--task-type=intent", "--project-id=1", tasks=empty)
    assert code == 2
    assert err == (
        "push_annotation_tasks: the dataset empty.csv has no caller turns with an utterance: "
        "nothing to push"
    )
    assert store.pushes == []


def test_main_an_unknown_task_type_is_bad_input(main_run):
    code, _, err = main_run(FakeStore(), "--task-type=entity", "--project-id=1")
    assert code == 2 and "task_type must be one of intent, call, conversation" in err


def test_main_an_unreachable_store_fails_with_exit_13(main_run):
    store = FakeStore(down="cannot reach http://127.0.0.1:9 (connection refused)")
    code, _, err = main_run(store, "--task-type=intent", "--project-id=1")
    assert code == 13
    assert (
        err.startswith("push_annotation_tasks: annotation store: cannot reach") and "\n" not in err
    )


def test_main_without_any_store_configured_is_bad_input(main_run, monkeypatch):
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN", "ANNOTATIONS_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = main_run(None, "--task-type=intent", "--project-id=1")
    assert code != 0 and err.startswith("push_annotation_tasks: ") and "\n" not in err


def test_main_a_rejected_token_is_bad_input(main_run):
    store = FakeStore(refuse="Label Studio at http://ls rejected the token (HTTP 401)")
    code, _, err = main_run(store, "--task-type=intent", "--project-title=Turns")
    assert code == 2
    assert err == (
        "push_annotation_tasks: annotation store: Label Studio at http://ls rejected the token "
        "(HTTP 401)"
    )


@pytest.mark.parametrize("title", ["ab", "x" * 51])
def test_a_title_label_studio_would_refuse_is_bad_input(title):
    tasks = push_annotation_tasks.read_tasks(TURNS, "intent")
    with pytest.raises(push_annotation_tasks.cli.BadInput, match="project_title must be 3 to 50"):
        push_annotation_tasks.push(
            FakeStore(),
            tasks,
            options(task_type="intent", project_title=title, create_project=True),
        )


def test_generated_conversations_keys_are_the_documented_content_hash():
    """record_conversations stores the same hash (its tests pin the same formula), so a
    recorded conversation names its task."""
    path = FOLDER / "tests" / "fixtures" / "conversations.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    tasks = push_annotation_tasks.read_tasks(path, "conversation")
    assert len(tasks) == len(records) == 4
    for task, record in zip(tasks, records, strict=True):
        identity = {k: record[k] for k in ("situation_id", "index", "generator", "prompt", "turns")}
        text = json.dumps(identity, sort_keys=True, ensure_ascii=False)
        assert task.key == f"conversation:{hashlib.sha256(text.encode()).hexdigest()[:32]}"
        assert [d["author"] for d in task.data["dialogue"]] == [t["role"] for t in record["turns"]]
