from __future__ import annotations

import json
from pathlib import Path

import pytest

from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_demo import generate

pytest_plugins = ["skit_testing.postgres"]

FOLDER = Path(__file__).resolve().parents[1]
add_situations = import_component(FOLDER)
NEW = ["the caller lost their job  last month", "the caller is travelling and pays next week"]


@pytest.fixture
def metrics_db(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "metrics.db")
    generate(sqlite_url(tmp_path / "calls.db"), url, seed=2, calls=0)
    return url


def rows(url: str) -> dict[int, tuple[str, str, str, bool]]:
    with connect(url) as db:
        found = db.fetchall(
            "SELECT id, situation, scenario, scenario_category, is_valid "
            "FROM situation_scenario_mapper"
        )
    return {r[0]: (r[1], r[2], r[3], bool(r[4])) for r in found}


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs main() against `url`; returns (exit code, ids, added_count, report, stderr)."""

    def _run(url: str, *args: str):
        monkeypatch.setenv("METRICS_DB_URL", url)
        out = tmp_path / "out"
        code = add_situations.main(
            [
                *args,
                f"--selected-situation-ids={out / 'ids'}",
                f"--added-count={out / 'added'}",
                f"--report={out / 'report.json'}",
            ]
        )
        err = capsys.readouterr().err.strip()
        if code:
            return code, None, None, None, err
        return (
            code,
            json.loads((out / "ids").read_text()),
            int((out / "added").read_text()),
            json.loads((out / "report.json").read_text()),
            err,
        )

    return _run


def situations_args(*texts: str, scenario="promise to pay", category="debt_collection"):
    return [
        f"--situations={json.dumps(list(texts))}",
        f"--scenario={scenario}",
        f"--scenario-category={category}",
    ]


def test_adds_new_situations_once_and_finds_them_again(run, metrics_db):
    before = rows(metrics_db)
    valid = next(i for i, r in sorted(before.items()) if r[3])
    code, ids, added, report, _ = run(
        metrics_db, *situations_args(*NEW, NEW[0]), f"--situation-ids=[{valid}]"
    )
    assert code == 0 and added == 2
    after = rows(metrics_db)
    new_ids = sorted(set(after) - set(before))
    assert ids == [valid, *new_ids] and report["added"] == new_ids
    # Whitespace is normalised; the duplicate is added once.
    assert after[new_ids[0]] == (
        "the caller lost their job last month",
        "promise to pay",
        "debt_collection",
        True,
    )
    code, again, added, report, _ = run(metrics_db, *situations_args(*NEW))
    assert code == 0 and added == 0 and again == new_ids and report["found"] == new_ids
    assert rows(metrics_db) == after


def test_nothing_given_outputs_an_empty_list(run, metrics_db):
    code, ids, added, _, _ = run(metrics_db)
    assert (code, ids, added) == (0, [], 0)


def test_an_invalidated_situation_fails_and_adds_nothing(run, metrics_db):
    before = rows(metrics_db)
    old = next(r for r in before.values() if not r[3])
    code, _, _, _, err = run(
        metrics_db, *situations_args("a brand new one", old[0], scenario=old[1], category=old[2])
    )
    assert code == 2
    assert "were invalidated; nothing was added" in err and "\n" not in err
    assert rows(metrics_db) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (situations_args("   "), "situation 1 is empty"),
        (situations_args("x" * 501), "situation 1 has 501 characters; at most 500"),
        (situations_args("ok", scenario=""), "situations need a scenario and a scenario_category"),
        (situations_args("ok", category="Debt Collection"), "snake_case name"),
        (["--situation-ids=[999999]"], "unknown situation ids [999999]"),
        (["--situation-ids=[0]"], "situation ids must be positive"),
        (["--situations=not json"], "expected a JSON array"),
    ],
)
def test_bad_input_fails_with_exit_2_and_one_line(run, metrics_db, args, expected):
    before = rows(metrics_db)
    code, _, _, _, err = run(metrics_db, *args)
    assert code == 2
    assert expected in err and err.startswith("add_situations: ")
    assert rows(metrics_db) == before


def test_an_unmigrated_database_fails_with_exit_13(run, tmp_path):
    url = sqlite_url(tmp_path / "empty.db")
    with connect(url, create=True):
        pass
    code, _, _, _, err = run(url, *situations_args("new"))
    assert code == 13 and "metrics database:" in err


def test_postgresql(run, postgres_dsn, tmp_path):
    generate(sqlite_url(tmp_path / "calls.db"), postgres_dsn, seed=2, calls=0)
    code, ids, added, _, _ = run(postgres_dsn, *situations_args(*NEW))
    assert code == 0 and added == 2 and len(ids) == 2
    code, again, added, _, _ = run(postgres_dsn, *situations_args(*NEW))
    assert code == 0 and added == 0 and again == ids
