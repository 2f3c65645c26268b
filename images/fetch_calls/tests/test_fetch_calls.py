from __future__ import annotations

import csv
import io
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
from skit_components.migrations import CALLS, migrate
from skit_demo import generate

pytest_plugins = ["skit_testing.postgres"]

FOLDER = Path(__file__).resolve().parents[1]
fetch_calls = import_component(FOLDER)

DEMO_CALLS = 400
IST = ZoneInfo("Asia/Kolkata")


@pytest.fixture(scope="module")
def calls_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("demo")
    url = sqlite_url(root / "calls.db")
    generate(url, sqlite_url(root / "metrics.db"), seed=3, calls=DEMO_CALLS)
    return url


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls_db: str):
    """Runs main() with CALLS_DB_URL set; returns (exit code, CSV rows, call_count)."""

    def _run(*args: str, url: str | None = None) -> tuple[int, list[dict], int | None]:
        monkeypatch.setenv("CALLS_DB_URL", url or calls_db)
        out, count = tmp_path / "out" / "calls.csv", tmp_path / "out" / "call_count"
        code = fetch_calls.main([*args, "--calls", str(out), "--call-count", str(count)])
        rows = list(csv.DictReader(out.open(encoding="utf-8"))) if code == 0 else []
        return code, rows, int(count.read_text()) if code == 0 else None

    return _run


def call_ids(rows: list[dict]) -> list[int]:
    return sorted({int(r["call_id"]) for r in rows})


def db_calls(url: str, where: str = "1 = 1") -> dict[int, dict]:
    with connect(url) as db:
        cursor = db.execute(f"SELECT * FROM calls WHERE {where}")
        names = [c[0] for c in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_samples_exactly_call_quantity_calls_with_all_their_turns(run, calls_db):
    code, rows, count = run("--call-quantity", "50")
    assert code == 0
    assert count == 50
    assert len(call_ids(rows)) == 50
    with connect(calls_db) as db:
        expected = dict(db.fetchall("SELECT call_id, count(*) FROM turns GROUP BY call_id"))
    per_call = Counter(int(r["call_id"]) for r in rows)
    assert per_call == {cid: expected[cid] for cid in per_call}
    for cid in per_call:
        indexes = [int(r["turn_index"]) for r in rows if int(r["call_id"]) == cid]
        assert indexes == list(range(len(indexes)))


def test_csv_has_the_documented_columns_and_json_fields(run):
    code, rows, _ = run("--call-quantity", "30")
    assert code == 0
    assert tuple(rows[0]) == fetch_calls.COLUMNS
    for row in rows:
        utterances = json.loads(row["utterances"])
        assert isinstance(utterances, list)
        if utterances:
            assert row["primary_utterance"] == utterances[0][0]["transcript"]
            assert {"transcript", "confidence"} <= set(utterances[0][0])
        else:
            assert row["primary_utterance"] == ""
        assert isinstance(json.loads(row["slots"]), dict)
        assert isinstance(json.loads(row["entities"]), list)
        assert datetime.fromisoformat(row["reftime"]).utcoffset().total_seconds() == 0
        assert row["audio_url"].startswith("https://")


def test_same_seed_gives_the_same_sample_and_another_seed_another(run):
    first = call_ids(run("--call-quantity", "40", "--seed", "7")[1])
    again = call_ids(run("--call-quantity", "40", "--seed", "7")[1])
    other = call_ids(run("--call-quantity", "40", "--seed", "8")[1])
    assert first == again
    assert first != other


def test_all_matching_calls_when_fewer_than_call_quantity(run, calls_db):
    code, rows, count = run("--lang", "ta", "--call-quantity", "100000")
    assert code == 0
    expected = sorted(db_calls(calls_db, "language = 'ta'"))
    assert call_ids(rows) == expected
    assert count == len(expected)


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["--lang", "hi"], lambda call: call["language"] == "hi"),
        (["--client-id", "102"], lambda call: call["client_id"] == 102),
        (["--flow-ids", "[2001, 2009]"], lambda call: call["flow_id"] in (2001, 2009)),
        (["--flow-ids", "[2004.0]"], lambda call: call["flow_id"] == 2004),
        (["--template-id", "2"], lambda call: call["template_id"] == 2),
        (["--call-type", "INBOUND"], lambda call: call["call_type"] == "INBOUND"),
        (["--min-duration", "60.5"], lambda call: call["duration_seconds"] >= 60.5),
    ],
)
def test_call_filters_select_exactly_the_matching_calls(run, calls_db, args, check):
    code, rows, _ = run(*args, "--call-quantity", "100000")
    assert code == 0
    calls = db_calls(calls_db)
    assert call_ids(rows) == sorted(cid for cid, call in calls.items() if check(call))


def test_states_and_intents_must_hold_on_the_same_turn(run, calls_db):
    code, rows, _ = run(
        "--states",
        '["CONFIRM_DATE"]',
        "--intents",
        '["_confirm_", "yes"]',
        "--call-quantity",
        "100000",
    )
    assert code == 0
    with connect(calls_db) as db:
        expected = sorted(
            r[0]
            for r in db.fetchall(
                "SELECT DISTINCT call_id FROM turns WHERE state = 'CONFIRM_DATE' "
                "AND intent IN ('_confirm_', 'yes')"
            )
        )
    assert expected
    assert call_ids(rows) == expected
    # Every turn of the matching calls is returned, not only the matching turns.
    assert {r["state"] for r in rows} > {"CONFIRM_DATE"}


def test_dates_are_inclusive_local_days_in_the_given_timezone(run, calls_db):
    code, rows, _ = run(
        "--start-date",
        "2026-10-10",
        "--end-date",
        "2026-10-12",
        "--timezone",
        "Asia/Kolkata",
        "--call-quantity",
        "100000",
    )
    assert code == 0
    with connect(calls_db) as db:
        started = {
            cid: datetime.fromisoformat(ts).astimezone(IST).date()
            for cid, ts in db.fetchall("SELECT id, started_at FROM calls")
        }
    expected = sorted(
        cid for cid, day in started.items() if date(2026, 10, 10) <= day <= date(2026, 10, 12)
    )
    assert expected
    assert call_ids(rows) == expected
    assert all(r["reftime"].endswith("+05:30") for r in rows)


def test_no_matching_call_fails_with_one_line(run, capsys):
    code, _, _ = run("--lang", "xx")
    assert code == 2
    assert "no calls match the filters: lang='xx'" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "args",
    [
        ["--start-date", "2026-13-01"],
        ["--start-date", "2026-10-20", "--end-date", "2026-10-01"],
        ["--timezone", "Mars/Olympus"],
        ["--flow-ids", "2001,2002"],
        ["--flow-ids", '["2001"]'],
        ["--states", "[1]"],
        ["--call-quantity", "0"],
        ["--call-quantity", "2.5"],
        ["--min-duration", "-1"],
        ["--client-id", "-3"],
    ],
)
def test_bad_input_fails_with_exit_2_and_one_line(run, capsys, args):
    code, _, _ = run(*args)
    assert code == 2
    assert one_line(capsys.readouterr().err).startswith("fetch_calls: ")


def test_integral_floats_are_accepted_for_integers(run):
    # KFP renders an integer parameter's default as 200.0.
    code, _, count = run("--call-quantity", "20.0", "--seed", "1.0")
    assert code == 0
    assert count == 20


def test_missing_database_url_is_bad_input(run, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CALLS_DB_URL", raising=False)
    code = fetch_calls.main(["--calls", str(tmp_path / "c"), "--call-count", str(tmp_path / "n")])
    assert code == 2
    assert "CALLS_DB_URL is not set" in one_line(capsys.readouterr().err)


def test_unusable_databases_fail_with_exit_13(run, tmp_path, capsys):
    code, _, _ = run(url=sqlite_url(tmp_path / "absent.db"))
    assert code == 13
    assert "no SQLite database" in one_line(capsys.readouterr().err)

    with connect(sqlite_url(tmp_path / "empty.db"), create=True):
        pass
    code, _, _ = run(url=sqlite_url(tmp_path / "empty.db"))
    assert code == 13
    assert "schema version 0" in one_line(capsys.readouterr().err)


def test_sample_is_uniform_and_bounded():
    picks = Counter()
    for seed in range(3000):
        sampled, seen = fetch_calls.sample(iter(range(20)), 5, seed)
        assert seen == 20
        assert len(sampled) == 5 == len(set(sampled))
        picks.update(sampled)
    # Each id is expected 3000 * 5 / 20 = 750 times.
    assert all(650 < n < 850 for n in picks.values()), picks
    assert fetch_calls.sample(iter([3, 1, 2]), 10, 0) == ([1, 2, 3], 3)


def test_runs_as_a_module_in_its_image_folder(calls_db, tmp_path):
    """As the local executor runs it: `python3 -m fetch_calls` with cwd = the image folder."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fetch_calls",
            "--call-quantity",
            "5",
            "--flow-ids",
            "[]",
            "--calls",
            str(tmp_path / "calls.csv"),
            "--call-count",
            str(tmp_path / "count"),
        ],
        cwd=FOLDER,
        env={**os.environ, "CALLS_DB_URL": calls_db},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "count").read_text() == "5"


@pytest.mark.postgres
def test_postgresql_gives_the_same_csv_as_sqlite(run, postgres_dsn, tmp_path):
    sqlite_calls = sqlite_url(tmp_path / "calls.db")
    generate(sqlite_calls, sqlite_url(tmp_path / "metrics.db"), seed=5, calls=300)
    generate(postgres_dsn, postgres_dsn, seed=5, calls=300)
    args = (
        "--call-quantity",
        "60",
        "--seed",
        "11",
        "--timezone",
        "Asia/Kolkata",
        "--start-date",
        "2026-10-05",
        "--states",
        '["PURPOSE", "INIT"]',
    )
    code, from_sqlite, count = run(*args, url=sqlite_calls)
    assert code == 0
    assert count == 60
    code, from_postgres, _ = run(*args, url=postgres_dsn)
    assert code == 0

    def normalised(rows: list[dict]) -> list[dict]:
        # jsonb re-serialises documents (key order, spacing); compare their values.
        return [
            {
                k: json.loads(v) if k in ("utterances", "slots", "entities") else v
                for k, v in row.items()
            }
            for row in rows
        ]

    assert normalised(from_postgres) == normalised(from_sqlite)


@pytest.mark.postgres
def test_postgresql_streams_and_reports_errors(run, postgres_dsn, capsys):
    generate(postgres_dsn, postgres_dsn, seed=1, calls=500)
    code, rows, count = run("--call-quantity", "500", url=postgres_dsn)
    assert code == 0
    assert count == 500
    assert len(call_ids(rows)) == 500
    code, _, _ = run("--intents", '["no_such_intent"]', url=postgres_dsn)
    assert code == 2
    assert "no calls match" in one_line(capsys.readouterr().err)


def export(url: str, out: Path, **slicing: int) -> tuple[int, bytes]:
    """copy_turns of every call in `url` into `out`: (rows, bytes)."""
    with connect(url) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM calls ORDER BY id")]
        with out.open("wb") as f:
            rows = fetch_calls.copy_turns(db, ids, "Asia/Kolkata", f, **slicing)
    return rows, out.read_bytes()


@pytest.mark.postgres
def test_postgresql_export_in_slices_writes_the_bytes_of_one_copy(postgres_dsn, tmp_path):
    generate(postgres_dsn, postgres_dsn, seed=2, calls=300)
    one = export(postgres_dsn, tmp_path / "one.csv", connections=1)
    sliced = export(
        postgres_dsn, tmp_path / "sliced.csv", connections=3, min_calls_per_connection=1
    )
    with connect(postgres_dsn) as db:
        turns = db.execute("SELECT count(*) FROM turns").fetchone()[0]
    assert one[0] == turns > 300
    assert sliced == one
    # The slices' temporary files are gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv", "sliced.csv"]


@pytest.mark.postgres
def test_postgresql_slices_read_the_snapshot_of_the_export(postgres_dsn, tmp_path, monkeypatch):
    """A change committed after the export began, before a slice's connection reads, is
    not in the CSV: every slice reads the snapshot the export took."""
    generate(postgres_dsn, postgres_dsn, seed=2, calls=40)
    before = export(postgres_dsn, tmp_path / "before.csv", connections=1)
    copy_slice = fetch_calls._copy_from_snapshot
    deleted = []

    def after_a_delete(url, snapshot, call_ids, timezone, out):
        with connect(url) as other:
            other.execute("DELETE FROM turns WHERE call_id = ?", [call_ids[-1]])
        deleted.append(call_ids[-1])
        return copy_slice(url, snapshot, call_ids, timezone, out)

    monkeypatch.setattr(fetch_calls, "_copy_from_snapshot", after_a_delete)
    during = export(
        postgres_dsn, tmp_path / "during.csv", connections=2, min_calls_per_connection=1
    )
    assert len(deleted) == 1
    assert during == before
    # The turns are gone for an export that starts now.
    after = export(postgres_dsn, tmp_path / "after.csv", connections=1)
    assert f"\n{deleted[0]},".encode() in before[1]
    assert f"\n{deleted[0]},".encode() not in after[1]


EDGE_CALL = {
    "id": 1,
    "uuid": "call-1",
    "client_id": 7,
    "client_uuid": "client-7",
    "flow_id": 3,
    "flow_uuid": "flow-3",
    "flow_name": 'Loan, "EMI" reminder',
    "flow_version": "v1",
    "template_id": 2,
    "language": "hi",
    "asr_provider": "google",
    "call_type": "outbound",
    "call_end_status": "completed",
    "disposition": "",
    "previous_disposition": "",
    "blocking_disposition": "dnc",
    "started_at": datetime(2026, 10, 5, 18, 30, tzinfo=ZoneInfo("UTC")),
    "duration_seconds": 42.0,
    "audio_url": "https://audio.example/1.wav",
    "call_url": "https://calls.example/1",
}
# JSON in jsonb's own spelling (", " and ": " separators), so both engines return the same text.
EDGE_TURNS = (
    {
        "reftime": datetime(2026, 10, 5, 18, 30, 1, 123987, tzinfo=ZoneInfo("UTC")),
        "state": "",
        "utterances": json.dumps(
            [[{"transcript": "नमस्ते, हाँ"}, {"transcript": "x"}]], ensure_ascii=False
        ),
        "bot_response": "line one\nline two",
        "intent": None,
        "intent_score": None,
        "slots": "[]",
        "entities": "{}",
        "asr_latency_ms": None,
    },
    {
        "reftime": datetime(2026, 10, 5, 18, 31, tzinfo=ZoneInfo("UTC")),
        "state": "PURPOSE",
        "utterances": "[]",
        "bot_response": 'say "hi"\r',
        "intent": "confirm",
        "intent_score": 0.1 + 0.2,
        "slots": json.dumps([{"name": "date"}]),
        "entities": json.dumps({"type": "date", "value": "2026-10-06"}),
        "asr_latency_ms": 120,
    },
)


def write_edge_call(url: str) -> None:
    with connect(url, create=True) as db:
        migrate(db, CALLS)
        d = db.dialect
        call = {
            **EDGE_CALL,
            "started_at": d.timestamp_param(EDGE_CALL["started_at"]),
        }
        db.execute(
            f"INSERT INTO calls ({', '.join(call)}) VALUES ({', '.join('?' * len(call))})",
            list(call.values()),
        )
        for index, turn in enumerate(EDGE_TURNS):
            row = {
                "id": index + 1,
                "uuid": f"turn-{index}",
                "call_id": 1,
                "turn_index": index,
                **turn,
                "reftime": d.timestamp_param(turn["reftime"]),
                "audio_url": "",
                "slu_latency_ms": None,
            }
            db.execute(
                f"INSERT INTO turns ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )


@pytest.mark.postgres
@pytest.mark.parametrize("timezone", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_postgresql_copy_writes_the_same_bytes_as_sqlite(
    monkeypatch, postgres_dsn, tmp_path, timezone
):
    """Quoting, empty text against NULL, integral floats, milliseconds, UTC offsets and
    non-ASCII text come out byte for byte alike from COPY and from Python's csv."""
    sqlite_calls = sqlite_url(tmp_path / "edge.db")
    outputs = {}
    for engine, url in (("sqlite", sqlite_calls), ("postgresql", postgres_dsn)):
        write_edge_call(url)
        monkeypatch.setenv("CALLS_DB_URL", url)
        out = tmp_path / engine / "calls.csv"
        code = fetch_calls.main(
            ["--timezone", timezone, "--calls", str(out), "--call-count", str(tmp_path / "n")]
        )
        assert code == 0
        outputs[engine] = out.read_bytes()
    assert outputs["postgresql"] == outputs["sqlite"]
    rows = list(csv.DictReader(io.StringIO(outputs["sqlite"].decode(), newline="")))
    assert [r["bot_response"] for r in rows] == ["line one\nline two", 'say "hi"\r']
    assert [r["primary_utterance"] for r in rows] == ["नमस्ते, हाँ", ""]
    assert rows[0]["call_duration"] == "42.0"
    assert rows[1]["intent_score"] == repr(0.1 + 0.2)
    assert rows[0]["reftime"] == EDGE_TURNS[0]["reftime"].astimezone(ZoneInfo(timezone)).isoformat(
        timespec="milliseconds"
    )
    assert b"\r\n" not in outputs["sqlite"].replace(b'\r"', b"")
