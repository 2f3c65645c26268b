"""The entrypoint: arguments, the outputs, `main(argv) -> int`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.outputs import write_parameter

from .dataset import normalize_entities


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(
        prog="normalize_entities",
        description="Resolve the tagged date and time entities of an entity dataset to ISO values.",
    )
    parser.add_argument("--dataset", type=Path, required=True, help="input: the entity CSV")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--normalized", type=Path, required=True, help="output: the CSV")
    parser.add_argument("--entity-count", type=Path, required=True, help="output")
    parser.add_argument("--unresolved-count", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        counts = normalize_entities(args.dataset, args.normalized, args.timezone.strip() or "UTC")
        write_parameter(args.entity_count, counts.entities)
        write_parameter(args.unresolved_count, counts.unresolved)

    return cli.run("normalize_entities", body)
