"""evaluate_slu: score an intent classifier on a tagged test set, compare it with the
production model on the same set, and write the report.

The report directory holds report.md and report.html (the same content; the HTML embeds
its images), confusion_matrix.png (and production_confusion_matrix.png when compared),
and metrics.json, which publish_slu_model reads to decide on promotion.

For KFP (and the service's Run API), the scores are also KFP artifacts: a Metrics output
(macro/weighted F1, accuracy, and production's macro F1 when compared), a
ClassificationMetrics output (the confusion matrix) and an HTML output (report.html).
Their metadata, which is what KFP shows, goes to the executor output file named by the
ExecutorInput (`{executorInput: null}` in component.yaml).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skit_components import cli
from skit_components.model_registry import REGISTRY_ENV, ModelRegistry, RegistryError
from skit_components.outputs import output_path, write_json, write_parameter
from skit_components.slu import (
    MODEL_KIND,
    DataError,
    Evaluation,
    evaluate,
    file_sha256,
    load_model,
    read_tagged_csv,
)

logger = logging.getLogger("evaluate_slu")

METRICS_FILE = "metrics.json"
VERDICTS = ("better", "equal", "worse", "no-production", "not-compared", "is-production")
"""How the model compares with production; the first three compare macro F1 on the same
test set."""
NOT_WORSE = ("better", "equal", "no-production")
_MAX_ANNOTATED_LABELS = 30


@dataclass(frozen=True)
class Scored:
    version: str
    evaluation: Evaluation


def boolean(text: str) -> bool:
    """A Boolean input ("true"/"false", as KFP renders them; also 1/0)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def verdict(model: Evaluation, production: Evaluation | None) -> str:
    if production is None:
        return "no-production"
    if model.macro_f1 > production.macro_f1:
        return "better"
    if model.macro_f1 == production.macro_f1:
        return "equal"
    return "worse"


def run_evaluation(
    test_csv: Path, model_dir: Path, *, compare_with_production: bool, out: Path
) -> dict[str, Any]:
    """Evaluates, compares, writes the report directory `out`; returns metrics.json.

    Raises:
        cli.BadInput: an empty or malformed test set, a bad model, no registry configured.
        cli.ComponentError: the registry or its production model is unusable.
    """
    try:
        examples, read = read_tagged_csv(test_csv)
        model, metadata = load_model(model_dir)
        if not examples:
            raise DataError(f"the test set has no tagged utterances ({read.rows} rows)")
    except DataError as exc:
        raise cli.BadInput(str(exc)) from None
    scored = Scored(metadata.version, evaluate(model, examples))
    production: Scored | None = None
    outcome = "not-compared"
    if compare_with_production:
        registry_url = cli.required_env(REGISTRY_ENV, "the model registry to compare with")
        try:
            current = ModelRegistry.from_url(registry_url).production(MODEL_KIND)
            if current is None:
                outcome = "no-production"
            elif current.version == metadata.version:
                outcome = "is-production"
            else:
                production_model, production_metadata = load_model(current.path)
                production = Scored(
                    production_metadata.version, evaluate(production_model, examples)
                )
                outcome = verdict(scored.evaluation, production.evaluation)
        except (RegistryError, DataError) as exc:
            raise cli.ComponentError(f"model registry: {exc}") from exc
    metrics = {
        "model": {"version": scored.version, **scored.evaluation.as_dict()},
        "production": (
            {"version": production.version, **production.evaluation.as_dict()}
            if production
            else None
        ),
        "verdict": outcome,
        "not_worse": outcome in NOT_WORSE,
        "test_set": {"rows": read.rows, "examples": len(examples), "sha256": file_sha256(test_csv)},
    }
    write_report(out, scored, production, outcome, metrics)
    logger.info(
        "%s: macro F1 %.4f on %d examples; production %s: %s (%s)",
        scored.version,
        scored.evaluation.macro_f1,
        len(examples),
        production.version if production else "-",
        f"{production.evaluation.macro_f1:.4f}" if production else "-",
        outcome,
    )
    return metrics


# --- KFP artifacts --------------------------------------------------------------------------


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The Metrics artifact's values (KFP's log_metric names them)."""
    model = metrics["model"]
    values = {
        "macro_f1": model["macro_f1"],
        "weighted_f1": model["weighted_f1"],
        "accuracy": model["accuracy"],
        "test_examples": float(metrics["test_set"]["examples"]),
    }
    if metrics["production"] is not None:
        values["production_macro_f1"] = metrics["production"]["macro_f1"]
    return values


def confusion_metadata(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The ClassificationMetrics artifact's metadata, in KFP's schema: a square matrix over
    every intent tagged or predicted (rows true, columns predicted)."""
    labels = evaluation["confusion_labels"]
    rows = [list(row) + [0] * (len(labels) - len(row)) for row in evaluation["confusion"]]
    rows += [[0] * len(labels) for _ in range(len(labels) - len(rows))]
    return {
        "confusionMatrix": {
            "annotationSpecs": [{"displayName": label} for label in labels],
            "rows": [{"row": row} for row in rows],
        }
    }


def write_executor_output(executor_input: str, metadata: dict[str, dict[str, Any]]) -> None:
    """Writes the executor output file the ExecutorInput names, with each output artifact's
    metadata: KFP's launcher (and the local executor) attach it to the artifacts.

    Raises:
        cli.BadInput: the ExecutorInput is not KFP's JSON.
    """
    try:
        outputs = json.loads(executor_input)["outputs"]
        target = outputs["outputFile"]
        declared = outputs.get("artifacts") or {}
    except (ValueError, KeyError, TypeError) as exc:
        raise cli.BadInput(f"--executor-input is not a KFP ExecutorInput: {exc}") from None
    artifacts = {}
    for name, values in metadata.items():
        listed = (declared.get(name) or {}).get("artifacts") or [{}]
        artifact = {"name": listed[0].get("name", name), "uri": listed[0].get("uri", "")}
        artifacts[name] = {"artifacts": [{**artifact, "metadata": values}]}
    output_path(target).write_text(json.dumps({"artifacts": artifacts}), encoding="utf-8")


def write_kfp_outputs(args: Any, metrics: dict[str, Any]) -> None:
    """The Metrics, ClassificationMetrics and HTML outputs (each only when asked for)."""
    scores = scalar_metrics(metrics)
    matrix = confusion_metadata(metrics["model"])
    if args.metrics:
        write_json(args.metrics, scores)
    if args.confusion_matrix:
        write_json(args.confusion_matrix, matrix)
    if args.report_html:
        shutil.copyfile(args.report / "report.html", output_path(args.report_html))
    if args.executor_input:
        write_executor_output(args.executor_input, {"metrics": scores, "confusion_matrix": matrix})


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: Sequence[str] = ()
    table: Table | None = None
    images: Sequence[tuple[str, str]] = ()
    """(file name, caption)."""


def write_report(
    out: Path,
    model: Scored,
    production: Scored | None,
    outcome: str,
    metrics: dict[str, Any],
) -> None:
    out = output_path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / METRICS_FILE, metrics)
    images = [("confusion_matrix.png", f"Confusion matrix of {model.version}")]
    plot_confusion(model.evaluation, out / images[0][0], f"{model.version} (rows: true intent)")
    if production is not None:
        name = "production_confusion_matrix.png"
        plot_confusion(production.evaluation, out / name, f"production {production.version}")
        images.append((name, f"Confusion matrix of production {production.version}"))
    sections = report_sections(model, production, outcome, metrics, images)
    title = f"SLU evaluation of {model.version}"
    (out / "report.md").write_text(to_markdown(title, sections), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, sections, out), encoding="utf-8")


def report_sections(
    model: Scored,
    production: Scored | None,
    outcome: str,
    metrics: dict[str, Any],
    images: Sequence[tuple[str, str]],
) -> list[Section]:
    m, p = model.evaluation, production.evaluation if production else None
    test = metrics["test_set"]
    summary_rows: list[list[Any]] = []
    for label, attribute in (
        ("Macro F1", "macro_f1"),
        ("Weighted F1", "weighted_f1"),
        ("Accuracy", "accuracy"),
    ):
        mine = getattr(m, attribute)
        row = [label, _f(mine)]
        if p is not None:
            theirs = getattr(p, attribute)
            row += [_f(theirs), _delta(mine - theirs)]
        summary_rows.append(row)
    headers = ["", f"`{model.version}`"]
    if production is not None:
        headers += [f"production `{production.version}`", "Δ"]
    sentences = {
        "better": "Better than the production model (higher macro F1 on the same test set).",
        "equal": "As good as the production model (equal macro F1 on the same test set).",
        "worse": "Worse than the production model (lower macro F1 on the same test set).",
        "no-production": "There is no production model to compare with.",
        "not-compared": "Not compared with the production model.",
        "is-production": "This is the production model.",
    }
    sections = [
        Section(
            "Summary",
            (
                f"Test set: {test['examples']} tagged utterances of {len(m.labels)} intents "
                f"(SHA-256 `{test['sha256'][:12]}`).",
                f"**Verdict: {outcome}.** {sentences[outcome]}",
            ),
            Table(headers, summary_rows),
        )
    ]
    production_f1 = {s.intent: s.f1 for s in p.per_intent} if p else {}
    intent_rows = []
    for s in m.per_intent:
        row = [f"`{s.intent}`", s.support, _f(s.precision), _f(s.recall), _f(s.f1)]
        if p is not None:
            row += [_f(production_f1[s.intent]), _delta(s.f1 - production_f1[s.intent])]
        intent_rows.append(row)
    intent_headers = ["Intent", "Support", "Precision", "Recall", "F1"]
    if p is not None:
        intent_headers += ["Production F1", "Δ F1"]
    sections.append(Section("Per intent", (), Table(intent_headers, intent_rows)))
    if m.per_language:
        language_rows = []
        for language, f1 in m.per_language.items():
            row = [language, _f(f1)]
            if p is not None:
                row += [_f(p.per_language.get(language, 0.0))]
            language_rows.append(row)
        language_headers = ["Language", "Macro F1"] + (["Production macro F1"] if p else [])
        sections.append(Section("Per language", (), Table(language_headers, language_rows)))
    if m.top_confusions:
        rows = [[f"`{t}`", f"`{q}`", n] for t, q, n in m.top_confusions]
        sections.append(
            Section("Most frequent confusions", (), Table(["True", "Predicted", "Count"], rows))
        )
    sections.append(
        Section(
            "Confusion matrices",
            ("Rows are the tagged intents, columns the predictions; colour is the row share.",),
            images=images,
        )
    )
    return sections


def _f(value: float) -> str:
    return f"{value:.4f}"


def _delta(value: float) -> str:
    return f"{value:+.4f}"


def to_markdown(title: str, sections: Sequence[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.table is not None:
            lines.append("| " + " | ".join(map(str, section.table.headers)) + " |")
            lines.append("|" + "---|" * len(section.table.headers))
            for row in section.table.rows:
                lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
            lines.append("")
        for name, caption in section.images:
            lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def to_html(title: str, sections: Sequence[Section], folder: Path) -> str:
    """A self-contained page: the images are embedded, so the file can be opened alone."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;"
        "padding:0 1rem}table{border-collapse:collapse;margin:1rem 0}"
        "th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
        "code{font-size:.9em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for paragraph in section.paragraphs:
            parts.append(f"<p>{_inline(paragraph)}</p>")
        if section.table is not None:
            parts.append("<table><thead><tr>")
            parts += [f"<th>{_inline(str(h))}</th>" for h in section.table.headers]
            parts.append("</tr></thead><tbody>")
            for row in section.table.rows:
                parts.append("<tr>" + "".join(f"<td>{_inline(str(v))}</td>" for v in row) + "</tr>")
            parts.append("</tbody></table>")
        for name, caption in section.images:
            data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escapes text, then renders the two Markdown marks the report uses: `code`, **bold**."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    escaped = "".join(f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(pieces))
    pieces = escaped.split("**")
    return "".join(
        f"<strong>{piece}</strong>" if i % 2 else piece for i, piece in enumerate(pieces)
    )


def plot_confusion(evaluation: Evaluation, path: Path, title: str) -> None:
    # A writable config dir: the image's user has no home directory.
    os.environ.setdefault("MPLCONFIGDIR", tempfile.gettempdir())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = evaluation.confusion_labels
    rows = len(evaluation.labels)
    counts = np.array(evaluation.confusion[:rows], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.42 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size * rows / max(len(labels), 1) + 1.0))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(rows), labels[:rows], fontsize=8)
    axes.set_xlabel("predicted intent")
    axes.set_ylabel("tagged intent")
    axes.set_title(title, fontsize=9)
    if len(labels) <= _MAX_ANNOTATED_LABELS:
        for i in range(rows):
            for j in range(len(labels)):
                if counts[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    axes.text(
                        j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=colour
                    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="evaluate_slu", description=__doc__)
    parser.add_argument("--test-set", type=Path, required=True, help="input: tagged CSV")
    parser.add_argument("--model", type=Path, required=True, help="input: model directory")
    parser.add_argument("--compare-with-production", type=boolean, default=True)
    parser.add_argument("--report", type=Path, required=True, help="output: report directory")
    parser.add_argument("--macro-f1", type=Path, required=True, help="output")
    parser.add_argument("--production-macro-f1", type=Path, required=True, help="output")
    parser.add_argument("--production-version", type=Path, required=True, help="output")
    parser.add_argument("--verdict", type=Path, required=True, help="output")
    parser.add_argument("--metrics", type=Path, help="output: KFP Metrics (JSON)")
    parser.add_argument(
        "--confusion-matrix", type=Path, help="output: KFP ClassificationMetrics (JSON)"
    )
    parser.add_argument("--report-html", type=Path, help="output: KFP HTML (report.html)")
    parser.add_argument(
        "--executor-input", help="KFP's ExecutorInput JSON: where the artifacts' metadata goes"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        metrics = run_evaluation(
            args.test_set,
            args.model,
            compare_with_production=args.compare_with_production,
            out=args.report,
        )
        production = metrics["production"] or {}
        write_parameter(args.macro_f1, metrics["model"]["macro_f1"])
        write_parameter(args.production_macro_f1, production.get("macro_f1", 0.0))
        write_parameter(args.production_version, production.get("version", ""))
        write_parameter(args.verdict, metrics["verdict"])
        write_kfp_outputs(args, metrics)

    return cli.run("evaluate_slu", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
