"""The LLM situations to write conversations for, from the metrics database."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from skit_components import cli
from skit_components.db import DatabaseError, connect
from skit_components.migrations import METRICS, SchemaError, require_schema

logger = logging.getLogger(__name__)

DB_ENV = "METRICS_DB_URL"
SCHEMA_VERSION = 1
"""The metrics schema version these queries need."""
_SHOWN_IDS = 20


@dataclass(frozen=True)
class Situation:
    id: int
    situation: str
    scenario: str
    scenario_category: str


def read_situations(database_url: str, situation_ids: Sequence[int], limit: int) -> list[Situation]:
    """The situations with `situation_ids` (all valid ones when empty), by id, at most
    `limit` of them (0: no limit).

    Raises:
        cli.BadInput: a bad limit or id, unknown or invalidated ids, or no situation at all.
        cli.ComponentError: the database is unusable.
    """
    if limit < 0:
        raise cli.BadInput(f"situation_limit must be >= 0 (0 for no limit), got {limit}")
    requested = sorted(set(situation_ids))
    if requested and requested[0] <= 0:
        raise cli.BadInput(f"situation ids must be positive, got {requested[0]}")
    try:
        with connect(database_url) as db:
            require_schema(db, METRICS, SCHEMA_VERSION)
            d = db.dialect
            columns = "id, situation, scenario, scenario_category, is_valid"
            if requested:
                rows = db.fetchall(
                    f"SELECT {columns} FROM situation_scenario_mapper "
                    f"WHERE {d.any_of('id')} ORDER BY id",
                    (d.list_param(requested),),
                )
            else:
                rows = db.fetchall(
                    f"SELECT {columns} FROM situation_scenario_mapper WHERE is_valid ORDER BY id"
                )
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"metrics database: {exc}") from exc
    unknown = sorted(set(requested) - {row[0] for row in rows})
    if unknown:
        raise cli.BadInput(f"unknown situation ids {_show(unknown)}")
    invalid = [row[0] for row in rows if not row[4]]
    if invalid:
        # Invalidated situations (invalidate-llm-situations) are never generated for.
        raise cli.BadInput(f"situations {_show(invalid)} are invalidated")
    if not rows:
        raise cli.BadInput("the metrics database has no valid situations to generate for")
    situations = [Situation(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]
    if limit and len(situations) > limit:
        logger.info("using the first %d of %d situations (situation_limit)", limit, len(rows))
        situations = situations[:limit]
    return situations


def _show(ids: list[int]) -> str:
    if len(ids) <= _SHOWN_IDS:
        return str(ids)
    shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS])
    return f"[{shown}, ...] ({len(ids)} in all)"
