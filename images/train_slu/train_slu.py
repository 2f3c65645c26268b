"""train_slu: fit the intent classifier on a train CSV and write the model directory
(model.joblib, metadata.json, model_card.md; see skit_components.slu).

The model is TF-IDF word and character n-grams with a linear SVM, trained on the distinct
utterances with their majority tag; the version is `<model_name>-<UTC time>-<hash>`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.outputs import write_parameter
from skit_components.slu import DataError, ModelMetadata, file_sha256, read_tagged_csv, save_model
from skit_components.slu import train as fit

logger = logging.getLogger("train_slu")

_MODEL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def train(train_csv: Path, *, seed: int, model_name: str, out: Path) -> ModelMetadata:
    """Trains on `train_csv` and writes the model directory `out`.

    Raises:
        cli.BadInput: a bad model name, or training data that cannot be used.
    """
    if not _MODEL_NAME.match(model_name):
        raise cli.BadInput(
            f"model_name must be lowercase letters, digits and '-', got {model_name!r}"
        )
    try:
        examples, read = read_tagged_csv(train_csv)
        if not examples:
            raise DataError(f"the training set has no tagged utterances ({read.rows} rows)")
        started = time.perf_counter()
        trained = fit(examples, seed=seed)
    except DataError as exc:
        raise cli.BadInput(str(exc)) from None
    metadata = save_model(
        trained,
        examples,
        out,
        name=model_name,
        seed=seed,
        training_data={
            "train_csv_sha256": file_sha256(train_csv),
            "train_rows": read.rows,
            "skipped_rows": read.rows - read.kept,
        },
    )
    logger.info(
        "trained %s on %d examples (%d distinct, %d intents) in %.1fs",
        metadata.version,
        metadata.train_examples,
        metadata.distinct_utterances,
        len(metadata.labels),
        time.perf_counter() - started,
    )
    return metadata


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="train_slu", description=__doc__)
    parser.add_argument("--train", type=Path, required=True, help="input: train CSV")
    parser.add_argument("--seed", type=cli.integer, default=0)
    parser.add_argument("--model-name", default="slu-intents")
    parser.add_argument("--model", type=Path, required=True, help="output: model directory")
    parser.add_argument("--model-version", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        metadata = train(
            args.train, seed=args.seed, model_name=args.model_name.strip(), out=args.model
        )
        write_parameter(args.model_version, metadata.version)

    return cli.run("train_slu", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
