from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_demo import generate

pytest_plugins = ["skit_testing.postgres"]

FOLDER = Path(__file__).resolve().parents[1]
publish_breaches = import_component(FOLDER)


def judgement(uuid: str, *rules: str, status: str = "judged", **extra: object) -> dict:
    record = {
        "call_uuid": uuid,
        "call_url": f"https://studio.example/calls/{uuid}",
        "audio_url": f"https://audio.example/{uuid}/0.wav",
        "flow_uuid": "flow",
        "client_uuid": "client",
        "reftime": "2026-10-05T05:30:00+00:00",
        "language": "en",
        "template_id": 1,
        "flow_id": 2001,
        "call_type": "OUTBOUND",
        "turns": 3,
        "status": status,
        "is_breach": bool(rules),
        "findings": [
            {
                "rule": rule,
                "severity": "high",
                "turn_index": 1,
                "evidence": f"words breaking {rule}",
                "audio_url": f"https://audio.example/{uuid}/1.wav",
            }
            for rule in rules
        ],
        "error": "HTTP 500 (after 4 attempts)" if status == "failed" else "",
        "tokens": 10,
        "judge": "rules",
        "policy_version": "2026.11.0",
    }
    return {**record, **extra}


JUDGEMENTS = [
    judgement("a"),
    judgement("b", "threat_of_legal_action"),
    judgement("c", "collection_calling_hours", "threat_of_recovery_visit"),
    judgement("d", status="failed"),
]


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def metrics_db(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "metrics.db")
    generate(sqlite_url(tmp_path / "calls.db"), url, seed=2, calls=0)
    return url


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs main(); returns (exit code, breach_count, failed_count, report, CSV rows)."""

    def _run(records: list[dict], url: str) -> tuple[int, int, int, dict, list[dict]]:
        monkeypatch.setenv("METRICS_DB_URL", url)
        out = tmp_path / "out"
        code = publish_breaches.main(
            [
                "--judgements",
                str(write(tmp_path / "judgements.jsonl", records)),
                "--breach-count",
                str(out / "breach_count"),
                "--failed-count",
                str(out / "failed_count"),
                "--report",
                str(out / "report.json"),
                "--breaches",
                str(out / "breaches.csv"),
            ]
        )
        if code != 0:
            return code, -1, -1, {}, []
        with (out / "breaches.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return (
            code,
            int((out / "breach_count").read_text()),
            int((out / "failed_count").read_text()),
            json.loads((out / "report.json").read_text()),
            rows,
        )

    return _run


def stored(url: str) -> list[tuple]:
    with connect(url) as db:
        rows = db.fetchall(
            "SELECT call_uuid, policy_version, judge, is_breach, compliance_output, "
            "tokens_consumed, audio_url, reftime, updated_at FROM compliance_breaches "
            "ORDER BY call_uuid, policy_version, judge"
        )
    return [(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), r[5], r[6], r[7], r[8]) for r in rows]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_stores_judged_calls_and_reports_the_breaches(run, metrics_db):
    code, breaches, failed, report, rows = run(JUDGEMENTS, metrics_db)
    assert code == 0
    assert (breaches, failed) == (2, 1)
    saved = stored(metrics_db)
    assert [(r[0], r[1], r[2], r[3]) for r in saved] == [
        ("a", "2026.11.0", "rules", False),
        ("b", "2026.11.0", "rules", True),
        ("c", "2026.11.0", "rules", True),
    ]
    c = saved[2]
    assert [f["rule"] for f in c[4]["findings"]] == [
        "collection_calling_hours",
        "threat_of_recovery_visit",
    ]
    # The breach's own turn audio, not the call's first.
    assert c[5] == 10 and c[6] == "https://audio.example/c/1.wav"
    assert report["breached_calls"] == 2 and report["breaches"] == 3
    assert report["breaches_by_rule"] == {
        "collection_calling_hours": 1,
        "threat_of_legal_action": 1,
        "threat_of_recovery_visit": 1,
    }
    assert (report["rows_inserted"], report["rows_updated"]) == (3, 0)
    assert report["failed"] == [
        {
            "call_uuid": "d",
            "call_url": "https://studio.example/calls/d",
            "error": "HTTP 500 (after 4 attempts)",
        }
    ]
    assert report["database"] == metrics_db and report["policy_versions"] == ["2026.11.0"]
    assert [(r["status"], r["call_uuid"], r["rule"]) for r in rows] == [
        ("breach", "b", "threat_of_legal_action"),
        ("breach", "c", "collection_calling_hours"),
        ("breach", "c", "threat_of_recovery_visit"),
        ("failed", "d", ""),
    ]
    assert (
        rows[0]["turn_index"] == "1"
        and rows[0]["evidence"] == "words breaking threat_of_legal_action"
    )
    assert rows[3]["error"] == "HTTP 500 (after 4 attempts)"


def test_publishing_again_updates_rows_instead_of_adding(run, metrics_db):
    assert run(JUDGEMENTS, metrics_db)[0] == 0
    first = stored(metrics_db)
    code, _, _, report, _ = run(JUDGEMENTS, metrics_db)
    assert code == 0
    assert (report["rows_inserted"], report["rows_updated"]) == (0, 3)
    again = stored(metrics_db)
    assert [r[:8] for r in again] == [r[:8] for r in first]
    # A changed judgement of the same call, policy and judge replaces the old one.
    changed = [judgement("a", "abusive_language"), judgement("b")]
    code, breaches, _, report, _ = run(changed, metrics_db)
    assert (code, breaches) == (0, 1)
    assert {r[0]: r[3] for r in stored(metrics_db)} == {"a": True, "b": False, "c": True}
    # Another policy version or judge is another judgement, kept alongside.
    other = [judgement("a", policy_version="2027.1.0"), judgement("a", judge="llm:m")]
    assert run(other, metrics_db)[3]["rows_inserted"] == 2
    assert [(r[0], r[1], r[2]) for r in stored(metrics_db)][:3] == [
        ("a", "2026.11.0", "llm:m"),
        ("a", "2026.11.0", "rules"),
        ("a", "2027.1.0", "rules"),
    ]


def test_rows_of_the_original_system_may_repeat_a_call(run, metrics_db):
    with connect(metrics_db) as db:
        for _ in range(2):
            db.execute(
                "INSERT INTO compliance_breaches (call_uuid, is_breach, compliance_output) "
                "VALUES ('a', TRUE, '{\"breach\": true}')"
            )
    assert run(JUDGEMENTS, metrics_db)[0] == 0
    assert [(r[0], r[1]) for r in stored(metrics_db)].count(("a", "")) == 2


def test_a_failing_write_leaves_the_table_as_it_was(run, metrics_db, capsys):
    assert run(JUDGEMENTS[:1], metrics_db)[0] == 0
    before = stored(metrics_db)
    with connect(metrics_db) as db:
        db.execute(
            "CREATE TRIGGER refuse_c BEFORE INSERT ON compliance_breaches "
            "WHEN NEW.call_uuid = 'c' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    code, *_ = run(JUDGEMENTS, metrics_db)
    assert code == 13
    assert "nothing was written: disk full" in one_line(capsys.readouterr().err)
    assert stored(metrics_db) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the judgements file is empty"),
        ("{not json\n", "judgements line 1 is not JSON"),
        ('{"call_uuid": "a"}\n', "judgements line 1 has no status, is_breach, findings, judge"),
        (json.dumps(judgement("a", status="maybe")) + "\n", "unknown status 'maybe'"),
        (json.dumps(judgement("a", policy_version="")) + "\n", "has an empty policy_version"),
        (json.dumps(judgement("a")) + "\n" + json.dumps(judgement("a")) + "\n", "a call twice"),
        (json.dumps(judgement("a", reftime="noon")) + "\n", "call a: bad reftime 'noon'"),
    ],
)
def test_bad_judgements_fail_with_exit_2(tmp_path, metrics_db, monkeypatch, capsys, text, message):
    monkeypatch.setenv("METRICS_DB_URL", metrics_db)
    path = tmp_path / "j.jsonl"
    path.write_text(text)
    code = publish_breaches.main(
        [
            "--judgements",
            str(path),
            *[f"--{name}={tmp_path / name}" for name in ("breach-count", "failed-count")],
            f"--report={tmp_path / 'r.json'}",
            f"--breaches={tmp_path / 'b.csv'}",
        ]
    )
    assert code == 2
    assert message in one_line(capsys.readouterr().err)
    assert stored(metrics_db) == []


def test_an_unmigrated_database_fails_with_exit_13(run, metrics_db, capsys):
    with connect(metrics_db) as db:
        db.execute(
            "DELETE FROM skit_schema_migrations WHERE schema_name = 'metrics' AND version > 1"
        )
    code, *_ = run(JUDGEMENTS, metrics_db)
    assert code == 13
    assert "schema version 1 but version 2 is needed" in one_line(capsys.readouterr().err)


def test_missing_database_url_is_bad_input(run, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("METRICS_DB_URL", raising=False)
    code = publish_breaches.main(
        [
            "--judgements",
            str(write(tmp_path / "j.jsonl", JUDGEMENTS)),
            "--breach-count=/dev/null",
            "--failed-count=/dev/null",
            f"--report={tmp_path / 'r'}",
            f"--breaches={tmp_path / 'b'}",
        ]
    )
    assert code == 2
    assert "METRICS_DB_URL is not set" in one_line(capsys.readouterr().err)


def test_runs_as_a_module_in_its_image_folder(metrics_db, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "publish_breaches",
            "--judgements",
            str(write(tmp_path / "j.jsonl", JUDGEMENTS)),
            "--breach-count",
            str(tmp_path / "n"),
            "--failed-count",
            str(tmp_path / "f"),
            "--report",
            str(tmp_path / "r.json"),
            "--breaches",
            str(tmp_path / "b.csv"),
        ],
        cwd=FOLDER,
        env={**os.environ, "METRICS_DB_URL": metrics_db},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "n").read_text() == "2"


@pytest.mark.postgres
def test_postgresql_upserts_in_one_transaction(run, postgres_dsn, tmp_path, capsys):
    generate(sqlite_url(tmp_path / "calls.db"), postgres_dsn, seed=2, calls=0)
    code, breaches, _, report, _ = run(JUDGEMENTS, postgres_dsn)
    assert (code, breaches, report["rows_inserted"]) == (0, 2, 3)
    first = stored(postgres_dsn)
    assert [(r[0], r[3]) for r in first] == [("a", False), ("b", True), ("c", True)]
    assert first[1][7] is not None and first[1][7].utcoffset() is not None

    code, _, _, report, _ = run(JUDGEMENTS, postgres_dsn)
    assert (code, report["rows_inserted"], report["rows_updated"]) == (0, 0, 3)
    assert [r[:8] for r in stored(postgres_dsn)] == [r[:8] for r in first]

    with connect(postgres_dsn) as db:
        db.execute(
            "CREATE FUNCTION refuse_e() RETURNS trigger AS $$ BEGIN "
            "IF NEW.call_uuid = 'e' THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; "
            "END $$ LANGUAGE plpgsql"
        )
        db.execute(
            "CREATE TRIGGER refuse_e BEFORE INSERT ON compliance_breaches "
            "FOR EACH ROW EXECUTE FUNCTION refuse_e()"
        )
    before = stored(postgres_dsn)
    code, *_ = run([judgement("a", "abusive_language"), judgement("e")], postgres_dsn)
    assert code == 13
    assert "nothing was written" in one_line(capsys.readouterr().err)
    assert stored(postgres_dsn) == before
