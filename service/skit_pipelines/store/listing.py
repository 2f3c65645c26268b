"""The ListRuns statement both stores run: a keyset page, newest first, that reads only
the page's index entries however deep the page is and whatever the filter.

- The page position is a row-value bound `(create_time, id) < (?, ?)`, which SQLite and
  PostgreSQL turn into the start of an index range; the equivalent OR form makes both
  read from the newest run on every page.
- runs_by_pipeline and runs_by_state are (column, create_time, id), so one pipeline or
  one state is a single range in page order. Several states are one such range each,
  merged (each branch stops after a page).
- A label filter drives from run_labels_by_value (key, value, create_time, run_id): the
  run's create_time is copied into run_labels for that. Further labels and the other
  filters are checked on the rows the first label yields.
- created_before and the page position are both upper bounds, and an index range uses
  one: only the tighter one is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skit_pipelines.errors import InvalidArgument
from skit_pipelines.store.base import RunQuery

TimeValue = Callable[[datetime], Any]
"""How a store binds a time: SQLite compares sortable text, PostgreSQL timestamptz."""


@dataclass(frozen=True)
class Dialect:
    placeholder: str
    """The DB-API parameter marker: ? or %s."""
    time_value: TimeValue
    label_join: str
    """The join keyword that makes the label index the outer loop (SQLite's planner
    keeps the written order only for CROSS JOIN; PostgreSQL's CROSS JOIN takes no ON)."""


@dataclass(frozen=True)
class Statement:
    text: str
    args: tuple[Any, ...]


def parse_position(value: str) -> datetime:
    """The time of a page position (from a page token the client sent back)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidArgument("page_token is malformed", field="page_token") from exc
    if parsed.tzinfo is None:
        # Positions are written in UTC with an offset; a naive one cannot be compared.
        raise InvalidArgument("page_token is malformed", field="page_token")
    return parsed


def list_runs_statement(query: RunQuery, dialect: Dialect) -> Statement:
    """SELECT snapshot ... of the page's runs plus one (to tell whether more follow)."""
    mark, time_value = dialect.placeholder, dialect.time_value
    limit = query.page_size + 1
    labels = sorted(query.labels.items())
    if labels:
        first_key, first_value = labels[0]
        source = f"run_labels l {dialect.label_join} runs r ON r.id = l.run_id"
        time_column, id_column = "l.create_time", "l.run_id"
        clauses = [f"l.key = {mark}", f"l.value = {mark}"]
        args: list[Any] = [first_key, first_value]
    else:
        source = "runs r"
        time_column, id_column = "r.create_time", "r.id"
        clauses, args = [], []
    if query.pipeline:
        clauses.append(f"r.pipeline = {mark}")
        args.append(query.pipeline)
    for key, value in labels[1:]:
        clauses.append(
            "EXISTS (SELECT 1 FROM run_labels o"
            f" WHERE o.run_id = r.id AND o.key = {mark} AND o.value = {mark})"
        )
        args.extend((key, value))
    if query.created_after is not None:
        clauses.append(f"{time_column} >= {mark}")
        args.append(time_value(query.created_after))
    before = query.created_before
    if query.after is not None:
        after_time = parse_position(query.after[0])
        # Otherwise create_time < before already puts every run after the position.
        if before is None or after_time < before:
            before = None
            clauses.append(f"({time_column}, {id_column}) < ({mark}, {mark})")
            args.extend((time_value(after_time), query.after[1]))
    if before is not None:
        clauses.append(f"{time_column} < {mark}")
        args.append(time_value(before))
    order = f"ORDER BY {time_column} DESC, {id_column} DESC LIMIT {mark}"
    states = sorted(int(s) for s in query.states)
    if labels or len(states) <= 1:
        if states:
            clauses.append(f"r.state IN ({', '.join([mark] * len(states))})")
            args.extend(states)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return Statement(f"SELECT snapshot FROM {source}{where} {order}", (*args, limit))
    # Several states: a range of runs_by_state each, merged.
    branches = []
    branch_args: list[Any] = []
    for number, state in enumerate(states):
        where = " AND ".join([f"r.state = {mark}", *clauses])
        branches.append(
            f"SELECT * FROM (SELECT snapshot, {time_column} AS t, {id_column} AS i"
            f" FROM {source} WHERE {where} {order}) s{number}"
        )
        branch_args.extend((state, *args, limit))
    text = (
        f"SELECT snapshot FROM ({' UNION ALL '.join(branches)}) u"
        f" ORDER BY t DESC, i DESC LIMIT {mark}"
    )
    return Statement(text, (*branch_args, limit))
