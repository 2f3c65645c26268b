"""asr_metrics: word and character error rates of ASR against true transcripts, with jiwer.

Reads a CSV with a true transcript and an ASR prediction per row (by default the
transcription dataset of fetch_tagged_dataset: the annotator's `tag` and the ASR n-best
`raw.utterances`), normalises both sides the same way, and reports corpus WER and CER
overall and per language, the worst utterances and the most frequent word errors.

For KFP (and the service's Run API) the scores are also a KFP Metrics artifact, `scores`,
whose metadata goes to the executor output file the ExecutorInput names
(`{executorInput: null}` in component.yaml); the Markdown report is a KFP Markdown output.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer

from skit_components import cli
from skit_components.outputs import output_path, write_json, write_parameter

logger = logging.getLogger("asr_metrics")

ALL = "all"
"""The language label of the overall row."""
ID_COLUMN = "data_id"
MAX_LISTED_ERRORS = 10

# Both sides get the same treatment: annotation markup (<noise>, [laughter]) is not speech,
# and case and punctuation are transcription conventions, not recognition errors.
_NORMALIZE = jiwer.Compose(
    [
        jiwer.RemoveKaldiNonWords(),
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
    ]
)

METRIC_COLUMNS = (
    "language",
    "utterances",
    "reference_words",
    "wer",
    "cer",
    "substitutions",
    "deletions",
    "insertions",
    "hits",
)
UTTERANCE_COLUMNS = (
    "row",
    "id",
    "language",
    "reference",
    "hypothesis",
    "wer",
    "cer",
    "substitutions",
    "deletions",
    "insertions",
    "reference_words",
)


@dataclass(frozen=True)
class Utterance:
    row: int
    """1-based data row of the input CSV."""
    id: str
    language: str
    reference: str
    """Normalised true transcript."""
    hypothesis: str
    """Normalised ASR transcript."""
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


@dataclass(frozen=True)
class Scores:
    """Corpus scores of a group of utterances."""

    language: str
    utterances: int
    reference_words: int
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int


@dataclass(frozen=True)
class Report:
    scores: list[Scores]
    """Overall first, then per language."""
    utterances: list[Utterance]
    skipped: Counter[str] = field(default_factory=Counter)
    """Why rows were left out, with counts."""
    word_errors: dict[str, Counter] = field(default_factory=dict)
    """substitutions ((reference, hypothesis) -> n), deletions and insertions (word -> n)."""

    @property
    def overall(self) -> Scores:
        return self.scores[0]


def transcript(cell: str) -> str | None:
    """The text of a transcript cell, None when there is none.

    A cell is a JSON object with "text" (a transcription tag), a JSON list of utterance
    segments each a list of ASR alternatives {"transcript", ...} best first (the best of
    each segment, joined), a JSON list of alternatives (the best), or plain text.
    """
    text = cell.strip()
    if not text:
        return None
    if text[0] in "[{":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        return _from_json(value)
    return text


def _from_json(value: Any) -> str | None:
    if isinstance(value, dict):
        found = value.get("text", value.get("transcript"))
        return found if isinstance(found, str) else None
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return None
    if not value:
        return ""
    if all(isinstance(item, list) for item in value):
        # Utterance segments: the best alternative of each.
        parts = [_from_json(segment[0]) for segment in value if segment]
        return " ".join(p for p in parts if p)
    return _from_json(value[0])


def normalize(text: str) -> str:
    return _NORMALIZE(text)


def score_rows(
    rows: Iterable[dict[str, str]], true_column: str, pred_column: str, language_column: str
) -> Report:
    """Scores every row whose true transcript has words after normalisation; per language
    too unless `language_column` is ""."""
    utterances: list[Utterance] = []
    skipped: Counter[str] = Counter()
    for number, row in enumerate(rows, start=1):
        reference = transcript(row.get(true_column) or "")
        if reference is None:
            skipped[f"no true transcript in {true_column}"] += 1
            continue
        reference = normalize(reference)
        if not reference:
            skipped["true transcript is only markup or punctuation (e.g. <unintelligible>)"] += 1
            continue
        hypothesis = transcript(row.get(pred_column) or "")
        hypothesis = normalize(hypothesis or "")
        words = jiwer.process_words(reference, hypothesis)
        chars = jiwer.process_characters(reference, hypothesis)
        utterances.append(
            Utterance(
                row=number,
                id=row.get(ID_COLUMN, "") or str(number),
                language=(row.get(language_column, "") if language_column else "") or "unknown",
                reference=reference,
                hypothesis=hypothesis,
                wer=words.wer,
                cer=chars.cer,
                substitutions=words.substitutions,
                deletions=words.deletions,
                insertions=words.insertions,
                reference_words=words.substitutions + words.deletions + words.hits,
            )
        )
    if not utterances:
        reasons = "; ".join(f"{n} rows: {why}" for why, n in skipped.most_common()) or "no rows"
        raise cli.BadInput(f"no utterance to score ({reasons})")
    groups: dict[str, list[Utterance]] = {}
    if language_column:
        for utterance in utterances:
            groups.setdefault(utterance.language, []).append(utterance)
    overall, word_errors = _corpus(ALL, utterances)
    scores = [overall] + [_corpus(lang, group)[0] for lang, group in sorted(groups.items())]
    return Report(scores, utterances, skipped, word_errors)


def _corpus(language: str, utterances: list[Utterance]) -> tuple[Scores, dict[str, Counter]]:
    references = [u.reference for u in utterances]
    hypotheses = [u.hypothesis for u in utterances]
    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    substitutions, insertions, deletions = jiwer.collect_error_counts(words)
    scores = Scores(
        language=language,
        utterances=len(utterances),
        reference_words=words.substitutions + words.deletions + words.hits,
        wer=words.wer,
        cer=chars.cer,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        hits=words.hits,
    )
    errors = {
        "substitutions": Counter(substitutions),
        "deletions": Counter(deletions),
        "insertions": Counter(insertions),
    }
    return scores, errors


def worst(utterances: list[Utterance], count: int) -> list[Utterance]:
    """The `count` utterances with the highest WER; more errors, then input order, first."""
    return sorted(utterances, key=lambda u: (-u.wer, -u.errors, u.row))[:count]


def read_rows(path: Path, columns: list[str]) -> Iterator[dict[str, str]]:
    """The CSV's rows; BadInput when it is missing or lacks one of `columns`."""
    if not path.is_file():
        raise cli.BadInput(f"no dataset at {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in columns if c and c not in header]
        if missing:
            raise cli.BadInput(
                f"the dataset lacks column(s) {', '.join(missing)}; it has "
                f"{', '.join(header[:12]) or 'no header'}{' ...' if len(header) > 12 else ''}"
            )
        yield from reader


def markdown(report: Report, worst_count: int, columns: tuple[str, str]) -> str:
    """The human-readable report."""
    overall = report.overall
    lines = [
        "# ASR evaluation",
        "",
        f"WER **{overall.wer:.2%}**, CER **{overall.cer:.2%}** over {overall.utterances} "
        f"utterances ({overall.reference_words} reference words). True transcripts from "
        f"`{columns[0]}`, predictions from `{columns[1]}`; both lowercased, without "
        "punctuation or markup such as `<noise>`.",
        "",
    ]
    if report.skipped:
        left_out = ", ".join(f"{n} ({why})" for why, n in report.skipped.most_common())
        lines += [f"Left out: {left_out}.", ""]
    lines += [
        "## By language",
        "",
        "| Language | Utterances | Words | WER | CER | Substitutions | Deletions | Insertions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.scores:
        name = "**all**" if s.language == ALL else s.language
        lines.append(
            f"| {name} | {s.utterances} | {s.reference_words} | {s.wer:.2%} | {s.cer:.2%} | "
            f"{s.substitutions} | {s.deletions} | {s.insertions} |"
        )
    shown = worst(report.utterances, worst_count)
    lines += [
        "",
        f"## Worst {len(shown)} utterances",
        "",
        "| Id | Language | WER | Reference | Hypothesis |",
        "|---|---|---:|---|---|",
    ]
    for u in shown:
        lines.append(
            f"| {_md(u.id)} | {u.language} | {u.wer:.0%} | {_md(u.reference)} | "
            f"{_md(u.hypothesis) or '*(nothing)*'} |"
        )
    lines += ["", "## Most frequent word errors", ""]
    errors = report.word_errors
    substitutions = errors["substitutions"].most_common(MAX_LISTED_ERRORS)
    lines.append(
        "Substitutions: "
        + (", ".join(f"{_md(r)} → {_md(h)} ({n})" for (r, h), n in substitutions) or "none")
        + "."
    )
    for kind in ("deletions", "insertions"):
        common = errors[kind].most_common(MAX_LISTED_ERRORS)
        listed = ", ".join(f"{_md(w)} ({n})" for w, n in common) or "none"
        lines.append(f"{kind.capitalize()}: {listed}.")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def write_csv(path: Path, columns: tuple[str, ...], records: Iterable[Any]) -> None:
    with output_path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for record in records:
            writer.writerow(
                [
                    round(value, 6) if isinstance(value, float) else value
                    for value in (getattr(record, c) for c in columns)
                ]
            )


def scalar_metrics(report: Report) -> dict[str, float]:
    """The Metrics artifact's values: overall WER and CER, utterances and reference words
    scored, and WER per language (`wer_<language>`)."""
    overall = report.overall
    values = {
        "wer": round(overall.wer, 6),
        "cer": round(overall.cer, 6),
        "utterances": float(overall.utterances),
        "reference_words": float(overall.reference_words),
    }
    values.update({f"wer_{s.language}": round(s.wer, 6) for s in report.scores[1:]})
    return values


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


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="asr_metrics", description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="input: the CSV")
    parser.add_argument("--true-column", default="tag")
    parser.add_argument("--pred-column", default="raw.utterances")
    parser.add_argument("--language-column", default="raw.language")
    parser.add_argument("--worst-count", type=cli.integer, default=20)
    parser.add_argument("--report", type=Path, required=True, help="output: Markdown")
    parser.add_argument("--metrics", type=Path, required=True, help="output: CSV by language")
    parser.add_argument("--utterances", type=Path, required=True, help="output: CSV")
    parser.add_argument("--wer", type=Path, required=True, help="output")
    parser.add_argument("--cer", type=Path, required=True, help="output")
    parser.add_argument("--scores", type=Path, help="output: KFP Metrics (JSON)")
    parser.add_argument(
        "--executor-input", help="KFP's ExecutorInput JSON: where the scores' metadata goes"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        true_column, pred_column = args.true_column.strip(), args.pred_column.strip()
        language_column = args.language_column.strip()
        if not true_column or not pred_column:
            raise cli.BadInput("true_column and pred_column must name columns")
        if true_column == pred_column:
            raise cli.BadInput(f"true_column and pred_column are both {true_column!r}")
        if args.worst_count < 0:
            raise cli.BadInput(f"worst_count must be >= 0, got {args.worst_count}")
        rows = read_rows(args.dataset, [true_column, pred_column, language_column])
        report = score_rows(rows, true_column, pred_column, language_column)
        output_path(args.report).write_text(
            markdown(report, args.worst_count, (true_column, pred_column)), encoding="utf-8"
        )
        write_csv(args.metrics, METRIC_COLUMNS, report.scores)
        write_csv(args.utterances, UTTERANCE_COLUMNS, report.utterances)
        write_parameter(args.wer, round(report.overall.wer, 6))
        write_parameter(args.cer, round(report.overall.cer, 6))
        scores = scalar_metrics(report)
        if args.scores:
            write_json(args.scores, scores)
        if args.executor_input:
            write_executor_output(args.executor_input, {"scores": scores})
        logger.info(
            "WER %.4f, CER %.4f over %d utterances; by language: %s; left out: %s",
            report.overall.wer,
            report.overall.cer,
            report.overall.utterances,
            {s.language: round(s.wer, 4) for s in report.scores[1:]},
            dict(report.skipped) or "none",
        )

    return cli.run("asr_metrics", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
