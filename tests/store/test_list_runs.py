"""ListRuns on every store: each filter and combination of filters pages through exactly
the matching runs, newest first, across runs created at the same instant; and page
positions a client tampered with are INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skit_pipelines.domain import Run, RunState
from skit_pipelines.errors import InvalidArgument
from skit_pipelines.store import PostgresRunStore, RunQuery, RunStore, SqliteRunStore
from skit_pipelines.store.base import sortable_time

pytest_plugins = ["skit_testing.postgres"]

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
RUNS = 48
SAME_INSTANT = 4
"""Runs created at each instant: ties are broken by id, so every page must be too."""
STATES = (RunState.QUEUED, RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED)


def _run(i: int) -> Run:
    # Ids in another order than creation, so the id tie-break is tested.
    return Run(
        id=f"run-{(i * 29) % RUNS:02d}",
        pipeline=("a", "b", "c")[i % 3],
        pipeline_version="sha256:abc",
        parameters={},
        labels={"team": ("slu", "asr")[i % 2], **({"exp": "x"} if i % 5 < 2 else {})},
        state=STATES[(i // 2) % len(STATES)],
        create_time=T0 + timedelta(minutes=i // SAME_INSTANT),
        update_time=T0,
        revision=1,
    )


ALL_RUNS = [_run(i) for i in range(RUNS)]
WINDOW = (T0 + timedelta(minutes=3), T0 + timedelta(minutes=9))

QUERIES = {
    "unfiltered": RunQuery(),
    "pipeline": RunQuery(pipeline="b"),
    "one state": RunQuery(states=frozenset({RunState.FAILED})),
    "two states": RunQuery(states=frozenset({RunState.QUEUED, RunState.FAILED})),
    "label": RunQuery(labels={"exp": "x"}),
    "two labels": RunQuery(labels={"exp": "x", "team": "slu"}),
    "time range": RunQuery(created_after=WINDOW[0], created_before=WINDOW[1]),
    "created after": RunQuery(created_after=WINDOW[0]),
    "created before": RunQuery(created_before=WINDOW[1]),
    "pipeline and state": RunQuery(pipeline="a", states=frozenset({RunState.RUNNING})),
    "pipeline and time range": RunQuery(
        pipeline="c", created_after=WINDOW[0], created_before=WINDOW[1]
    ),
    "state and label": RunQuery(states=frozenset({RunState.QUEUED}), labels={"team": "asr"}),
    "two states and label": RunQuery(
        states=frozenset({RunState.QUEUED, RunState.SUCCEEDED}), labels={"exp": "x"}
    ),
    "label and time range": RunQuery(
        labels={"team": "slu"}, created_after=WINDOW[0], created_before=WINDOW[1]
    ),
    "two states and time range": RunQuery(
        states=frozenset({RunState.RUNNING, RunState.FAILED}),
        created_after=WINDOW[0],
        created_before=WINDOW[1],
    ),
    "everything": RunQuery(
        pipeline="a",
        states=frozenset({RunState.QUEUED, RunState.RUNNING}),
        labels={"team": "slu", "exp": "x"},
        created_after=T0,
        created_before=WINDOW[1],
    ),
    "no match": RunQuery(labels={"team": "nobody"}),
}


def _matches(query: RunQuery, run: Run) -> bool:
    return (
        (not query.pipeline or run.pipeline == query.pipeline)
        and (not query.states or run.state in query.states)
        and all(run.labels.get(k) == v for k, v in query.labels.items())
        and (query.created_after is None or run.create_time >= query.created_after)
        and (query.created_before is None or run.create_time < query.created_before)
    )


def _expected(query: RunQuery) -> list[str]:
    matching = [r for r in ALL_RUNS if _matches(query, r)]
    matching.sort(key=lambda r: (r.create_time, r.id), reverse=True)
    return [r.id for r in matching]


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    if request.param == "sqlite":
        store: RunStore = SqliteRunStore(tmp_path / "runs.db")
    else:
        store = await PostgresRunStore.open(request.getfixturevalue("postgres_dsn"))
    for run in ALL_RUNS:
        await store.create_run(run)
    yield store
    await store.close()


async def _all_pages(store: RunStore, query: RunQuery, page_size: int) -> list[str]:
    seen: list[str] = []
    query = replace(query, page_size=page_size)
    while True:
        page = await store.list_runs(query)
        seen.extend(r.id for r in page.runs)
        if not page.more:
            return seen
        assert len(page.runs) == page_size
        last = page.runs[-1]
        query = replace(query, after=(sortable_time(last.create_time), last.id))


async def test_every_filter_pages_through_exactly_its_runs_newest_first(
    store: RunStore,
) -> None:
    for name, query in QUERIES.items():
        expected = _expected(query)
        assert name == "no match" or expected, f"{name} matches nothing: a useless case"
        for page_size in (1, 3, SAME_INSTANT, len(expected) or 1, RUNS + 1):
            got = await _all_pages(store, query, page_size)
            assert got == expected, f"{name}, pages of {page_size}"


async def test_a_position_past_created_before_lists_from_created_before(
    store: RunStore,
) -> None:
    later = T0 + timedelta(hours=1)
    query = RunQuery(created_before=WINDOW[1], after=(sortable_time(later), "run-99"))
    page = await store.list_runs(query)
    assert [r.id for r in page.runs] == _expected(RunQuery(created_before=WINDOW[1]))


@pytest.mark.parametrize("position", ["not a time", "2026-11-01T12:00:00"])
async def test_a_malformed_position_is_invalid_argument(store: RunStore, position: str) -> None:
    with pytest.raises(InvalidArgument):
        await store.list_runs(RunQuery(after=(position, "run-00")))
