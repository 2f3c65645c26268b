from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from skit_components.db import Database, connect, sqlite_url
from skit_components.migrations import CALLS, METRICS, latest_version, migrate, schema_version
from skit_demo import (
    DEFAULT_DAYS,
    DEMO_END,
    DemoDataExists,
    ensure_demo_data,
    generate,
)
from skit_demo import vocabulary as v
from skit_demo.bootstrap import CALLS_DB, METRICS_DB
from skit_demo.calls import MAX_TURNS

pytest_plugins = ["skit_testing.postgres"]

IST = ZoneInfo("Asia/Kolkata")
TABLES = {
    "calls": ("calls", "turns"),
    "metrics": ("situation_scenario_mapper", "prompt_details", "generated_conversations"),
}
JSON_COLUMNS = {"utterances", "slots", "entities", "conversation"}
TIME_COLUMNS = {"started_at", "reftime", "created_at", "invalidated_at"}


def make(tmp_path: Path, name: str, **kwargs) -> tuple[str, str]:
    calls = sqlite_url(tmp_path / f"{name}-calls.db")
    metrics = sqlite_url(tmp_path / f"{name}-metrics.db")
    generate(calls, metrics, **kwargs)
    return calls, metrics


def rows(db: Database, table: str) -> list[dict]:
    """A table's rows with engine differences removed (JSON text, timestamps, booleans)."""
    cursor = db.execute(f"SELECT * FROM {table} ORDER BY id")
    names = [c[0] for c in cursor.description]
    out = []
    for row in cursor.fetchall():
        record = {}
        for name, value in zip(names, row, strict=True):
            if name in JSON_COLUMNS and isinstance(value, str):
                value = json.loads(value)
            elif name in TIME_COLUMNS and value is not None:
                value = db.dialect.to_datetime(value)
            elif name == "is_valid":
                value = bool(value)
            record[name] = value
        out.append(record)
    return out


def fingerprint(calls_url: str, metrics_url: str) -> str:
    digest = hashlib.sha256()
    for url, schema in ((calls_url, "calls"), (metrics_url, "metrics")):
        with connect(url) as db:
            for table in TABLES[schema]:
                digest.update(repr(rows(db, table)).encode())
    return digest.hexdigest()


def test_same_seed_same_data_and_another_seed_other_data(tmp_path):
    first = fingerprint(*make(tmp_path, "a", seed=4, calls=150))
    again = fingerprint(*make(tmp_path, "b", seed=4, calls=150))
    other = fingerprint(*make(tmp_path, "c", seed=5, calls=150))
    assert first == again
    assert first != other


@pytest.mark.parametrize("size", [0, 1, 137])
def test_writes_exactly_the_requested_number_of_calls(tmp_path, size):
    calls_url, _ = make(tmp_path, "s", calls=size)
    with connect(calls_url) as db:
        ids = [r[0] for r in db.fetchall("SELECT id FROM calls ORDER BY id")]
        per_call = dict(db.fetchall("SELECT call_id, count(*) FROM turns GROUP BY call_id"))
    assert ids == list(range(1, size + 1))
    assert set(per_call) == set(ids)
    assert all(1 <= n <= MAX_TURNS for n in per_call.values())


def test_default_window_is_the_days_before_the_fixed_anchor(tmp_path):
    calls_url, _ = make(tmp_path, "w", calls=500)
    with connect(calls_url) as db:
        started = [
            db.dialect.to_datetime(r[0]) for r in db.fetchall("SELECT started_at FROM calls")
        ]
        ids_by_time = [r[0] for r in db.fetchall("SELECT id FROM calls ORDER BY started_at, id")]
    days = {s.astimezone(IST).date() for s in started}
    assert min(days) >= date(2026, 10, 2)
    assert max(days) < DEMO_END
    assert len(days) > DEFAULT_DAYS * 0.8
    # Ids follow time, as in a real calls table.
    assert ids_by_time == sorted(ids_by_time)


def test_custom_start_and_days(tmp_path):
    calls_url, _ = make(tmp_path, "d", calls=200, start=date(2025, 1, 10), days=3)
    with connect(calls_url) as db:
        days = {
            db.dialect.to_datetime(r[0]).astimezone(IST).date()
            for r in db.fetchall("SELECT started_at FROM calls")
        }
    assert days <= {date(2025, 1, 10), date(2025, 1, 11), date(2025, 1, 12)}


def test_demo_calls_look_like_production_calls(tmp_path):
    calls_url, _ = make(tmp_path, "r", calls=2000)
    with connect(calls_url) as db:
        calls = rows(db, "calls")
        turns = rows(db, "turns")
    languages = Counter(c["language"] for c in calls)
    assert set(languages) == set(v.LANGUAGES)
    assert min(languages.values()) > 50
    assert {c["call_type"] for c in calls} == {"INBOUND", "OUTBOUND"}
    assert len({c["call_end_status"] for c in calls}) >= 4
    assert len({c["disposition"] for c in calls}) >= 8
    assert {c["client_id"] for c in calls} == {c.id for c in v.CLIENTS}
    assert all(c["duration_seconds"] > 0 for c in calls)

    canonical = {i for lang in v.CALLER_SAYS.values() for i in lang}
    aliases = {a[0] for a in v.INTENT_ALIASES.values()}
    legacy_flows = {f.id for f in v.FLOWS if f.legacy_labels}
    flow_of = {c["id"]: c["flow_id"] for c in calls}
    entity_types = Counter()
    for turn in turns:
        if not turn["utterances"]:
            assert turn["intent"] is None and turn["entities"] == []
            continue
        for segment in turn["utterances"]:
            confidences = [alt["confidence"] for alt in segment]
            assert confidences == sorted(confidences, reverse=True)
            assert all(0 < c <= 1 for c in confidences)
        assert 0 < turn["intent_score"] < 1
        if flow_of[turn["call_id"]] in legacy_flows:
            assert turn["intent"] not in v.INTENT_ALIASES
        else:
            assert turn["intent"] in canonical
        assert turn["intent"] in canonical | aliases
        best = turn["utterances"][0][0]["transcript"]
        for entity in turn["entities"]:
            entity_types[entity["type"]] += 1
            assert best[entity["start"] : entity["end"]] == entity["text"]
            if entity["type"] == "date":
                date.fromisoformat(entity["value"])
            elif entity["type"] == "time":
                assert datetime.fromisoformat(entity["value"]).utcoffset() is not None
    assert set(entity_types) == {"date", "time", "number"}
    alternatives = Counter(len(t["utterances"][0]) for t in turns if t["utterances"])
    assert len(alternatives) == 5
    assert sum(1 for t in turns if t["slots"]) > 100

    language_of = {c["id"]: c["language"] for c in calls}
    threats = [
        t
        for t in turns
        for phrase in v.COMPLIANCE_BREACH_PHRASES[language_of[t["call_id"]]]
        if phrase in t["bot_response"]
    ]
    assert threats


def test_summary_counts_match_the_databases(tmp_path):
    calls_url, metrics_url = sqlite_url(tmp_path / "c.db"), sqlite_url(tmp_path / "m.db")
    summary = generate(calls_url, metrics_url, seed=9, calls=800)
    with connect(calls_url) as db:
        assert db.fetchone("SELECT count(*) FROM calls")[0] == summary.calls == 800
        assert db.fetchone("SELECT count(*) FROM turns")[0] == summary.turns
    with connect(metrics_url) as db:
        situations = rows(db, "situation_scenario_mapper")
        assert len(situations) == summary.situations
        invalid = [s for s in situations if not s["is_valid"]]
        assert len(invalid) == summary.invalid_situations > 0
        assert all(s["invalidated_at"] is not None for s in invalid)
        assert db.fetchone("SELECT count(*) FROM prompt_details")[0] == summary.prompts
        conversations = rows(db, "generated_conversations")
        assert len(conversations) == summary.generated_conversations
        assert all(c["conversation"][0]["role"] == "bot" for c in conversations)
    assert summary.threat_calls > 0
    assert summary.off_hours_calls > 0
    assert summary.as_dict()["start"] == "2026-10-02"


def test_every_flow_can_say_everything_its_template_needs():
    clients = {client.id: client for client in v.CLIENTS}
    for flow in v.FLOWS:
        says = v.CALLER_SAYS[flow.language]
        assert flow.language in clients[flow.client_id].name
        for state in v.TEMPLATES[flow.template_id].values():
            assert v.bot_prompt(flow.template_id, flow.language, state.name)
            for intent in (*state.caller, *state.transitions):
                assert intent in says, (flow.name, state.name, intent)
            for target in state.transitions.values():
                assert target in v.TEMPLATES[flow.template_id]


def test_refuses_to_write_over_existing_rows_unless_replacing(tmp_path):
    calls_url, metrics_url = make(tmp_path, "x", calls=20)
    with pytest.raises(DemoDataExists):
        generate(calls_url, metrics_url, calls=20)
    generate(calls_url, metrics_url, calls=30, seed=1, replace=True)
    with connect(calls_url) as db:
        assert db.fetchone("SELECT count(*) FROM calls")[0] == 30


def test_migrations_are_versioned_and_idempotent(tmp_path):
    with connect(sqlite_url(tmp_path / "m.db"), create=True) as db:
        assert schema_version(db, CALLS) == 0
        assert migrate(db, CALLS) == [1]
        assert migrate(db, CALLS) == []
        assert migrate(db, METRICS) == list(range(1, latest_version(METRICS) + 1))
        assert schema_version(db, CALLS) == latest_version(CALLS)
        assert schema_version(db, METRICS) == latest_version(METRICS)


def test_default_generation_is_fast(tmp_path):
    summary = generate(sqlite_url(tmp_path / "c.db"), sqlite_url(tmp_path / "m.db"))
    assert summary.calls == 2000
    assert summary.seconds < 5


def test_ensure_demo_data_creates_once_and_returns_absolute_urls(tmp_path):
    root = tmp_path / "demo"
    env = ensure_demo_data(root)
    assert (
        env.items()
        >= {
            "CALLS_DB_URL": f"sqlite:///{root / CALLS_DB}",
            "METRICS_DB_URL": f"sqlite:///{root / METRICS_DB}",
            "ANNOTATIONS_DB_URL": f"sqlite:///{root / 'annotations.db'}",
        }.items()
    )
    assert env["CALLS_DB_URL"].startswith("sqlite:////")
    assert {CALLS_DB, METRICS_DB, "annotations.db"} <= {p.name for p in root.iterdir()}
    stamp = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()}

    assert ensure_demo_data(root) == env
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir()} == stamp


def test_ensure_demo_data_replaces_only_what_is_missing(tmp_path):
    root = tmp_path / "demo"
    ensure_demo_data(root)
    calls_inode = (root / CALLS_DB).stat().st_ino
    (root / METRICS_DB).unlink()
    ensure_demo_data(root)
    assert (root / CALLS_DB).stat().st_ino == calls_inode
    with connect(sqlite_url(root / METRICS_DB)) as db:
        assert db.fetchone("SELECT count(*) FROM situation_scenario_mapper")[0] > 0


def test_ensure_demo_data_cleans_up_after_a_crashed_generation(tmp_path):
    root = tmp_path / "demo"
    root.mkdir()
    dead = root / f"{CALLS_DB}.tmp-999999999-deadbeef"
    dead.write_bytes(b"half a database")
    ours = root / f"{CALLS_DB}.tmp-{os.getpid()}-cafe0001"
    ours.write_bytes(b"being written by a live process")
    ensure_demo_data(root)
    assert not dead.exists()
    assert ours.exists()
    with connect(sqlite_url(root / CALLS_DB)) as db:
        assert db.fetchone("SELECT count(*) FROM calls")[0] == 2000


@pytest.mark.postgres
def test_postgresql_gets_the_same_rows_as_sqlite(tmp_path, postgres_dsn):
    sqlite_calls, sqlite_metrics = make(tmp_path, "p", seed=6, calls=250)
    summary = generate(postgres_dsn, postgres_dsn, seed=6, calls=250)
    assert summary.calls == 250
    for schema, sqlite_db in (("calls", sqlite_calls), ("metrics", sqlite_metrics)):
        for table in TABLES[schema]:
            with connect(sqlite_db) as lite, connect(postgres_dsn) as pg:
                assert rows(pg, table) == rows(lite, table), table


@pytest.mark.postgres
def test_postgresql_sequences_continue_after_generated_ids(postgres_dsn):
    generate(postgres_dsn, postgres_dsn, calls=10)
    with connect(postgres_dsn) as db:
        new_id = db.fetchone(
            "INSERT INTO situation_scenario_mapper (situation, scenario, scenario_category) "
            "VALUES ('s', 'x', 'y') RETURNING id"
        )[0]
        assert new_id == db.fetchone("SELECT count(*) FROM situation_scenario_mapper")[0]
        assert migrate(db, CALLS) == []


def test_ensure_demo_data_on_a_warm_home_still_removes_an_abandoned_model_registry(tmp_path):
    root = tmp_path / "demo"
    env = ensure_demo_data(root)
    dead = root / ".models.tmp-999999999-deadbeef"
    (dead / "half").mkdir(parents=True)
    assert ensure_demo_data(root) == env
    assert not dead.exists()
    assert (root / "models").is_dir()


def test_a_warm_start_imports_no_generator(tmp_path):
    root = tmp_path / "demo"
    ensure_demo_data(root)
    check = (
        "import sys; from pathlib import Path; from skit_demo import ensure_demo_data;"
        f" ensure_demo_data(Path({str(root)!r}));"
        " print(sorted(m for m in sys.modules if m.startswith('skit_demo.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    assert "skit_demo.generator" not in loaded
    assert "skit_demo.slu_model" not in loaded
