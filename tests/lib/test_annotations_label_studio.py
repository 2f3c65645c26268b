"""The Label Studio annotation store against a real Label Studio server (one per module,
skit_testing.label_studio): projects with our labeling configs, pushes with predictions
that a rerun does not duplicate, annotations made through the API as an annotator's browser
makes them, and the export read back as the embedded store's Annotation records."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import requests

from skit_components.annotations import (
    AnnotationStoreError,
    NewTask,
    Prediction,
    ProjectSpec,
    RequestRefused,
    UnknownProject,
    open_store,
)
from skit_components.annotations.label_studio import LabelStudioStore

if TYPE_CHECKING:
    from skit_testing.label_studio import LabelStudio

pytest_plugins = ["skit_testing.label_studio"]
# Every test of the module on one xdist worker, so the module starts one server.
pytestmark = pytest.mark.xdist_group("label-studio-store")

DIALOGUE = [{"author": "bot", "text": "When can you pay?"}, {"author": "caller", "text": "monday"}]
DATA = {"text": "i will pay on monday", "audio_url": "https://audio.example/1.wav"}


@pytest.fixture
def store(label_studio: LabelStudio) -> Iterator[LabelStudioStore]:
    store = open_store(label_studio.env)
    assert isinstance(store, LabelStudioStore)
    yield store
    store.close()


def turn(n: int, prediction: Prediction | None = None) -> NewTask:
    return NewTask(
        key=f"turn:{n}",
        data={**DATA, "turn_index": n},
        prediction=prediction,
        call_uuid=f"call-{n}",
        language="en",
        reftime=datetime(2026, 11, 2, 9, n, tzinfo=UTC),
    )


def test_intent_push_with_predictions_is_idempotent_and_exports_annotations(store, label_studio):
    spec = ProjectSpec("Kaveri: intents", "intent", ("confirm", "deny", "_oos_"))
    project = store.create_project(spec)
    assert (project.task_type, project.labels) == ("intent", ("confirm", "deny", "_oos_"))
    assert store.find_project("Kaveri: intents") == project
    assert store.project(project.id) == project

    started = time.monotonic()
    first = store.push_tasks(
        project.id,
        [turn(n, Prediction({"choices": ["confirm"]}, "slu-2026-11", 0.87)) for n in range(1, 4)],
    )
    assert (first.created, first.existing) == (3, 0)
    again = store.push_tasks(project.id, [turn(n) for n in range(1, 6)])
    assert (again.created, again.existing) == (2, 3)
    assert time.monotonic() - started < 10

    tasks = label_studio.tasks(project.id)
    assert len(tasks) == 5, "a rerun must not duplicate tasks"
    assert sorted(t["data"]["skit_key"] for t in tasks) == [f"turn:{n}" for n in range(1, 6)]
    predicted = [t for t in tasks if t["predictions"]]
    assert len(predicted) == 3
    prediction = predicted[0]["predictions"][0]
    assert prediction["model_version"] == "slu-2026-11" and prediction["score"] == 0.87
    assert prediction["result"][0]["value"] == {"choices": ["confirm"]}

    # The annotator accepts the first prediction, corrects the second (twice: an edit is a
    # second annotation here), marks the third as ground truth and skips the fourth.
    first_task, second_task, third_task, fourth_task = (t["id"] for t in tasks[:4])
    ananya = label_studio.add_annotator("ananya@labels.skit.example")
    label_studio.annotate(first_task, prediction["result"], annotator=ananya)
    deny = [{**prediction["result"][0], "value": {"choices": ["deny"]}}]
    label_studio.annotate(second_task, prediction["result"])
    label_studio.annotate(second_task, deny)
    label_studio.annotate(third_task, deny, ground_truth=True)
    label_studio.annotate(fourth_task, [], was_cancelled=True)

    every = list(store.annotations([project.id]))
    assert [(a.task_id, a.tag) for a in every] == [
        (first_task, {"choices": ["confirm"]}),
        (second_task, {"choices": ["confirm"]}),
        (second_task, {"choices": ["deny"]}),
        (third_task, {"choices": ["deny"]}),
    ]
    label = every[0]
    assert label.annotator == "ananya@labels.skit.example"
    assert every[1].annotator == label_studio.username
    assert label.project_id == project.id and label.task_type == "intent"
    assert label.data == {**DATA, "turn_index": 1}, "skit_* keys stay out of the data"
    assert label.extra["task_key"] == "turn:1"
    assert label.reftime == datetime(2026, 11, 2, 9, 1, tzinfo=UTC)
    assert abs(label.tagged_time - datetime.now(UTC)) < timedelta(minutes=5)
    assert [a.is_gold for a in every] == [False, False, False, True]

    latest = list(store.annotations([project.id], latest_only=True))
    assert [a.tag["choices"] for a in latest] == [["confirm"], ["deny"], ["deny"]]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list(store.annotations([project.id], tagged_from=future)) == []
    assert len(list(store.annotations([project.id], tagged_until=future))) == 4


def test_every_task_type_round_trips_its_label(store, label_studio):
    dialogue = {"dialogue": DIALOGUE}
    monday = {"type": "date", "text": "monday", "start": 14, "end": 20}
    cases = [
        ("entity", (), DATA, {"entities": [monday]}),
        ("transcription", (), DATA, {"text": "i will pay on monday"}),
        ("call", ("pay", "dispute"), dialogue, {"choices": ["pay", "dispute"]}),
        ("conversation", (), dialogue, {"choices": ["bad"], "text": "the bot repeats itself"}),
    ]  # fmt: skip
    for task_type, labels, data, tag in cases:
        project = store.create_project(ProjectSpec(f"round trip {task_type}", task_type, labels))
        assert store.project(project.id).task_type == task_type
        store.push_tasks(project.id, [NewTask(f"{task_type}:1", data, Prediction(tag, "model-1"))])
        (task,) = label_studio.tasks(project.id)
        # The annotator submits the prediction as it stands: what comes back is the tag.
        label_studio.annotate(task["id"], task["predictions"][0]["result"])
        (annotation,) = store.annotations([project.id])
        assert (annotation.task_type, annotation.tag) == (task_type, tag)
    types = {p.task_type for p in store.projects()}
    assert {"entity", "transcription", "call", "conversation"} <= types
    assert [p.title for p in store.projects("call")] == ["round trip call"]


def test_refusals_name_the_problem_in_one_line(store, label_studio):
    with pytest.raises(UnknownProject, match=r"has no project 9999"):
        store.project(9999)
    with pytest.raises(UnknownProject, match=r"has no project 9999"):
        store.push_tasks(9999, [turn(1)])
    with pytest.raises(UnknownProject, match=r"has no project 9999"):
        list(store.annotations([9999]))
    project = store.create_project(ProjectSpec("refusals", "intent", ("yes",)))
    with pytest.raises(RequestRefused, match="already has a project titled 'refusals'"):
        store.create_project(ProjectSpec("refusals", "intent", ("yes",)))
    with pytest.raises(RequestRefused, match="3 to 50 characters"):
        store.create_project(ProjectSpec("x" * 51, "intent", ("yes",)))
    with pytest.raises(RequestRefused, match="lacks data text"):
        store.push_tasks(project.id, [NewTask("turn:1", {"utterance": "hi"})])

    # A project made by hand for something else: no task type, and no pushes into it.
    handmade = label_studio.session().post(
        f"{label_studio.url}/api/projects/",
        json={
            "title": "cats and dogs",
            "label_config": '<View><Image name="img" value="$image"/>'
            '<Choices name="animal" toName="img"><Choice value="cat"/></Choices></View>',
        },
        timeout=30,
    )
    assert handmade.status_code == 201, handmade.text
    other = store.project(handmade.json()["id"])
    assert other.task_type == "" and other.title == "cats and dogs"
    assert other not in store.projects("intent")
    with pytest.raises(RequestRefused, match="labeling config is not one of ours"):
        store.push_tasks(other.id, [NewTask("img:1", {"image": "https://x/cat.png"})])

    wrong = open_store({**label_studio.env, "LABEL_STUDIO_TOKEN": "0" * 40})
    with pytest.raises(RequestRefused) as refused:
        wrong.projects()
    message = str(refused.value)
    assert "refused the token (HTTP 401: Invalid token.)" in message
    assert "\n" not in message


def test_an_unreachable_server_is_an_error_that_is_not_a_refusal():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    store = open_store(
        {"LABEL_STUDIO_URL": f"http://127.0.0.1:{port}", "LABEL_STUDIO_TOKEN": "t" * 40}
    )
    with pytest.raises(AnnotationStoreError) as failure:
        store.projects()
    assert not isinstance(failure.value, RequestRefused)
    assert f"Label Studio at http://127.0.0.1:{port} is unreachable" in str(failure.value)
    assert "ConnectionError" in str(failure.value)


def test_a_url_that_is_not_label_studio_says_so(label_studio):
    with pytest.raises(RequestRefused, match="not an http"):
        open_store({"LABEL_STUDIO_URL": "label-studio:8080", "LABEL_STUDIO_TOKEN": "t"})
    # The server's web page instead of its API root: HTML, not JSON.
    page = requests.get(f"{label_studio.url}/user/login/", timeout=10)
    assert page.status_code == 200 and "html" in page.headers["Content-Type"]
    store = LabelStudioStore(f"{label_studio.url}/user/login/?next=", label_studio.token)
    with pytest.raises(AnnotationStoreError, match="not Label Studio's JSON"):
        store.projects()
