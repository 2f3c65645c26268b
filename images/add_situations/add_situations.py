"""add_situations: validate LLM situations and add the new ones to the metrics database.

A situation is a sentence describing what the caller is in (a "situation") under a scenario
(what the call is about) and a scenario category (the use case). Each given situation is
found, or inserted, as one row of `situation_scenario_mapper`; the ids of those and of the
situation ids given are the step's output, for generate_conversations. All in one
transaction: when any situation is invalid (empty, too long, invalidated earlier, an
unknown id) nothing is added.

The successor of the original's validate_and_add_situations_to_db, with typed lists instead
of `::`-separated strings.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from skit_components import cli
from skit_components.db import DatabaseError, connect
from skit_components.migrations import METRICS, SchemaError, require_schema
from skit_components.outputs import write_json, write_parameter

logger = logging.getLogger("add_situations")

DB_ENV = "METRICS_DB_URL"
SCHEMA_VERSION = 1
"""The metrics schema version this component's queries need."""
MAX_SITUATION_CHARS = 500
MAX_SCENARIO_CHARS = 100
CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""Scenario categories are use-case names such as debt_collection."""
_SHOWN = 20


@dataclass(frozen=True)
class Request:
    situations: tuple[str, ...] = ()
    scenario: str = ""
    scenario_category: str = ""
    situation_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Added:
    situation_ids: list[int]
    """The given ids, then the given situations' ids, each once, in that order."""
    added: list[int]
    """Ids of the situations this run inserted."""
    found: list[int]
    """Ids of given situations that were already there."""


def normalise(text: str) -> str:
    return " ".join(text.split())


def validate(request: Request) -> Request:
    """The request with its texts normalised and duplicates dropped.

    Raises:
        cli.BadInput: an empty or too long situation, no scenario or category for given
            situations, a malformed category, a non-positive id.
    """
    situations: list[str] = []
    for number, raw in enumerate(request.situations, start=1):
        text = normalise(raw)
        if not text:
            raise cli.BadInput(f"situation {number} is empty")
        if len(text) > MAX_SITUATION_CHARS:
            raise cli.BadInput(
                f"situation {number} has {len(text)} characters; at most {MAX_SITUATION_CHARS}"
            )
        if text not in situations:
            situations.append(text)
    scenario = normalise(request.scenario)
    category = request.scenario_category.strip()
    if situations:
        if not scenario or not category:
            raise cli.BadInput("situations need a scenario and a scenario_category")
        if len(scenario) > MAX_SCENARIO_CHARS:
            raise cli.BadInput(f"scenario has more than {MAX_SCENARIO_CHARS} characters")
        if not CATEGORY.fullmatch(category):
            raise cli.BadInput(
                f"scenario_category must be a snake_case name such as debt_collection, "
                f"got {category!r}"
            )
    ids = list(dict.fromkeys(request.situation_ids))
    if any(i <= 0 for i in ids):
        raise cli.BadInput(f"situation ids must be positive, got {min(ids)}")
    return Request(tuple(situations), scenario, category, tuple(ids))


def add(database_url: str, request: Request) -> Added:
    """Checks the given ids and finds or inserts the given situations, in one transaction.

    Raises:
        cli.BadInput: see `validate`; unknown or invalidated ids; a given situation that
            exists but was invalidated (nothing is added).
        cli.ComponentError: the database is unusable.
    """
    r = validate(request)
    if not r.situations and not r.situation_ids:
        logger.info("no situations given: conversations are generated for the valid ones")
        return Added([], [], [])
    added: list[int] = []
    found: list[int] = []
    ordered: list[int] = []  # the given situations' ids, in the order given
    try:
        with connect(database_url) as db:
            require_schema(db, METRICS, SCHEMA_VERSION)
            d = db.dialect
            with db.transaction():
                if r.situation_ids:
                    rows = db.fetchall(
                        "SELECT id, is_valid FROM situation_scenario_mapper "
                        f"WHERE {d.any_of('id')}",
                        (d.list_param(r.situation_ids),),
                    )
                    unknown = sorted(set(r.situation_ids) - {row[0] for row in rows})
                    if unknown:
                        raise cli.BadInput(f"unknown situation ids {_show(unknown)}")
                    invalid = sorted(row[0] for row in rows if not row[1])
                    if invalid:
                        raise cli.BadInput(f"situations {_show(invalid)} are invalidated")
                key = "situation = ? AND scenario = ? AND scenario_category = ?"
                invalidated: list[str] = []
                for text in r.situations:
                    params = (text, r.scenario, r.scenario_category)
                    row = db.fetchone(
                        f"SELECT id, is_valid FROM situation_scenario_mapper WHERE {key}", params
                    )
                    if row is None:
                        # ON CONFLICT: a concurrent run may insert the same situation first.
                        db.execute(
                            "INSERT INTO situation_scenario_mapper "
                            "(situation, scenario, scenario_category) VALUES (?, ?, ?) "
                            "ON CONFLICT (situation, scenario, scenario_category) DO NOTHING",
                            params,
                        )
                        inserted = db.fetchone(
                            f"SELECT id FROM situation_scenario_mapper WHERE {key}", params
                        )
                        if inserted is None:
                            raise cli.ComponentError(f"situation {text!r} was not inserted")
                        added.append(int(inserted[0]))
                        ordered.append(int(inserted[0]))
                    elif not row[1]:
                        invalidated.append(f"{text!r} (id {row[0]})")
                    else:
                        found.append(int(row[0]))
                        ordered.append(int(row[0]))
                if invalidated:
                    raise cli.BadInput(
                        f"situations {', '.join(invalidated[:_SHOWN])} were invalidated; "
                        "nothing was added"
                    )
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"metrics database: {exc}") from exc
    ids = list(dict.fromkeys([*r.situation_ids, *ordered]))
    logger.info(
        "situations: %d added, %d already there, %d ids given",
        len(added),
        len(found),
        len(r.situation_ids),
    )
    return Added(ids, added, found)


def _show(ids: list[int]) -> str:
    if len(ids) <= _SHOWN:
        return str(ids)
    return f"[{', '.join(str(i) for i in ids[:_SHOWN])}, ...] ({len(ids)} in all)"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="add_situations", description=__doc__)
    parser.add_argument("--situations", type=cli.json_list(str), default=[])
    parser.add_argument("--scenario", default="")
    parser.add_argument("--scenario-category", default="")
    parser.add_argument("--situation-ids", type=cli.json_list(int), default=[])
    parser.add_argument("--selected-situation-ids", type=Path, required=True, help="output")
    parser.add_argument("--added-count", type=Path, required=True, help="output")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, adds the situations, writes the outputs."""

    def body() -> None:
        args = _parse_args(argv)
        request = Request(
            situations=tuple(str(s) for s in args.situations),
            scenario=args.scenario,
            scenario_category=args.scenario_category,
            situation_ids=tuple(int(i) for i in args.situation_ids),
        )
        database_url = cli.required_env(DB_ENV, "the metrics database URL")
        result = add(database_url, request)
        write_parameter(args.selected_situation_ids, result.situation_ids)
        write_parameter(args.added_count, len(result.added))
        write_json(
            args.report,
            {"situation_ids": result.situation_ids, "added": result.added, "found": result.found},
        )

    return cli.run("add_situations", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
