"""fetch_tagged_dataset against a real Label Studio (skit_testing.label_studio): the same
tasks and labels in Label Studio and in the embedded store give the same CSV columns and
values, and Label Studio's refusals are one line with the right exit code."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from skit_components.annotations import NewTask, Prediction, ProjectSpec, open_store
from skit_components.annotations.labeling import tag_to_result
from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_components.migrations import ANNOTATIONS, migrate

if TYPE_CHECKING:
    from skit_testing.label_studio import LabelStudio

pytest_plugins = ["skit_testing.label_studio"]
pytestmark = pytest.mark.xdist_group("label-studio-fetch-tagged-dataset")

FOLDER = Path(__file__).resolve().parents[1]
fetch_tagged_dataset = import_component(FOLDER)

STORE_ENV = ("LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN", "ANNOTATIONS_DB_URL")
INTENTS = ("confirm", "deny", "_oos_")
REFTIME = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)


def tasks() -> list[tuple[NewTask, dict[str, Any]]]:
    """Demo-like turn tasks with a prediction, and the label an annotator gives each."""
    out = []
    for n, (said, label) in enumerate(
        [("yes that is me", "confirm"), ("no", "deny"), ("what is this about", "_oos_")]
    ):
        data = {
            "text": said,
            "call_uuid": f"call-{n}",
            "conversation_uuid": f"turn-{n}",
            "language": "en",
            "utterances": [[{"transcript": said, "confidence": 0.9}]],
            "intent": "confirm",
            "reftime": REFTIME.isoformat(),
        }
        task = NewTask(
            key=f"turn:turn-{n}",
            data=data,
            prediction=Prediction({"choices": ["confirm"]}, "slu-demo", 0.7),
            call_uuid=f"call-{n}",
            conversation_uuid=f"turn-{n}",
            language="en",
            reftime=REFTIME,
        )
        out.append((task, {"choices": [label]}))
    return out


@pytest.fixture(scope="module")
def label_studio_project(label_studio: LabelStudio) -> int:
    """An intent project in Label Studio whose tasks an annotator has labelled."""
    store = open_store(label_studio.env)
    project = store.create_project(ProjectSpec("Demo intents", "intent", INTENTS))
    store.push_tasks(project.id, [task for task, _ in tasks()])
    by_key = {t["data"]["skit_key"]: t["id"] for t in label_studio.tasks(project.id)}
    annotator = label_studio.add_annotator("ananya@labels.skit.example")
    for task, tag in tasks():
        label_studio.annotate(by_key[task.key], tag_to_result("intent", tag), annotator=annotator)
    store.close()
    return project.id


@pytest.fixture
def embedded_url(tmp_path: Path) -> str:
    """The same tasks and labels in an embedded store."""
    url = sqlite_url(tmp_path / "annotations.db")
    with connect(url, create=True) as db:
        migrate(db, ANNOTATIONS)
    store = open_store({"ANNOTATIONS_DB_URL": url})
    project = store.create_project(ProjectSpec("Demo intents", "intent", INTENTS))
    store.push_tasks(project.id, [task for task, _ in tasks()])
    store.close()
    with connect(url) as db:
        ids = dict(db.fetchall("SELECT task_key, id FROM annotation_tasks"))
        for task, tag in tasks():
            db.execute(
                "INSERT INTO annotations (task_id, annotator, tag, tagged_at) VALUES (?, ?, ?, ?)",
                (ids[task.key], "a@x", json.dumps(tag), db.dialect.timestamp_param(REFTIME)),
            )
    return url


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs main() with exactly the store env given; returns (exit code, CSV rows)."""

    def _run(env: dict[str, str], *args: str) -> tuple[int, list[dict[str, str]]]:
        for name in STORE_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        out, count = tmp_path / "out" / "dataset.csv", tmp_path / "out" / "row_count"
        out.unlink(missing_ok=True)
        code = fetch_tagged_dataset.main([*args, "--dataset", str(out), "--row-count", str(count)])
        if code != 0:
            assert not out.exists(), "a failed step must not leave a dataset behind"
            return code, []
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        assert int(count.read_text()) == len(rows)
        return code, rows

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_label_studio_and_the_embedded_store_give_the_same_csv(
    run, label_studio, label_studio_project, embedded_url
):
    code, from_label_studio = run(label_studio.env, "--timezone", "Asia/Kolkata")
    assert code == 0
    code, from_embedded = run({"ANNOTATIONS_DB_URL": embedded_url}, "--timezone", "Asia/Kolkata")
    assert code == 0
    assert list(from_label_studio[0]) == list(from_embedded[0]), "same columns, same order"
    assert "raw.skit_key" not in from_label_studio[0]
    assert {r["project_id"] for r in from_label_studio} == {str(label_studio_project)}

    # Ids, annotator and tagging time are the store's own; everything else is the same.
    own = {"data_id", "project_id", "annotation_id", "annotator", "tagged_time"}

    def comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(
            ({k: v for k, v in row.items() if k not in own} for row in rows),
            key=lambda r: r["raw.conversation_uuid"],
        )

    assert comparable(from_label_studio) == comparable(from_embedded)
    first = comparable(from_label_studio)[0]
    assert json.loads(first["tag"]) == {"choices": ["confirm"]}
    assert first["source"] == "label_studio" and first["task_type"] == "intent"
    assert first["reftime"] == "2026-11-02T15:45:00.000+05:30"
    assert {r["annotator"] for r in from_label_studio} == {"ananya@labels.skit.example"}
    assert all(r["tagged_time"].endswith("+05:30") for r in from_label_studio)


def test_selection_and_refusals_against_label_studio(
    run, label_studio, label_studio_project, capsys
):
    code, rows = run(label_studio.env, "--project-ids", f"[{label_studio_project}]")
    assert code == 0 and len(rows) == 3
    cases = [
        (label_studio.env, ["--project-ids", "[999]"], 2, "unknown Label Studio project ids [999]"),
        (label_studio.env, ["--job-ids", "[4101]"], 2, "unknown Tog job ids [4101]"),
        (label_studio.env, ["--task-type", "entity"], 2, "has no entity projects or jobs"),
        (
            label_studio.env,
            ["--start-date", "2030-01-01"],
            2,
            "no annotations match: all intent projects and jobs, tagged from 2030-01-01",
        ),
        (
            {**label_studio.env, "LABEL_STUDIO_TOKEN": "f" * 40},
            [],
            2,
            f"Label Studio at {label_studio.url} refused the token (HTTP 401",
        ),
    ]  # fmt: skip
    for env, args, expected_code, message in cases:
        code, _ = run(env, *args)
        assert code == expected_code, (args, capsys.readouterr().err)
        line = one_line(capsys.readouterr().err)
        assert line.startswith("fetch_tagged_dataset: ") and message in line, line


def test_an_unreachable_label_studio_exits_13(run, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"LABEL_STUDIO_URL": f"http://127.0.0.1:{port}", "LABEL_STUDIO_TOKEN": "t" * 40}
    code, _ = run(env)
    assert code == 13
    assert f"Label Studio at http://127.0.0.1:{port} is unreachable" in one_line(
        capsys.readouterr().err
    )


def test_runs_as_a_module_in_its_image_folder_with_label_studio_env(
    label_studio, label_studio_project, tmp_path
):
    """As the local executor runs it, with only the declared env and Label Studio's wins
    over a (broken) ANNOTATIONS_DB_URL."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_ENV}
    env.update(label_studio.env, ANNOTATIONS_DB_URL=sqlite_url(tmp_path / "absent.db"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetch_tagged_dataset",
            "--project-ids",
            f"[{label_studio_project}.0]",
            "--all-annotations",
            "true",
            "--dataset",
            str(tmp_path / "d.csv"),
            "--row-count",
            str(tmp_path / "n"),
        ],
        cwd=FOLDER,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert int((tmp_path / "n").read_text()) == 3
