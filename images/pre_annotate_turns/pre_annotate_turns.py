"""pre_annotate_turns: pick the caller turns to annotate and attach the SLU model's intents.

Reads a turns CSV (fetch_calls), keeps the caller turns with an utterance, samples
`turn_quantity` of them with `seed` (all when fewer), and, when `pre_annotate` is true,
classifies each utterance with an SLU model from the model registry (a version, or the
production model) so push_annotation_tasks can attach the prediction to the task:
annotators then confirm or correct it instead of starting from nothing.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.model_registry import REGISTRY_ENV, ModelRegistry, RegistryError
from skit_components.outputs import output_path, write_json, write_parameter
from skit_components.slu import MODEL_KIND, DataError, load_model, predict

logger = logging.getLogger("pre_annotate_turns")

UTTERANCE = "primary_utterance"
TURN_UUID = "conversation_uuid"
PREDICTED_INTENT = "predicted_intent"
PREDICTION_MODEL = "prediction_model"
"""The columns this step adds (push_annotation_tasks reads them)."""
_REQUIRED = ("call_uuid", TURN_UUID, UTTERANCE)


@dataclass(frozen=True)
class Options:
    turn_quantity: int = 100
    """At most this many turns; 0 for every caller turn."""
    seed: int = 0
    pre_annotate: bool = True
    model_version: str = ""
    """The registry version to predict with; empty for the production model."""


@dataclass(frozen=True)
class Selected:
    rows: list[dict[str, str]]
    columns: list[str]
    caller_turns: int
    """Caller turns with an utterance in the input (the sample is drawn from them)."""
    model_version: str
    """"" when not pre-annotated."""
    intents: dict[str, int]
    """Predicted intent -> turns."""


def select_turns(path: Path, options: Options, registry_url: str = "") -> Selected:
    """The sampled caller turns of the turns CSV at `path`, with predictions if asked.

    Raises:
        cli.BadInput: bad options, not a turns CSV, no caller turn, an unknown model version
            or no production model, no registry configured.
        cli.ComponentError: the registry or the model is unusable.
    """
    o = options
    if o.turn_quantity < 0:
        raise cli.BadInput(f"turn_quantity must be >= 0 (0 for all), got {o.turn_quantity}")
    if not path.is_file():
        raise cli.BadInput(f"the turns CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or ())
        missing = [c for c in _REQUIRED if c not in columns]
        if missing:
            raise cli.BadInput(
                f"{path.name} is not a turns CSV (fetch_calls): no column {', '.join(missing)}"
            )
        turns = [row for row in reader if row[UTTERANCE].strip() and row[TURN_UUID].strip()]
    if not turns:
        raise cli.BadInput(f"{path.name} has no caller turn with an utterance: nothing to annotate")
    caller_turns = len(turns)
    if o.turn_quantity and caller_turns > o.turn_quantity:
        # Sampled by position, then put back in call order so tasks follow the calls.
        chosen = sorted(random.Random(o.seed).sample(range(caller_turns), o.turn_quantity))
        turns = [turns[i] for i in chosen]
    logger.info("selected %d of %d caller turns", len(turns), caller_turns)
    out_columns = [c for c in columns if c not in (PREDICTED_INTENT, PREDICTION_MODEL)]
    out_columns += [PREDICTED_INTENT, PREDICTION_MODEL]
    version = ""
    intents: dict[str, int] = {}
    if o.pre_annotate:
        version, predicted = _predict(registry_url, o.model_version, [t[UTTERANCE] for t in turns])
        for row, intent in zip(turns, predicted, strict=True):
            row[PREDICTED_INTENT] = intent
            row[PREDICTION_MODEL] = version
            intents[intent] = intents.get(intent, 0) + 1
        logger.info("pre-annotated %d turns with SLU model %s", len(turns), version)
    else:
        for row in turns:
            row[PREDICTED_INTENT] = row[PREDICTION_MODEL] = ""
        logger.info("pre_annotate is false: the tasks get no prediction")
    return Selected(turns, out_columns, caller_turns, version, dict(sorted(intents.items())))


def _predict(registry_url: str, version: str, texts: Sequence[str]) -> tuple[str, list[str]]:
    if not registry_url:
        raise cli.BadInput(f"{REGISTRY_ENV} is not set: pre_annotate needs the model registry")
    try:
        registry = ModelRegistry.from_url(registry_url)
        if version:
            known = registry.versions(MODEL_KIND)
            if version not in known:
                shown = ", ".join(known[-10:]) or "none"
                raise cli.BadInput(
                    f"no SLU model version {version!r} in {registry.url} (it has {shown})"
                )
            model_dir = registry.get(MODEL_KIND, version)
        else:
            production = registry.production(MODEL_KIND)
            if production is None:
                raise cli.BadInput(
                    f"there is no production SLU model in {registry.url}: give model_version, "
                    "or set pre_annotate to false"
                )
            model_dir = production
    except RegistryError as exc:
        raise cli.ComponentError(f"model registry: {exc}") from exc
    try:
        model, metadata = load_model(model_dir.path)
    except DataError as exc:
        raise cli.ComponentError(f"SLU model {model_dir.version}: {exc}") from exc
    return metadata.version or model_dir.version, predict(model, texts)


def write_turns(path: Path, selected: Selected) -> None:
    with output_path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=selected.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(selected.rows)


def summary(selected: Selected) -> dict[str, Any]:
    return {
        "caller_turns": selected.caller_turns,
        "selected": len(selected.rows),
        "calls": len({row["call_uuid"] for row in selected.rows}),
        "model_version": selected.model_version,
        "predicted_intents": selected.intents,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="pre_annotate_turns", description=__doc__)
    parser.add_argument("--calls", type=Path, required=True, help="input: turns CSV")
    parser.add_argument("--turn-quantity", type=cli.integer, default=Options.turn_quantity)
    parser.add_argument("--seed", type=cli.integer, default=Options.seed)
    parser.add_argument("--pre-annotate", type=cli.boolean, default=Options.pre_annotate)
    parser.add_argument("--model-version", default="")
    parser.add_argument("--turns", type=Path, required=True, help="output: turns CSV")
    parser.add_argument("--turn-count", type=Path, required=True, help="output")
    parser.add_argument("--used-model-version", type=Path, required=True, help="output")
    parser.add_argument("--summary", type=Path, required=True, help="output: JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, selects and pre-annotates, writes the outputs."""

    def body() -> None:
        args = _parse_args(argv)
        options = Options(
            turn_quantity=args.turn_quantity,
            seed=args.seed,
            pre_annotate=args.pre_annotate,
            model_version=args.model_version.strip(),
        )
        registry_url = os.environ.get(REGISTRY_ENV, "").strip()
        selected = select_turns(args.calls, options, registry_url)
        write_turns(args.turns, selected)
        write_parameter(args.turn_count, len(selected.rows))
        write_parameter(args.used_model_version, selected.model_version)
        write_json(args.summary, summary(selected))

    return cli.run("pre_annotate_turns", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
