from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_demo import generate

pytest_plugins = ["skit_testing.postgres"]

FOLDER = Path(__file__).resolve().parents[1]
fetch_tagged_dataset = import_component(FOLDER)

IST = ZoneInfo("Asia/Kolkata")
INTENT_PROJECTS = {11, 12, 13, 4101}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("demo")
    url = sqlite_url(root / "annotations.db")
    generate(
        sqlite_url(root / "calls.db"),
        sqlite_url(root / "metrics.db"),
        seed=3,
        calls=400,
        annotations_db_url=url,
    )
    return url


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str):
    """Runs main() with ANNOTATIONS_DB_URL set; returns (exit code, CSV rows, row_count)."""

    def _run(*args: str, url: str | None = None) -> tuple[int, list[dict], int | None]:
        monkeypatch.setenv("ANNOTATIONS_DB_URL", url or store)
        out, count = tmp_path / "out" / "dataset.csv", tmp_path / "out" / "row_count"
        out.unlink(missing_ok=True)
        code = fetch_tagged_dataset.main([*args, "--dataset", str(out), "--row-count", str(count)])
        if code != 0:
            assert not out.exists(), "a failed step must not leave a dataset behind"
            return code, [], None
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        return code, rows, int(count.read_text())

    return _run


def query(url: str, sql: str) -> list[tuple]:
    with connect(url) as db:
        return db.fetchall(sql)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_defaults_give_every_intent_task_with_its_latest_annotation(run, store):
    code, rows, count = run()
    assert code == 0
    expected_tasks = {
        task_id
        for (task_id,) in query(
            store,
            "SELECT t.id FROM annotation_tasks t JOIN annotation_projects p "
            "ON p.id = t.project_id WHERE p.task_type = 'intent'",
        )
    }
    assert count == len(rows) == len(expected_tasks)
    assert {int(r["data_id"]) for r in rows} == expected_tasks
    assert {int(r["project_id"]) for r in rows} == INTENT_PROJECTS
    latest = {}
    for task_id, annotation_id, tag in query(
        store, "SELECT task_id, id, tag FROM annotations ORDER BY tagged_at, id"
    ):
        latest[task_id] = (annotation_id, json.loads(tag))
    for row in rows:
        annotation_id, tag = latest[int(row["data_id"])]
        assert int(row["annotation_id"]) == annotation_id
        assert json.loads(row["tag"]) == tag
        assert set(json.loads(row["tag"])) == {"choices"}


def test_columns_are_the_fixed_ones_then_the_flattened_task_data(run):
    code, rows, _ = run("--project-ids", "[11]")
    assert code == 0
    header = list(rows[0])
    fixed = list(fetch_tagged_dataset.COLUMNS)
    assert header[: len(fixed)] == fixed
    raw = header[len(fixed) :]
    assert raw == sorted(raw) and all(c.startswith("raw.") for c in raw)
    assert {"raw.intent", "raw.entities", "raw.language", "raw.utterances"} <= set(raw)
    for row in rows:
        data = json.loads(row["data"])
        assert {f"raw.{k}" for k in data} == set(raw)
        assert row["raw.intent"] == (data["intent"] or "")
        assert json.loads(row["raw.utterances"]) == data["utterances"]
        assert json.loads(row["raw.entities"]) == data["entities"]
        assert row["is_gold"] in ("true", "false")
        assert row["source"] == "label_studio" and row["task_type"] == "intent"
        # Times are ISO 8601 in the requested zone (UTC by default).
        assert datetime.fromisoformat(row["tagged_time"]).utcoffset().total_seconds() == 0
        assert datetime.fromisoformat(row["reftime"]) == datetime.fromisoformat(data["reftime"])


def test_project_and_job_ids_select_exactly_their_tasks(run, store):
    code, rows, _ = run("--project-ids", "[12]", "--job-ids", "[4101]")
    assert code == 0
    assert Counter(r["project_id"] for r in rows).keys() == {"12", "4101"}
    assert {r["source"] for r in rows if r["project_id"] == "4101"} == {"tog"}
    (expected,) = query(
        store,
        "SELECT count(DISTINCT a.task_id) FROM annotations a JOIN annotation_tasks t "
        "ON t.id = a.task_id WHERE t.project_id IN (12, 4101)",
    )
    assert len(rows) == expected[0]


def test_all_annotations_gives_one_row_per_annotation(run, store):
    code, rows, count = run("--task-type", "transcription", "--all-annotations", "true")
    assert code == 0
    (expected,) = query(
        store,
        "SELECT count(*) FROM annotations a JOIN annotation_tasks t ON t.id = a.task_id "
        "JOIN annotation_projects p ON p.id = t.project_id WHERE p.task_type = 'transcription'",
    )
    assert count == len(rows) == expected[0]
    per_task = Counter(r["data_id"] for r in rows)
    assert max(per_task.values()) >= 2, "some tasks are labelled more than once"
    assert all("text" in json.loads(r["tag"]) for r in rows)
    _, latest_only, _ = run("--task-type", "transcription", "--all-annotations", "false")
    assert len(latest_only) == len(per_task)


def test_dates_are_inclusive_local_tagging_days(run, store):
    code, rows, _ = run(
        "--task-type",
        "entity",
        "--start-date",
        "2026-10-10",
        "--end-date",
        "2026-10-14",
        "--timezone",
        "Asia/Kolkata",
        "--all-annotations",
        "true",
    )
    assert code == 0
    expected = sorted(
        annotation_id
        for annotation_id, tagged_at in query(
            store,
            "SELECT a.id, a.tagged_at FROM annotations a JOIN annotation_tasks t "
            "ON t.id = a.task_id WHERE t.project_id = 21",
        )
        if date(2026, 10, 10)
        <= datetime.fromisoformat(tagged_at).astimezone(IST).date()
        <= date(2026, 10, 14)
    )
    assert expected
    assert sorted(int(r["annotation_id"]) for r in rows) == expected
    assert all(r["tagged_time"].endswith("+05:30") for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project-ids", "[99]"], "unknown Label Studio project ids [99]"),
        (
            ["--project-ids", "[4101]"],
            "[4101] are not Label Studio projects (pass them in job_ids)",
        ),
        (["--job-ids", "[11]"], "[11] are not Tog jobs (pass them in project_ids)"),
        (["--project-ids", "[31]"], "task_type is intent but 31 is transcription"),
        (["--task-type", "sentiment"], "unknown task_type 'sentiment'"),
        (["--start-date", "2030-01-01"], "no annotations match: all intent projects and jobs"),
        (["--timezone", "Mars/Olympus"], "unknown timezone"),
        (["--start-date", "2026-10-20", "--end-date", "2026-10-01"], "is before start_date"),
        (["--project-ids", "11"], "expected a JSON array"),
        (["--job-ids", "[-4]"], "must be positive ids"),
        (["--all-annotations", "maybe"], "expected true or false"),
    ],
)
def test_bad_input_fails_with_exit_2_and_one_clear_line(run, capsys, args, message):
    code, _, _ = run(*args)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("fetch_tagged_dataset: ")
    assert message in line


def test_no_configured_store_is_bad_input(monkeypatch, tmp_path, capsys):
    for name in ("ANNOTATIONS_DB_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    out = ["--dataset", str(tmp_path / "d.csv"), "--row-count", str(tmp_path / "n")]
    assert fetch_tagged_dataset.main(out) == 2
    line = one_line(capsys.readouterr().err)
    assert "no annotation store configured: set LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN" in line
    assert "or ANNOTATIONS_DB_URL" in line
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://label-studio.internal:8080")
    assert fetch_tagged_dataset.main(out) == 2
    assert "LABEL_STUDIO_TOKEN is not" in one_line(capsys.readouterr().err)


def test_unusable_databases_fail_with_exit_13(run, tmp_path, capsys):
    code, _, _ = run(url=sqlite_url(tmp_path / "absent.db"))
    assert code == 13
    assert "no SQLite database" in one_line(capsys.readouterr().err)
    with connect(sqlite_url(tmp_path / "empty.db"), create=True):
        pass
    code, _, _ = run(url=sqlite_url(tmp_path / "empty.db"))
    assert code == 13
    assert "annotations database is at schema version 0" in one_line(capsys.readouterr().err)


def test_runs_as_a_module_in_its_image_folder(store, tmp_path):
    """As the local executor runs it: `python3 -m fetch_tagged_dataset` in the image folder."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetch_tagged_dataset",
            "--job-ids",
            "[4101.0]",
            "--all-annotations",
            "false",
            "--dataset",
            str(tmp_path / "d.csv"),
            "--row-count",
            str(tmp_path / "n"),
        ],
        cwd=FOLDER,
        env={**os.environ, "ANNOTATIONS_DB_URL": store},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert int((tmp_path / "n").read_text()) > 0


@pytest.mark.postgres
def test_postgresql_gives_the_same_csv_as_sqlite(run, postgres_dsn, tmp_path):
    lite = sqlite_url(tmp_path / "annotations.db")
    generate(
        sqlite_url(tmp_path / "c.db"),
        sqlite_url(tmp_path / "m.db"),
        seed=5,
        calls=150,
        annotations_db_url=lite,
    )
    generate(postgres_dsn, postgres_dsn, seed=5, calls=150, annotations_db_url=postgres_dsn)
    args = ("--task-type", "entity", "--timezone", "Asia/Kolkata", "--all-annotations", "true")
    code, from_sqlite, count = run(*args, url=lite)
    assert code == 0 and count > 0
    code, from_postgres, _ = run(*args, url=postgres_dsn)
    assert code == 0

    def normalised(rows: list[dict]) -> list[dict]:
        # jsonb re-serialises documents (key order, spacing); compare their values.
        return [
            {k: json.loads(v) if v.startswith(("[", "{")) else v for k, v in row.items()}
            for row in rows
        ]

    assert normalised(from_postgres) == normalised(from_sqlite)
    code, _, _ = run("--project-ids", "[77]", url=postgres_dsn)
    assert code == 2
