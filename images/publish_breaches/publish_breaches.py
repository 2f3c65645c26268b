"""publish_breaches: store compliance judgements in the metrics database and report where
the breaches are.

Every judged call becomes one `compliance_breaches` row (is_breach true or false), keyed by
(call, policy version, judge): publishing the same judgements again updates those rows
instead of adding new ones. All rows are written in one transaction, so a failure leaves
the table as it was. Calls whose judgement failed are not written; they are listed in the
report and the CSV, and counted.
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.db import Database, DatabaseError, connect, redact_url
from skit_components.migrations import METRICS, SchemaError, require_schema
from skit_components.outputs import output_path, write_json, write_parameter

logger = logging.getLogger("publish_breaches")

DB_ENV = "METRICS_DB_URL"
SCHEMA_VERSION = 2
"""Metrics schema 2 added the (call, policy version, judge) key."""
TABLE = "compliance_breaches"

CSV_COLUMNS = (
    "status",
    "call_uuid",
    "rule",
    "severity",
    "turn_index",
    "evidence",
    "reftime",
    "call_url",
    "audio_url",
    "language",
    "template_id",
    "policy_version",
    "judge",
    "error",
)
"""The `breaches` CSV: one row per breach found ("breach") and per call that could not be
judged ("failed")."""

_REQUIRED = ("call_uuid", "status", "is_breach", "findings", "judge", "policy_version")
_STATUSES = ("judged", "failed")
_SHOWN_FAILURES = 5


@dataclass(frozen=True)
class Written:
    inserted: int
    updated: int


def read_judgements(path: Path) -> list[dict[str, Any]]:
    """The judge's JSON lines, checked.

    Raises:
        cli.BadInput: a line is not a judgement, or there are none.
    """
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise cli.BadInput(f"judgements line {number} is not JSON: {exc}") from None
            missing = [k for k in _REQUIRED if not isinstance(record, dict) or k not in record]
            if missing:
                raise cli.BadInput(f"judgements line {number} has no {', '.join(missing)}")
            if record["status"] not in _STATUSES:
                raise cli.BadInput(f"judgements line {number}: unknown status {record['status']!r}")
            if record["status"] == "judged" and not record["policy_version"]:
                raise cli.BadInput(f"judgements line {number} has an empty policy_version")
            if not isinstance(record["findings"], list):
                raise cli.BadInput(f"judgements line {number}: findings is not a list")
            records.append(record)
    if not records:
        raise cli.BadInput("the judgements file is empty: no call was judged")
    keys = [(r["call_uuid"], r["policy_version"], r["judge"]) for r in records]
    if len(set(keys)) != len(keys):
        raise cli.BadInput("the judgements list a call twice for the same policy and judge")
    return records


def _reftime(record: dict[str, Any]) -> datetime | None:
    value = record.get("reftime")
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise cli.BadInput(f"call {record['call_uuid']}: bad reftime {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def store(database_url: str, records: list[dict[str, Any]]) -> Written:
    """Upserts the judged calls in one transaction.

    Raises:
        cli.ComponentError: the database is unusable or not migrated (nothing is written).
    """
    judged = [r for r in records if r["status"] == "judged"]
    rows_by_key = {(r["call_uuid"], r["policy_version"], r["judge"]): r for r in judged}
    try:
        with connect(database_url) as db:
            require_schema(db, METRICS, SCHEMA_VERSION)
            now = db.dialect.timestamp_param(datetime.now(UTC))
            rows = [_row(db, r, now) for r in judged]
            with db.transaction():
                existing = _existing_keys(db, judged)
                db.executemany(_upsert_sql(db), rows)
    except (DatabaseError, SchemaError) as exc:
        raise cli.ComponentError(f"metrics database: {exc}") from exc
    except _driver_errors() as exc:
        raise cli.ComponentError(f"metrics database: nothing was written: {exc}") from exc
    updated = len(existing & rows_by_key.keys())
    return Written(inserted=len(rows_by_key) - updated, updated=updated)


def _driver_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the image installs it
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


def _existing_keys(db: Database, judged: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    if not judged:
        return set()
    d = db.dialect
    rows = db.fetchall(
        f"SELECT call_uuid, policy_version, judge FROM {TABLE} "
        f"WHERE policy_version <> '' AND {d.any_of('call_uuid')}",
        (d.list_param(sorted({r["call_uuid"] for r in judged})),),
    )
    return {(row[0], row[1], row[2]) for row in rows}


def _upsert_sql(db: Database) -> str:
    json_value = "CAST(? AS jsonb)" if db.dialect.name == "postgresql" else "?"
    columns = (
        "call_uuid, audio_url, call_url, flow_uuid, client_uuid, reftime, is_breach, "
        "compliance_output, tokens_consumed, call_information, policy_version, judge, updated_at"
    )
    updates = ", ".join(
        f"{c} = excluded.{c}"
        for c in (
            "audio_url",
            "call_url",
            "flow_uuid",
            "client_uuid",
            "reftime",
            "is_breach",
            "compliance_output",
            "tokens_consumed",
            "call_information",
            "updated_at",
        )
    )
    # The WHERE names the partial unique index (see metrics migration 2).
    return (
        f"INSERT INTO {TABLE} ({columns}) "
        f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {json_value}, ?, ?, ?) "
        "ON CONFLICT (call_uuid, policy_version, judge) WHERE policy_version <> '' "
        f"DO UPDATE SET {updates}"
    )


def _row(db: Database, record: dict[str, Any], now: Any) -> tuple[Any, ...]:
    reftime = _reftime(record)
    findings = record["findings"]
    first_audio = next((f.get("audio_url") for f in findings if f.get("audio_url")), "")
    information = {
        key: record.get(key)
        for key in ("language", "template_id", "flow_id", "call_type", "turns", "tokens")
    }
    return (
        record["call_uuid"],
        first_audio or record.get("audio_url") or "",
        record.get("call_url") or "",
        record.get("flow_uuid") or "",
        record.get("client_uuid") or "",
        db.dialect.timestamp_param(reftime) if reftime else None,
        bool(findings),
        json.dumps({"findings": findings}, ensure_ascii=False, sort_keys=True),
        int(record.get("tokens") or 0),
        json.dumps(information, ensure_ascii=False, sort_keys=True),
        record["policy_version"],
        record["judge"],
        now,
    )


def write_breaches_csv(path: Path, records: list[dict[str, Any]]) -> None:
    with output_path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in records:
            common = {
                "call_uuid": r["call_uuid"],
                "reftime": r.get("reftime") or "",
                "call_url": r.get("call_url") or "",
                "language": r.get("language") or "",
                "template_id": "" if r.get("template_id") is None else r["template_id"],
                "policy_version": r["policy_version"],
                "judge": r["judge"],
            }
            if r["status"] == "failed":
                row = {**common, "status": "failed", "error": r.get("error") or ""}
                row["audio_url"] = r.get("audio_url") or ""
                writer.writerow([row.get(c, "") for c in CSV_COLUMNS])
                continue
            for finding in r["findings"]:
                turn = finding.get("turn_index")
                row = {
                    **common,
                    "status": "breach",
                    "rule": finding.get("rule", ""),
                    "severity": finding.get("severity", ""),
                    "turn_index": "" if turn is None else turn,
                    "evidence": finding.get("evidence", ""),
                    "audio_url": finding.get("audio_url") or r.get("audio_url") or "",
                }
                writer.writerow([row.get(c, "") for c in CSV_COLUMNS])


def report(records: list[dict[str, Any]], written: Written, database_url: str) -> dict[str, Any]:
    """The `report` artifact: counts, and every breach and failure with its call."""
    judged = [r for r in records if r["status"] == "judged"]
    failed = [r for r in records if r["status"] == "failed"]
    breached = [r for r in judged if r["findings"]]
    by_rule = Counter(f["rule"] for r in breached for f in r["findings"])
    return {
        "policy_versions": sorted({r["policy_version"] for r in records}),
        "judges": sorted({r["judge"] for r in records}),
        "database": redact_url(database_url),
        "table": TABLE,
        "calls": len(records),
        "judged_calls": len(judged),
        "failed_calls": len(failed),
        "breached_calls": len(breached),
        "breaches": sum(by_rule.values()),
        "breaches_by_rule": dict(sorted(by_rule.items())),
        "rows_inserted": written.inserted,
        "rows_updated": written.updated,
        "tokens": sum(int(r.get("tokens") or 0) for r in records),
        "breached": [
            {
                "call_uuid": r["call_uuid"],
                "call_url": r.get("call_url") or "",
                "reftime": r.get("reftime"),
                "findings": r["findings"],
            }
            for r in breached
        ],
        "failed": [
            {"call_uuid": r["call_uuid"], "call_url": r.get("call_url") or "", "error": r["error"]}
            for r in failed
        ],
    }


def publish(
    database_url: str, judgements: Path, *, report_path: Path, breaches_csv: Path
) -> dict[str, Any]:
    records = read_judgements(judgements)
    written = store(database_url, records)
    summary = report(records, written, database_url)
    write_json(report_path, summary)
    write_breaches_csv(breaches_csv, records)
    logger.info(
        "%d calls in breach (%d breaches) of %d judged; %d failed; %d rows inserted, %d updated",
        summary["breached_calls"],
        summary["breaches"],
        summary["judged_calls"],
        summary["failed_calls"],
        written.inserted,
        written.updated,
    )
    if summary["failed"]:
        shown = ", ".join(f["call_uuid"] for f in summary["failed"][:_SHOWN_FAILURES])
        logger.warning("calls that could not be judged: %s", shown)
    return summary


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="publish_breaches", description=__doc__)
    parser.add_argument("--judgements", type=Path, required=True, help="input: JSON lines")
    parser.add_argument("--breach-count", type=Path, required=True, help="output")
    parser.add_argument("--failed-count", type=Path, required=True, help="output")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON report")
    parser.add_argument("--breaches", type=Path, required=True, help="output: CSV")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        database_url = cli.required_env(DB_ENV, "the metrics database URL")
        summary = publish(
            database_url, args.judgements, report_path=args.report, breaches_csv=args.breaches
        )
        write_parameter(args.breach_count, summary["breached_calls"])
        write_parameter(args.failed_count, summary["failed_calls"])

    return cli.run("publish_breaches", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
