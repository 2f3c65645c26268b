"""publish_slu_model: publish a trained SLU model with its model card and evaluation, and
promote it to production when asked to and it is not worse than production.

The published model directory (the step's output artifact) is the trained model, a model
card that now includes the evaluation, and the evaluation report under `evaluation/`. It is
registered in the model registry under its version whether promoted or not (versions are
immutable, so it can be evaluated or promoted later). The production pointer moves only
when `promote` is true, the evaluation says the model is not worse than production on the
same test set, and production is still the model it was compared with.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.model_registry import REGISTRY_ENV, ModelRegistry, RegistryError
from skit_components.outputs import output_path, write_parameter
from skit_components.slu import (
    CARD_FILE,
    MODEL_FILE,
    MODEL_KIND,
    DataError,
    file_sha256,
    model_card,
    read_metadata,
)

logger = logging.getLogger("publish_slu_model")

METRICS_FILE = "metrics.json"
NOT_WORSE = ("better", "equal", "no-production")


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    reason: str


def boolean(text: str) -> bool:
    """A Boolean input ("true"/"false", as KFP renders them; also 1/0)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def read_evaluation(folder: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise cli.BadInput(
            f"the evaluation has no {METRICS_FILE}: is it evaluate_slu's report?"
        ) from None
    except json.JSONDecodeError as exc:
        raise cli.BadInput(f"the evaluation's {METRICS_FILE} is not JSON: {exc}") from None
    if not isinstance(metrics, dict) or "model" not in metrics or "verdict" not in metrics:
        raise cli.BadInput(f"the evaluation's {METRICS_FILE} has no model or verdict")
    return metrics


def evaluation_markdown(metrics: dict[str, Any]) -> str:
    model, production, test = metrics["model"], metrics.get("production"), metrics["test_set"]
    lines = [
        f"Evaluated on {test['examples']} held-out tagged utterances "
        f"(test set SHA-256 `{test['sha256'][:12]}`): macro F1 {model['macro_f1']:.4f}, "
        f"weighted F1 {model['weighted_f1']:.4f}, accuracy {model['accuracy']:.4f}.",
    ]
    if production:
        lines.append(
            f"The production model `{production['version']}` scored macro F1 "
            f"{production['macro_f1']:.4f} on the same test set: verdict **{metrics['verdict']}**."
        )
    else:
        lines.append(f"Comparison with production: {metrics['verdict']}.")
    lines.append(
        "Per-intent precision, recall and F1, per-language scores and confusion matrices: "
        "`evaluation/report.html` (or `report.md`) in this directory."
    )
    return "\n\n".join(lines)


def build_published(model_dir: Path, evaluation_dir: Path, out: Path) -> tuple[str, dict]:
    """Writes the published model directory; returns (version, evaluation metrics).

    Raises:
        cli.BadInput: the model is damaged, or the evaluation is of another model.
    """
    try:
        metadata = read_metadata(model_dir)
        if file_sha256(model_dir / MODEL_FILE) != metadata.sha256:
            raise DataError(f"{MODEL_FILE} does not match the SHA-256 in its metadata")
    except (DataError, OSError) as exc:
        raise cli.BadInput(f"the model artifact is not a usable SLU model: {exc}") from None
    metrics = read_evaluation(evaluation_dir)
    evaluated = metrics["model"].get("version")
    if evaluated != metadata.version:
        raise cli.BadInput(
            f"the evaluation is of model {evaluated!r}, not of {metadata.version!r}: "
            "wire the same model into evaluate_slu and publish_slu_model"
        )
    out = output_path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model_dir, out)
    shutil.copytree(evaluation_dir, out / "evaluation")
    (out / CARD_FILE).write_text(
        model_card(metadata, evaluation_markdown(metrics)), encoding="utf-8"
    )
    return metadata.version, metrics


def decide(
    registry: ModelRegistry, version: str, metrics: dict[str, Any], promote: bool
) -> Decision:
    """Moves the production pointer if allowed; says why or why not."""
    outcome = metrics["verdict"]
    production = metrics.get("production") or {}
    if not promote:
        return Decision(version, False, "registered, not promoted: promote is false")
    current = registry.production(MODEL_KIND)
    if outcome == "is-production" or (current is not None and current.version == version):
        # Also a retried step whose first attempt promoted it.
        return Decision(version, True, "it is already the production model")
    if outcome not in NOT_WORSE:
        if outcome == "worse":
            reason = (
                f"not promoted: worse than production {production['version']} (macro F1 "
                f"{metrics['model']['macro_f1']:.4f} < {production['macro_f1']:.4f})"
            )
        else:
            reason = f"not promoted: the evaluation did not compare with production ({outcome})"
        return Decision(version, False, reason)
    expected = production.get("version") if production else None
    if not registry.promote(MODEL_KIND, version, expected=expected):
        now = registry.production(MODEL_KIND)
        return Decision(
            version,
            False,
            f"not promoted: production changed to {now.version if now else 'none'} since the "
            f"evaluation against {expected or 'no model'}; evaluate again",
        )
    if outcome == "no-production":
        return Decision(version, True, "promoted: the first production SLU model")
    comparison = "better than" if outcome == "better" else "as good as"
    return Decision(
        version,
        True,
        f"promoted: {comparison} production {expected} (macro F1 "
        f"{metrics['model']['macro_f1']:.4f} vs {production['macro_f1']:.4f})",
    )


def publish(
    registry_url: str, model_dir: Path, evaluation_dir: Path, *, promote: bool, out: Path
) -> Decision:
    version, metrics = build_published(model_dir, evaluation_dir, out)
    try:
        registry = ModelRegistry.from_url(registry_url)
        if _same_model_registered(registry, version, out):
            # The same bytes were trained and published before (same data, seed, second):
            # one model, one version, whatever its card says about later comparisons.
            new = False
        else:
            _, new = registry.register(MODEL_KIND, version, out)
        decision = decide(registry, version, metrics, promote)
    except RegistryError as exc:
        raise cli.ComponentError(f"model registry: {exc}") from exc
    state = "registered" if new else "already registered"
    logger.info("%s %s in %s; %s", version, state, registry.url, decision.reason)
    return decision


def _same_model_registered(registry: ModelRegistry, version: str, published: Path) -> bool:
    if version not in registry.versions(MODEL_KIND):
        return False
    existing = registry.get(MODEL_KIND, version).path / MODEL_FILE
    return file_sha256(existing) == file_sha256(published / MODEL_FILE)


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="publish_slu_model", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="input: model directory")
    parser.add_argument("--evaluation", type=Path, required=True, help="input: evaluate_slu report")
    parser.add_argument("--promote", type=boolean, default=False)
    parser.add_argument("--published", type=Path, required=True, help="output: model directory")
    parser.add_argument("--model-version", type=Path, required=True, help="output")
    parser.add_argument("--promoted", type=Path, required=True, help="output")
    parser.add_argument("--decision", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        registry_url = cli.required_env(REGISTRY_ENV, "the model registry URL")
        decision = publish(
            registry_url, args.model, args.evaluation, promote=args.promote, out=args.published
        )
        write_parameter(args.model_version, decision.version)
        write_parameter(args.promoted, decision.promoted)
        write_parameter(args.decision, decision.reason)

    return cli.run("publish_slu_model", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
