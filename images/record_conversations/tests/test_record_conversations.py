from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_components.migrations import METRICS, MIGRATIONS, migrate
from skit_demo import generate

pytest_plugins = ["skit_testing.postgres"]

FOLDER = Path(__file__).resolve().parents[1]
FIXTURES = FOLDER / "tests" / "fixtures"
CONVERSATIONS = FIXTURES / "conversations.jsonl"
record_conversations = import_component(FOLDER)


def lines() -> list[dict]:
    return [json.loads(line) for line in CONVERSATIONS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def metrics_db(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "metrics.db")
    generate(sqlite_url(tmp_path / "calls.db"), url, seed=1, calls=0)
    return url


def keyed_rows(url: str) -> tuple[list[tuple], list[tuple]]:
    with connect(url) as db:
        prompts = db.fetchall(
            "SELECT id, situation_id, client_id, template_id, project_name, model, temperature,"
            " n_iter, n_choice, prompt FROM prompt_details WHERE prompt_key <> '' ORDER BY id"
        )
        conversations = db.fetchall(
            "SELECT prompt_id, situation_id, conversation, project_name, conversation_key,"
            " annotation_project_id FROM generated_conversations WHERE conversation_key <> ''"
            " ORDER BY id"
        )
    return prompts, conversations


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs main(); returns (exit code, outputs, stderr line)."""

    def _run(url: str, *args: str, conversations: Path = CONVERSATIONS):
        monkeypatch.setenv("METRICS_DB_URL", url)
        out = tmp_path / "out"
        code = record_conversations.main(
            [
                f"--conversations={conversations}",
                *args,
                f"--prompt-count={out / 'prompts'}",
                f"--conversation-count={out / 'conversations'}",
                f"--existing-count={out / 'existing'}",
                f"--report={out / 'report.json'}",
            ]
        )
        err = capsys.readouterr().err.strip()
        if code:
            return code, {}, err
        outputs = {
            name: int((out / name).read_text()) for name in ("prompts", "conversations", "existing")
        }
        outputs["report"] = json.loads((out / "report.json").read_text())
        return code, outputs, err

    return _run


ARGS = (
    f"--generation-report={FIXTURES / 'report.json'}",
    "--client-id=101",
    "--template-id=1",
    "--project-name=llm-debt",
    "--annotation-project-id=7",
)


def test_records_prompts_and_conversations_once(run, metrics_db):
    code, out, _ = run(metrics_db, *ARGS)
    records = lines()
    prompts = {(r["situation_id"], r["prompt"]) for r in records}
    assert code == 0
    assert out["prompts"] == len(prompts) and out["conversations"] == len(records) == 4
    stored_prompts, stored = keyed_rows(metrics_db)
    assert {(p[1], p[9]) for p in stored_prompts} == prompts
    assert {p[2:9] for p in stored_prompts} == {(101, 1, "llm-debt", "template", 0.0, 1, 1)}
    assert [json.loads(c[2]) for c in stored] == [r["turns"] for r in records]
    assert {c[3] for c in stored} == {"llm-debt"} and {c[5] for c in stored} == {7}
    by_id = {p[0]: p for p in stored_prompts}
    for conversation, r in zip(stored, records, strict=True):
        assert by_id[conversation[0]][1] == conversation[1] == r["situation_id"]
        assert conversation[4] == record_conversations.conversation_key(r)
        identity = {k: r[k] for k in ("situation_id", "index", "generator", "prompt", "turns")}
        text = json.dumps(identity, sort_keys=True, ensure_ascii=False)
        assert conversation[4] == hashlib.sha256(text.encode()).hexdigest()[:32]

    code, again, _ = run(metrics_db, *ARGS)
    assert code == 0
    assert (again["prompts"], again["conversations"], again["existing"]) == (0, 0, 4)
    assert keyed_rows(metrics_db) == (stored_prompts, stored)


def test_an_llm_generators_model_and_temperature_are_recorded(run, metrics_db, tmp_path):
    llm = tmp_path / "llm.jsonl"
    llm.write_text(
        "".join(json.dumps({**r, "generator": "llm:gpt-4o-mini"}) + "\n" for r in lines()),
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"generator": "llm:gpt-4o-mini", "temperature": 0.3}))
    code, _, _ = run(metrics_db, f"--generation-report={report}", conversations=llm)
    assert code == 0
    prompts, conversations = keyed_rows(metrics_db)
    assert {(p[5], p[6]) for p in prompts} == {("gpt-4o-mini", 0.3)}
    assert {c[5] for c in conversations} == {None}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "has no conversations: nothing to record"),
        ("{}\n", "line 1 is not a generated conversation"),
        ("not json\n", "line 1 is not a generated conversation"),
    ],
)
def test_bad_files_fail_with_exit_2(run, metrics_db, tmp_path, content, expected):
    path = tmp_path / "c.jsonl"
    path.write_text(content, encoding="utf-8")
    code, _, err = run(metrics_db, conversations=path)
    assert code == 2 and expected in err and "\n" not in err
    assert keyed_rows(metrics_db) == ([], [])


def test_an_unknown_situation_records_nothing(run, metrics_db, tmp_path):
    path = tmp_path / "c.jsonl"
    records = lines()
    records[-1]["situation_id"] = 99999
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    code, _, err = run(metrics_db, conversations=path)
    assert code == 2 and "unknown situation ids [99999]" in err
    assert keyed_rows(metrics_db) == ([], [])


def test_a_database_before_migration_3_fails_with_exit_13(run, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "old.db")
    monkeypatch.setitem(MIGRATIONS, METRICS, tuple(m for m in MIGRATIONS[METRICS] if m.version < 3))
    with connect(url, create=True) as db:
        migrate(db, METRICS)
    monkeypatch.undo()
    code, _, err = run(url)
    assert code == 13
    assert "metrics database: the metrics database is at schema version 2" in err


def test_postgresql(run, postgres_dsn, tmp_path):
    generate(sqlite_url(tmp_path / "calls.db"), postgres_dsn, seed=1, calls=0)
    code, out, _ = run(postgres_dsn, *ARGS)
    assert code == 0 and out["conversations"] == 4
    code, again, _ = run(postgres_dsn, *ARGS)
    assert code == 0 and (again["conversations"], again["existing"]) == (0, 4)
    prompts, conversations = keyed_rows(postgres_dsn)
    assert len(conversations) == 4 and {p[2] for p in prompts} == {101}
