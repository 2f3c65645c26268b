"""Reading the calls: a turns CSV (one row per turn, as fetch_calls writes it) into calls."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from skit_components import cli

REQUIRED_COLUMNS = ("call_uuid", "turn_index", "reftime", "bot_response", "primary_utterance")


@dataclass(frozen=True)
class Turn:
    index: int
    reftime: datetime | None
    bot: str
    caller: str
    audio_url: str = ""


@dataclass(frozen=True)
class Call:
    uuid: str
    turns: tuple[Turn, ...]
    call_url: str = ""
    flow_uuid: str = ""
    client_uuid: str = ""
    language: str = ""
    template_id: int | None = None
    client_id: int | None = None
    flow_id: int | None = None
    call_type: str = ""
    timezone: str = ""
    """The call's own timezone, when the calls data has one."""
    started: datetime | None = None
    """When the call was placed, when the calls data has it."""

    @property
    def started_at(self) -> datetime | None:
        """When the call started: as the calls data says, else its first turn's time
        (which is a second or two later: the bot's first words)."""
        if self.started is not None:
            return self.started
        return self.turns[0].reftime if self.turns else None


def read_calls(path: Path) -> list[Call]:
    """Groups a turns CSV (one row per turn, a call's turns together, as fetch_calls
    writes it) into calls.

    Raises:
        cli.BadInput: a required column is missing, a value is malformed, or no turns.
    """
    calls: list[Call] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise cli.BadInput(f"the calls CSV has no {', '.join(missing)} column")
        current: list[dict[str, str]] = []
        for line, row in enumerate(reader, start=2):
            if not row["call_uuid"]:
                raise cli.BadInput(f"the calls CSV has no call_uuid on line {line}")
            if current and row["call_uuid"] != current[0]["call_uuid"]:
                calls.append(_call(current))
                current = []
            current.append(row)
        if current:
            calls.append(_call(current))
    uuids = [c.uuid for c in calls]
    if len(set(uuids)) != len(uuids):
        raise cli.BadInput("the calls CSV does not keep each call's turns together")
    if not calls:
        raise cli.BadInput("the calls CSV has no turns")
    return calls


def _call(rows: list[dict[str, str]]) -> Call:
    first = rows[0]
    turns = []
    for row in sorted(rows, key=lambda r: _int(r, "turn_index") or 0):
        turns.append(
            Turn(
                index=_int(row, "turn_index") or 0,
                reftime=_time(row, "reftime"),
                bot=row.get("bot_response") or "",
                caller=row.get("primary_utterance") or "",
                audio_url=row.get("audio_url") or "",
            )
        )
    return Call(
        uuid=first["call_uuid"],
        turns=tuple(turns),
        call_url=first.get("call_url") or "",
        flow_uuid=first.get("flow_uuid") or "",
        client_uuid=first.get("client_uuid") or "",
        language=first.get("language") or "",
        template_id=_int(first, "template_id"),
        client_id=_int(first, "client_id"),
        flow_id=_int(first, "flow_id"),
        call_type=(first.get("call_type") or "").upper(),
        timezone=first.get("timezone") or "",
        started=_time(first, "call_started_at"),
    )


def _time(row: Mapping[str, str], key: str) -> datetime | None:
    value = (row.get(key) or "").strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise cli.BadInput(f"column {key}: expected an ISO 8601 time, got {value!r}") from None


def _int(row: Mapping[str, str], key: str) -> int | None:
    value = (row.get(key) or "").strip()
    if not value:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise cli.BadInput(f"column {key}: expected an integer, got {value!r}") from None
