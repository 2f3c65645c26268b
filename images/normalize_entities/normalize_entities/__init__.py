"""normalize_entities: resolve tagged date and time entities to ISO values.

Reads a tagged entity dataset (the CSV of fetch_tagged_dataset with task_type "entity"),
resolves each tagged date/time span relative to its call's reference time, in the call's
timezone, and writes the dataset back with every entity's value and status. Entities that
cannot be resolved, or only too coarsely, stay in the output marked as such.

The image's entrypoint (`python3 -m normalize_entities`), one module per job:

- `lexicon`: the words of spoken dates and times in English, Hindi, Tamil and Telugu.
- `spoken`: the grammar that reads them, and what they mean relative to a reference time.
- `resolver`: one entity: the grammar first, then dateparser for anything else.
- `dataset`: the CSV in and out, row by row, and the counts.
- `cli`: arguments, the outputs, `main(argv) -> int`.
"""

from __future__ import annotations

from .cli import main
from .dataset import (
    LANGUAGE_COLUMN,
    OUTPUT_COLUMNS,
    PREDICTED_COLUMN,
    REFTIME_COLUMNS,
    TAG_COLUMN,
    TIMEZONE_COLUMN,
    Counts,
    Entity,
    normalize_entities,
    normalize_row,
    read_rows,
)
from .resolver import DATE_TYPES, IMPRECISE, RESOLVED, SKIPPED, UNPARSEABLE, Resolver
from .spoken import Day, Spoken, Time, day_of, moment_of, parse

__all__ = [
    "DATE_TYPES",
    "IMPRECISE",
    "LANGUAGE_COLUMN",
    "OUTPUT_COLUMNS",
    "PREDICTED_COLUMN",
    "REFTIME_COLUMNS",
    "RESOLVED",
    "SKIPPED",
    "TAG_COLUMN",
    "TIMEZONE_COLUMN",
    "UNPARSEABLE",
    "Counts",
    "Day",
    "Entity",
    "Resolver",
    "Spoken",
    "Time",
    "day_of",
    "main",
    "moment_of",
    "normalize_entities",
    "normalize_row",
    "parse",
    "read_rows",
]
