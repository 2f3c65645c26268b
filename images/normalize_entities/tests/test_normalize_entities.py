from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skit_components.loader import import_component

FOLDER = Path(__file__).resolve().parents[1]
normalize_entities = import_component(FOLDER)

HEADER = ("data_id", "tag", "raw.language", "raw.reftime", "raw.timezone", "raw.entities")


def entity(kind: str, text: str, start: int = 0) -> dict:
    return {"type": kind, "text": text, "start": start, "end": start + len(text)}


def row(
    *entities: dict,
    language: str = "en",
    reftime: str = "2026-10-14T11:30:00.000+05:30",
    timezone: str = "Asia/Kolkata",
    predicted: list | None = None,
    tag: object = None,
) -> dict:
    return {
        "tag": json.dumps(tag if tag is not None else {"entities": list(entities)}),
        "raw.language": language,
        "raw.reftime": reftime,
        "raw.timezone": timezone,
        "raw.entities": json.dumps(predicted or []),
    }


@pytest.fixture
def run(tmp_path: Path):
    """Writes rows as the input CSV and runs main(); returns (exit code, rows, counts)."""

    def _run(
        rows: list[dict], *args: str, header: tuple[str, ...] = HEADER
    ) -> tuple[int, list[dict], tuple[int, int] | None]:
        source = tmp_path / "in.csv"
        with source.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            for number, values in enumerate(rows, start=1):
                writer.writerow({"data_id": number, **values})
        out = tmp_path / "out" / "normalized.csv"
        entity_count, unresolved = tmp_path / "out" / "n", tmp_path / "out" / "u"
        code = normalize_entities.main(
            [
                "--dataset",
                str(source),
                *args,
                "--normalized",
                str(out),
                "--entity-count",
                str(entity_count),
                "--unresolved-count",
                str(unresolved),
            ]
        )
        if code != 0:
            assert not out.exists()
            return code, [], None
        written = list(csv.DictReader(out.open(encoding="utf-8")))
        return code, written, (int(entity_count.read_text()), int(unresolved.read_text()))

    return _run


def values(written: list[dict]) -> list[list[tuple[str, str]]]:
    return [
        [(e["value"], e["status"]) for e in json.loads(r["normalized_entities"])] for r in written
    ]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_dates_resolve_relative_to_the_reference_day_in_the_calls_zone(run):
    code, written, counts = run(
        [
            row(entity("date", "tomorrow", 10), reftime="2026-10-31T23:30:00.000+05:30"),
            row(entity("date", "day after tomorrow"), reftime="2026-10-14T11:30:00+05:30"),
            row(entity("date", "friday"), reftime="2026-10-31T10:00:00+05:30"),
            row(entity("date", "कल"), language="hi"),
            # 18:30 UTC is already the next day in Kolkata, not in New York.
            row(entity("date", "today"), reftime="2026-10-14T18:30:00+00:00"),
            row(
                entity("date", "today"),
                reftime="2026-10-14T18:30:00+00:00",
                timezone="America/New_York",
            ),
        ]
    )
    assert code == 0
    assert values(written) == [
        [("2026-11-01", "resolved")],
        [("2026-10-16", "resolved")],
        [("2026-11-06", "resolved")],
        [("2026-10-15", "resolved")],
        [("2026-10-15", "resolved")],
        [("2026-10-14", "resolved")],
    ]
    assert counts == (6, 0)
    assert {r["entity_status"] for r in written} == {"resolved"}


def test_times_of_day_are_the_next_occurrence_after_the_reference_time(run):
    code, written, _ = run(
        [
            # Before the fix for dateparser's future preference, these were a day late...
            row(entity("time", "five pm"), reftime="2026-10-02T12:31:19.185+05:30"),
            row(entity("time", "ten am"), reftime="2026-10-07T09:04:19.305+05:30"),
            # ...or a month early when the next day is in the next month.
            row(entity("time", "ten am"), reftime="2026-10-31T15:58:02.731+05:30"),
            row(entity("time", "5 pm"), reftime="2026-10-14T18:00:00+05:30"),
            row(entity("time", "tomorrow 5 pm"), reftime="2026-10-14T09:00:00+05:30"),
        ]
    )
    assert code == 0
    assert values(written) == [
        [("2026-10-02T17:00:00+05:30", "resolved")],
        [("2026-10-07T10:00:00+05:30", "resolved")],
        [("2026-11-01T10:00:00+05:30", "resolved")],
        [("2026-10-15T17:00:00+05:30", "resolved")],
        [("2026-10-15T17:00:00+05:30", "resolved")],
    ]


def test_unresolvable_entities_are_kept_and_marked(run):
    code, written, counts = run(
        [
            row(entity("date", "whenever"), entity("date", "tomorrow", 14)),
            row(entity("time", "o'clock")),
            row(entity("time", "tomorrow")),
            row(entity("date", "five pm")),
            row(entity("date", "next month")),
        ]
    )
    assert code == 0
    found = [json.loads(r["normalized_entities"]) for r in written]
    assert [(e["text"], e["status"]) for e in found[0]] == [
        ("whenever", "unparseable"),
        ("tomorrow", "resolved"),
    ]
    assert found[0][0]["value"] == "" and "found no date in 'whenever'" in found[0][0]["reason"]
    assert (found[1][0]["status"], found[1][0]["value"]) == ("unparseable", "")
    # A date or time is found, but not what the entity type needs.
    assert found[2][0]["status"] == "imprecise" and "no time of day" in found[2][0]["reason"]
    assert found[3][0]["status"] == "imprecise" and "not a date" in found[3][0]["reason"]
    assert found[4][0]["status"] == "imprecise" and found[4][0]["value"] == ""
    assert [r["entity_status"] for r in written] == ["unresolved"] * 5
    assert counts == (6, 5)


def test_clock_times_parts_of_the_day_and_ordinal_days_resolve_in_every_demo_language(run):
    code, written, counts = run(
        [
            row(entity("time", "in the evening"), entity("date", "the fifth", 20)),
            row(entity("time", "शाम पांच बजे"), entity("date", "पांच तारीख", 20), language="hi"),
            row(entity("time", "ஐந்தரை மணிக்கு"), entity("date", "நாளை மறுநாள்", 20), language="ta"),
            row(entity("time", "ఆరు గంటల తర్వాత"), entity("date", "ఐదో తారీఖు", 20), language="te"),
        ]
    )
    assert code == 0
    assert values(written) == [
        [("2026-10-14T18:00:00+05:30", "resolved"), ("2026-11-05", "resolved")],
        [("2026-10-14T17:00:00+05:30", "resolved"), ("2026-11-05", "resolved")],
        [("2026-10-14T17:30:00+05:30", "resolved"), ("2026-10-16", "resolved")],
        [("2026-10-14T18:00:00+05:30", "resolved"), ("2026-11-05", "resolved")],
    ]
    assert counts == (8, 0)


def test_other_entity_types_rows_without_entities_and_foreign_tags_pass_through(run):
    code, written, counts = run(
        [
            row(entity("number", "4821"), entity("date", "tomorrow", 10)),
            row(),
            row(tag={"choices": ["_confirm_"]}),
        ]
    )
    assert code == 0
    first = json.loads(written[0]["normalized_entities"])
    assert (first[0]["status"], first[0]["value"]) == ("skipped", "")
    assert first[1]["status"] == "resolved"
    assert [r["entity_status"] for r in written] == ["resolved", "none", "bad_tag"]
    assert counts == (2, 0)
    # The input columns are kept as they were.
    assert [r["data_id"] for r in written] == ["1", "2", "3"]
    assert list(written[0])[: len(HEADER)] == list(HEADER)


def test_resolved_values_are_compared_with_the_bots_prediction(run):
    predicted_right = [{**entity("date", "tomorrow", 9), "value": "2026-10-15"}]
    predicted_wrong = [{**entity("date", "tomorrow", 9), "value": "2026-10-20"}]
    code, written, _ = run(
        [
            # The annotator's span overreaches ("by tomorrow"); it still overlaps.
            row(entity("date", "by tomorrow", 6), predicted=predicted_right),
            row(entity("date", "tomorrow", 9), predicted=predicted_wrong),
            row(entity("date", "tomorrow", 30), predicted=predicted_right),
        ]
    )
    assert code == 0
    found = [json.loads(r["normalized_entities"])[0] for r in written]
    assert [(e["predicted_value"], e["matches_prediction"]) for e in found] == [
        ("2026-10-15", True),
        ("2026-10-20", False),
        (None, None),
    ]


def test_a_rows_unusable_timezone_or_reference_time_marks_its_entities(run):
    code, written, counts = run(
        [
            row(entity("date", "tomorrow"), timezone="Mars/Olympus"),
            row(entity("date", "tomorrow"), reftime="2026-10-14 11:30"),
            row(entity("date", "tomorrow"), reftime=""),
            row(entity("date", "tomorrow"), timezone=""),
        ],
        "--timezone",
        "America/New_York",
    )
    assert code == 0
    found = [json.loads(r["normalized_entities"])[0] for r in written]
    assert "unknown timezone 'Mars/Olympus'" in found[0]["reason"]
    assert found[1]["reason"] == found[2]["reason"] == "the row has no reference time"
    # No zone in the task data: the step's timezone (11:30 IST is 02:00 in New York).
    assert (found[3]["value"], found[3]["status"]) == ("2026-10-15", "resolved")
    assert counts == (4, 3)


@pytest.mark.parametrize(
    ("rows", "args", "header", "message"),
    [
        ([row()], ["--timezone", "Mars/Olympus"], HEADER, "unknown timezone 'Mars/Olympus'"),
        ([row()], [], ("data_id", "tag"), "lacks column(s) raw.language, raw.reftime or reftime"),
        ([], [], HEADER, "the dataset has no rows"),
        ([row(tag={"text": "hello"})], [], HEADER, "is this an entity dataset?"),
        ([row()], [], (*HEADER, "entity_status"), "already has column(s) entity_status"),
    ],
)
def test_bad_input_fails_with_exit_2_and_one_line(run, capsys, rows, args, header, message):
    code, _, _ = run(rows, *args, header=header)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("normalize_entities: ") and message in line


def test_a_missing_dataset_is_bad_input(tmp_path, capsys):
    code = normalize_entities.main(
        [
            "--dataset",
            str(tmp_path / "absent.csv"),
            "--normalized",
            str(tmp_path / "o"),
            "--entity-count",
            str(tmp_path / "n"),
            "--unresolved-count",
            str(tmp_path / "u"),
        ]
    )
    assert code == 2
    assert "no dataset at" in one_line(capsys.readouterr().err)


def test_runs_as_a_module_in_its_image_folder(tmp_path):
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerow({"data_id": 1, **row(entity("date", "tomorrow"))})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "normalize_entities",
            "--dataset",
            str(source),
            "--timezone",
            "UTC",
            "--normalized",
            str(tmp_path / "out.csv"),
            "--entity-count",
            str(tmp_path / "n"),
            "--unresolved-count",
            str(tmp_path / "u"),
        ],
        cwd=FOLDER,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "n").read_text() == "1" and (tmp_path / "u").read_text() == "0"
