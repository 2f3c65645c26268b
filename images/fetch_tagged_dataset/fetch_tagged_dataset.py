"""fetch_tagged_dataset: download annotated tasks from the annotation store as a CSV.

The store is a real Label Studio when LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN are set (its
export API), else the embedded store at ANNOTATIONS_DB_URL; both give the same columns
(skit_components.annotations). Selects the Label Studio projects and Tog jobs given (every
project and job of `task_type` when neither is given; Tog jobs exist only in the embedded
store), and writes the annotations of their tasks tagged within the date range: by default
one row per task with its latest annotation, or every annotation. Each row carries the
task's data as JSON and flattened into `raw.*` columns.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from skit_components import cli
from skit_components.annotations import (
    LABEL_STUDIO,
    TASK_TYPES,
    TOG,
    Annotation,
    AnnotationStore,
    AnnotationStoreError,
    RequestRefused,
    open_store,
)
from skit_components.db import utc_day_bounds
from skit_components.outputs import output_path, write_parameter

logger = logging.getLogger("fetch_tagged_dataset")

STORE_ENV = ("LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN", "ANNOTATIONS_DB_URL")
"""The variables that choose and reach the annotation store (component.yaml declares them)."""

COLUMNS = (
    "data_id",
    "project_id",
    "source",
    "task_type",
    "annotation_id",
    "annotator",
    "data",
    "tag",
    "is_gold",
    "tagged_time",
    "reftime",
)
"""The fixed columns; the task data's top-level keys follow, sorted, as `raw.<key>`."""
RAW_PREFIX = "raw."
_SHOWN_IDS = 20


@dataclass(frozen=True)
class Selection:
    """Which annotations to download."""

    project_ids: tuple[int, ...] = ()
    """Label Studio project ids."""
    job_ids: tuple[int, ...] = ()
    """Tog job ids. With neither ids given, every project and job of `task_type`."""
    task_type: str = "intent"
    """One of skit_components.annotations.TASK_TYPES; every selected project must be of it."""
    start_date: date | None = None
    """First tagging date included, in `timezone`."""
    end_date: date | None = None
    """Last tagging date included, in `timezone`."""
    timezone: str = "UTC"
    all_annotations: bool = False
    """Every annotation of a task (for agreement checks) instead of its latest one."""
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise cli.BadInput(f"unknown timezone {self.timezone!r}") from None
        object.__setattr__(self, "zone", zone)
        if self.task_type not in TASK_TYPES:
            raise cli.BadInput(
                f"unknown task_type {self.task_type!r}: expected one of {', '.join(TASK_TYPES)}"
            )
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise cli.BadInput(f"end_date {self.end_date} is before start_date {self.start_date}")
        if any(i <= 0 for i in (*self.project_ids, *self.job_ids)):
            raise cli.BadInput("project_ids and job_ids must be positive ids")

    def utc_bounds(self) -> tuple[datetime | None, datetime | None]:
        """[start, end) in UTC: local midnight of start_date to the midnight after end_date."""
        return utc_day_bounds(self.start_date, self.end_date, self.zone)

    def describe(self) -> str:
        """The selection, for messages."""
        parts = []
        if self.project_ids:
            parts.append(f"projects {_show(self.project_ids)}")
        if self.job_ids:
            parts.append(f"jobs {_show(self.job_ids)}")
        if not parts:
            parts.append(f"all {self.task_type} projects and jobs")
        if self.start_date or self.end_date:
            since = self.start_date.isoformat() if self.start_date else "the start"
            until = self.end_date.isoformat() if self.end_date else "now"
            parts.append(f"tagged from {since} to {until} ({self.timezone})")
        return ", ".join(parts)


def select_projects(store: AnnotationStore, selection: Selection) -> list[int]:
    """The ids of the selected projects and jobs.

    Raises:
        cli.BadInput: an id is unknown or of another source or task type, or no project
            of the task type exists.
    """
    projects = {p.id: (p.source, p.task_type) for p in store.projects()}
    if not selection.project_ids and not selection.job_ids:
        chosen = [pid for pid, (_, kind) in projects.items() if kind == selection.task_type]
        if not chosen:
            raise cli.BadInput(
                f"the annotation store has no {selection.task_type} projects or jobs"
            )
        return sorted(chosen)
    problems = []
    for ids, source, noun, other in (
        (selection.project_ids, LABEL_STUDIO, "Label Studio project", "job_ids"),
        (selection.job_ids, TOG, "Tog job", "project_ids"),
    ):
        unknown = sorted({i for i in ids if i not in projects})
        if unknown:
            problems.append(f"unknown {noun} ids {_show(unknown)}")
        misplaced = sorted({i for i in ids if i in projects and projects[i][0] != source})
        if misplaced:
            problems.append(f"{_show(misplaced)} are not {noun}s (pass them in {other})")
    if problems:
        raise cli.BadInput("; ".join(problems))
    chosen = sorted({*selection.project_ids, *selection.job_ids})
    other_type = [i for i in chosen if projects[i][1] != selection.task_type]
    if other_type:
        kinds = ", ".join(f"{i} is {projects[i][1] or 'of no known type'}" for i in other_type)
        raise cli.BadInput(f"task_type is {selection.task_type} but {kinds}")
    return chosen


def as_row(annotation: Annotation, zone: ZoneInfo) -> dict[str, Any]:
    """An annotation as a row of COLUMNS plus the task data under "raw"."""
    data = dict(annotation.data)
    return {
        "data_id": annotation.task_id,
        "project_id": annotation.project_id,
        "source": annotation.source,
        "task_type": annotation.task_type,
        "annotation_id": annotation.annotation_id,
        "annotator": annotation.annotator,
        "data": json.dumps(data, ensure_ascii=False),
        "tag": json.dumps(annotation.tag, ensure_ascii=False),
        "is_gold": _cell(annotation.is_gold),
        "tagged_time": _local(annotation.tagged_time, zone),
        "reftime": _local(annotation.reftime, zone) if annotation.reftime else "",
        "raw": data,
    }


def fetch_tagged_dataset(env: Mapping[str, str], selection: Selection, out_csv: Path) -> int:
    """Writes the selected annotations of the store `env` names to `out_csv`; returns the
    number of rows.

    Raises:
        cli.BadInput: bad selection or store settings (a rejected token, an unknown project),
            or no annotation matches.
        cli.ComponentError: the store is unusable (unreachable, a broken database).
    """
    try:
        store = open_store(env)
        try:
            project_ids = select_projects(store, selection)
            start, end = selection.utc_bounds()
            annotations = store.annotations(
                project_ids,
                tagged_from=start,
                tagged_until=end,
                latest_only=not selection.all_annotations,
            )
            count = _write_csv(annotations, selection, out_csv)
        finally:
            store.close()
    except RequestRefused as exc:
        raise cli.BadInput(f"annotation store: {exc}") from exc
    except AnnotationStoreError as exc:
        raise cli.ComponentError(f"annotation store: {exc}") from exc
    logger.info("wrote %d annotations of %d projects/jobs to %s", count, len(project_ids), out_csv)
    return count


def _write_csv(annotations: Iterator[Annotation], selection: Selection, out_csv: Path) -> int:
    # The raw.* header needs every task's keys, so rows wait in a spill file (flat memory)
    # until the header is known.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spill:
        keys: set[str] = set()
        count = 0
        for annotation in annotations:
            row = as_row(annotation, selection.zone)
            keys.update(row["raw"])
            spill.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        if not count:
            raise cli.BadInput(f"no annotations match: {selection.describe()}")
        raw_keys = sorted(keys)
        spill.seek(0)
        with output_path(out_csv).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*COLUMNS, *(RAW_PREFIX + k for k in raw_keys)])
            for line in spill:
                row = json.loads(line)
                raw = row["raw"]
                writer.writerow(
                    [_cell(row[c]) for c in COLUMNS] + [_cell(raw.get(k)) for k in raw_keys]
                )
    return count


def _cell(value: Any) -> Any:
    """A CSV cell: JSON for containers and booleans (true/false), "" for missing values."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


def _show(ids: tuple[int, ...] | list[int]) -> str:
    ids = list(ids)
    if len(ids) <= _SHOWN_IDS:
        return str(ids)
    return f"[{', '.join(map(str, ids[:_SHOWN_IDS]))}, ...] ({len(ids)} in all)"


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="fetch_tagged_dataset", description=__doc__)
    parser.add_argument("--project-ids", type=cli.json_list(int), default=[])
    parser.add_argument("--job-ids", type=cli.json_list(int), default=[])
    parser.add_argument("--task-type", default="intent")
    parser.add_argument("--start-date", type=cli.iso_date_or_empty, default=None)
    parser.add_argument("--end-date", type=cli.iso_date_or_empty, default=None)
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--all-annotations", type=cli.boolean, default=False)
    parser.add_argument("--dataset", type=Path, required=True, help="output: the CSV")
    parser.add_argument("--row-count", type=Path, required=True, help="output: rows in it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        selection = Selection(
            project_ids=tuple(args.project_ids),
            job_ids=tuple(args.job_ids),
            task_type=args.task_type.strip(),
            start_date=args.start_date,
            end_date=args.end_date,
            timezone=args.timezone.strip() or "UTC",
            all_annotations=args.all_annotations,
        )
        env = {name: os.environ[name] for name in STORE_ENV if name in os.environ}
        count = fetch_tagged_dataset(env, selection, args.dataset)
        write_parameter(args.row_count, count)

    return cli.run("fetch_tagged_dataset", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
