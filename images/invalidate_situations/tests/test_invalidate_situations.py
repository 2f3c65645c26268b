from __future__ import annotations

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
invalidate_situations = import_component(FOLDER)


@pytest.fixture
def metrics_db(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "metrics.db")
    generate(sqlite_url(tmp_path / "calls.db"), url, seed=2, calls=0)
    return url


def situations(url: str) -> dict[int, tuple[bool, object]]:
    """id -> (is_valid, invalidated_at)."""
    with connect(url) as db:
        rows = db.fetchall("SELECT id, is_valid, invalidated_at FROM situation_scenario_mapper")
    return {row[0]: (bool(row[1]), row[2]) for row in rows}


def valid_and_invalid(url: str) -> tuple[list[int], list[int]]:
    state = situations(url)
    return (
        sorted(i for i, (valid, _) in state.items() if valid),
        sorted(i for i, (valid, _) in state.items() if not valid),
    )


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs main() against `url`; returns (exit code, report, invalidated_count)."""

    def _run(ids: str, url: str) -> tuple[int, dict | None, int | None]:
        monkeypatch.setenv("METRICS_DB_URL", url)
        report, count = tmp_path / "out" / "report.json", tmp_path / "out" / "count"
        code = invalidate_situations.main(
            ["--situation-ids", ids, "--invalidated-count", str(count), "--report", str(report)]
        )
        if code != 0:
            return code, None, None
        return code, json.loads(report.read_text()), int(count.read_text())

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_demo_data_has_valid_and_invalid_situations(metrics_db):
    valid, invalid = valid_and_invalid(metrics_db)
    assert len(valid) > 40
    assert invalid


def test_invalidates_valid_situations_and_reports_already_invalid_ones(run, metrics_db):
    valid, invalid = valid_and_invalid(metrics_db)
    before = situations(metrics_db)
    ids = [valid[0], valid[1], invalid[0], valid[0]]
    code, report, count = run(json.dumps(ids), metrics_db)
    assert code == 0
    assert count == 2
    assert report == {
        "requested": sorted({valid[0], valid[1], invalid[0]}),
        "invalidated": [valid[0], valid[1]],
        "already_invalid": [invalid[0]],
    }
    after = situations(metrics_db)
    assert not after[valid[0]][0] and after[valid[0]][1] is not None
    assert not after[valid[1]][0]
    # An already-invalid situation keeps the time it was invalidated.
    assert after[invalid[0]] == before[invalid[0]]
    assert {k: v for k, v in after.items() if k not in (valid[0], valid[1])} == {
        k: v for k, v in before.items() if k not in (valid[0], valid[1])
    }


def test_running_again_invalidates_nothing_more(run, metrics_db):
    valid, _ = valid_and_invalid(metrics_db)
    assert run(json.dumps(valid[:3]), metrics_db)[2] == 3
    code, report, count = run(json.dumps(valid[:3]), metrics_db)
    assert code == 0
    assert count == 0
    assert report["already_invalid"] == valid[:3]


def test_unknown_ids_fail_listing_them_and_change_nothing(run, metrics_db, capsys):
    valid, _ = valid_and_invalid(metrics_db)
    before = situations(metrics_db)
    code, _, _ = run(json.dumps([valid[0], 9999, 10001]), metrics_db)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "unknown situation ids [9999, 10001]" in line
    assert "nothing was invalidated" in line
    assert situations(metrics_db) == before


def test_empty_list_is_a_reported_no_op(run, metrics_db):
    before = situations(metrics_db)
    code, report, count = run("[]", metrics_db)
    assert code == 0
    assert count == 0
    assert report == {"requested": [], "invalidated": [], "already_invalid": []}
    assert situations(metrics_db) == before


def test_integral_float_ids_are_accepted(run, metrics_db):
    # List parameters travel as google.protobuf.Value, whose numbers are doubles.
    valid, _ = valid_and_invalid(metrics_db)
    code, report, count = run(json.dumps([float(valid[0]), float(valid[1])]), metrics_db)
    assert code == 0
    assert count == 2
    assert report["invalidated"] == valid[:2]


@pytest.mark.parametrize("ids", ['["1"]', "1,2", "[true]", "[0]", "[1.5]", '{"id": 1}'])
def test_bad_ids_fail_with_exit_2(run, metrics_db, capsys, ids):
    code, _, _ = run(ids, metrics_db)
    assert code == 2
    assert one_line(capsys.readouterr().err).startswith("invalidate_situations: ")


def test_missing_database_url_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("METRICS_DB_URL", raising=False)
    code = invalidate_situations.main(
        [
            "--situation-ids",
            "[1]",
            "--invalidated-count",
            str(tmp_path / "n"),
            "--report",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "METRICS_DB_URL is not set" in one_line(capsys.readouterr().err)


def test_unmigrated_database_fails_with_exit_13(run, tmp_path, capsys):
    url = sqlite_url(tmp_path / "empty.db")
    with connect(url, create=True):
        pass
    code, _, _ = run("[1]", url)
    assert code == 13
    assert "schema version 0" in one_line(capsys.readouterr().err)


def test_long_unknown_lists_are_shortened():
    message = invalidate_situations._show(list(range(1, 31)))
    assert message.startswith("[1, 2, 3")
    assert message.endswith(", ...] (30 in all)")


def test_runs_as_a_module_in_its_image_folder(metrics_db, tmp_path):
    valid, _ = valid_and_invalid(metrics_db)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "invalidate_situations",
            "--situation-ids",
            f"[{valid[0]}]",
            "--invalidated-count",
            str(tmp_path / "count"),
            "--report",
            str(tmp_path / "r.json"),
        ],
        cwd=FOLDER,
        env={**os.environ, "METRICS_DB_URL": metrics_db},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "count").read_text() == "1"


@pytest.mark.postgres
def test_postgresql_invalidates_all_or_nothing(run, postgres_dsn, tmp_path, capsys):
    generate(sqlite_url(tmp_path / "calls.db"), postgres_dsn, seed=2, calls=0)
    valid, invalid = valid_and_invalid(postgres_dsn)
    before = situations(postgres_dsn)

    code, _, _ = run(json.dumps([valid[0], 424242]), postgres_dsn)
    assert code == 2
    assert "[424242]" in one_line(capsys.readouterr().err)
    assert situations(postgres_dsn) == before

    code, report, count = run(json.dumps([valid[0], valid[1], invalid[0]]), postgres_dsn)
    assert code == 0
    assert count == 2
    assert report["already_invalid"] == [invalid[0]]
    after = situations(postgres_dsn)
    assert not after[valid[0]][0] and after[valid[0]][1] is not None
