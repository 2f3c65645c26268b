"""invalidate_situations: mark LLM situations invalid in the metrics database.

All or nothing: when any requested id does not exist the step fails listing them and
changes nothing. Ids that are already invalid are reported, not counted, and not an error;
an empty list is a no-op that says so.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.db import DatabaseError, connect
from skit_components.migrations import METRICS, SchemaError, require_schema
from skit_components.outputs import write_json, write_parameter

logger = logging.getLogger("invalidate_situations")

DB_ENV = "METRICS_DB_URL"
SCHEMA_VERSION = 1
"""The metrics schema version this component's queries need."""
_SHOWN_IDS = 20


@dataclass(frozen=True)
class Report:
    """What one invalidation did; written as the `report` artifact."""

    requested: list[int]
    """The distinct ids asked for, ascending."""
    invalidated: list[int]
    """Ids this run changed from valid to invalid."""
    already_invalid: list[int]
    """Ids that were invalid before this run."""


def invalidate(database_url: str, situation_ids: list[int]) -> Report:
    """Marks the situations invalid in one transaction.

    Raises:
        cli.BadInput: some ids do not exist (nothing is changed).
        cli.ComponentError: the database is unusable.
    """
    requested = sorted(set(situation_ids))
    if not requested:
        logger.info("no situation ids given: nothing to invalidate")
        return Report([], [], [])
    if requested[0] <= 0:
        raise cli.BadInput(f"situation ids must be positive, got {requested[0]}")
    try:
        with connect(database_url) as db:
            require_schema(db, METRICS, SCHEMA_VERSION)
            d = db.dialect
            with db.transaction():
                rows = db.fetchall(
                    "SELECT id, is_valid FROM situation_scenario_mapper "
                    f"WHERE {d.any_of('id')}{d.for_update}",
                    (d.list_param(requested),),
                )
                valid = sorted(row[0] for row in rows if row[1])
                already_invalid = sorted(row[0] for row in rows if not row[1])
                unknown = sorted(set(requested) - {row[0] for row in rows})
                if unknown:
                    raise cli.BadInput(
                        f"unknown situation ids {_show(unknown)}; nothing was invalidated"
                    )
                if valid:
                    db.execute(
                        "UPDATE situation_scenario_mapper SET is_valid = FALSE, "
                        f"invalidated_at = ? WHERE {d.any_of('id')} AND is_valid",
                        (d.timestamp_param(datetime.now(UTC)), d.list_param(valid)),
                    )
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"metrics database: {exc}") from exc
    logger.info(
        "invalidated %d situations; %d were already invalid", len(valid), len(already_invalid)
    )
    return Report(requested, valid, already_invalid)


def _show(ids: list[int]) -> str:
    if len(ids) <= _SHOWN_IDS:
        return str(ids)
    shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS])
    return f"[{shown}, ...] ({len(ids)} in all)"


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="invalidate_situations", description=__doc__)
    parser.add_argument("--situation-ids", type=cli.json_list(int), required=True)
    parser.add_argument("--invalidated-count", type=Path, required=True, help="output")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        database_url = cli.required_env(DB_ENV, "the metrics database URL")
        report = invalidate(database_url, args.situation_ids)
        write_json(args.report, asdict(report))
        write_parameter(args.invalidated_count, len(report.invalidated))

    return cli.run("invalidate_situations", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
