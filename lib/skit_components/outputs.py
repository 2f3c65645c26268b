"""Writing outputs at the local paths KFP (or the local executor) hands a step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def output_path(path: str | Path) -> Path:
    """The path of an output file, with its parent directories created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_parameter(
    path: str | Path, value: str | int | float | bool | list[Any] | dict[str, Any]
) -> None:
    """Writes an output parameter in the text form KFP's launcher parses for its type:
    strings as they are, everything else as JSON (so booleans are "true"/"false")."""
    text = value if isinstance(value, str) else json.dumps(value)
    output_path(path).write_text(text, encoding="utf-8")


def write_json(path: str | Path, value: object) -> None:
    """Writes a JSON artifact, pretty-printed for people reading it in the artifact store."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    output_path(path).write_text(text, encoding="utf-8")
