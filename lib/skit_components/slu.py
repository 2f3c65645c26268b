"""Intent classification (SLU): the tagged-utterance CSV, the stratified split, training,
evaluation and the model directory that the SLU components, the demo data and the
benchmarks share.

A model directory holds three files:

- `model.joblib`: the fitted scikit-learn pipeline. It is a pickle, so only load models
  from a registry you trust; `load_model` checks its SHA-256 against the metadata first.
- `metadata.json`: `ModelMetadata` (version, labels, training data, library versions).
- `model_card.md`: what the model is for, how it was trained and (once evaluated) how
  well it does.

scikit-learn and joblib are imported inside the functions that need them: images that
only read and split tagged data (prepare_slu_dataset) install neither.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import platform
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("utterance", "text", "raw.text", "primary_utterance")
"""Where a tagged CSV's utterance may be, in order of preference: our own CSVs, the
annotation store's download (fetch_tagged_dataset: `raw.text`), a turns CSV (fetch_calls)."""
LANGUAGE_COLUMNS = ("language", "raw.language")
LABEL_COLUMNS = ("intent", "tag")
"""Where its intent may be: a plain name, or a `tag` in the annotation tools' JSON shapes."""
OUTPUT_COLUMNS = ("utterance", "intent", "language")
"""The columns of the train and test CSVs this module writes."""

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
CARD_FILE = "model_card.md"
MODEL_KIND = "slu"
"""The model registry's name for intent classifiers."""

ALGORITHM = (
    "TF-IDF of word 1-2-grams and character 2-5-grams (within word boundaries), "
    "linear SVM (one-vs-rest, C=0.5)"
)
# Splits on whitespace and punctuation only: \w stops at Indic vowel signs, which would
# cut Hindi, Tamil and Telugu words into pieces.
_TOKEN_PATTERN = r"[^\s.,!?;:\"'()\[\]{}।॥]+"
_C = 0.5


class DataError(Exception):
    """Tagged data that cannot be used: missing columns, nothing left, a bad model file."""


@dataclass(frozen=True)
class Example:
    """One tagged utterance."""

    text: str
    intent: str
    language: str = ""


@dataclass(frozen=True)
class ReadSummary:
    """What reading a tagged CSV kept and skipped."""

    rows: int
    kept: int
    text_column: str
    label_column: str
    skipped_untagged: int
    """Rows without an intent (silent turns, untagged tasks)."""
    skipped_empty_text: int


def parse_tag(value: str) -> str:
    """The intent in a tag: a plain name, or the first choice of a JSON tag as the
    annotation tools write them (`["x"]`, `{"choices": ["x"]}`, `[{"value": "x"}]`,
    `{"intent": "x"}`)."""
    text = value.strip()
    if not text or text[0] not in '[{"':
        return text
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    return _first_intent(parsed)


def _first_intent(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return _first_intent(value[0]) if value else ""
    if isinstance(value, dict):
        for key in ("choices", "intent", "value", "name", "label"):
            if key in value:
                return _first_intent(value[key])
    return ""


def read_tagged_csv(path: str | Path) -> tuple[list[Example], ReadSummary]:
    """Reads tagged utterances; rows without text or intent are skipped and counted.

    Raises:
        DataError: the file has no utterance or no intent column.
    """
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        text_column = next((c for c in TEXT_COLUMNS if c in header), None)
        label_column = next((c for c in LABEL_COLUMNS if c in header), None)
        language_column = next((c for c in LANGUAGE_COLUMNS if c in header), "")
        if text_column is None or label_column is None:
            wanted = "utterance" if text_column is None else "intent"
            choices = TEXT_COLUMNS if text_column is None else LABEL_COLUMNS
            raise DataError(
                f"{Path(path).name} has no {wanted} column: expected one of "
                f"{', '.join(choices)}; found {', '.join(header) or 'no header'}"
            )
        examples: list[Example] = []
        rows = untagged = empty = 0
        for row in reader:
            rows += 1
            intent = parse_tag(row.get(label_column) or "")
            text = " ".join((row.get(text_column) or "").split())
            if not intent:
                untagged += 1
            elif not text:
                empty += 1
            else:
                language = (row.get(language_column) or "").strip() if language_column else ""
                examples.append(Example(text, intent, language))
    return examples, ReadSummary(rows, len(examples), text_column, label_column, untagged, empty)


def write_examples_csv(path: str | Path, examples: Iterable[Example]) -> int:
    """Writes `OUTPUT_COLUMNS`; returns the number of rows."""
    count = 0
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(OUTPUT_COLUMNS)
        for example in examples:
            writer.writerow((example.text, example.intent, example.language))
            count += 1
    return count


@dataclass(frozen=True)
class Split:
    train: list[Example]
    test: list[Example]
    train_only: list[str]
    """Intents with a single example: it goes to train, so none of them is tested."""


def stratified_split(examples: Sequence[Example], test_percent: int, seed: int) -> Split:
    """Puts `test_percent` of every intent's examples (rounded, at least one) in the test
    set and the rest in train; reproducible by `seed`.

    With 1 <= test_percent <= 99 every intent with two or more examples lands in both sets;
    a single example goes to train. With 100 everything is test data (evaluation only).
    """
    if not 1 <= test_percent <= 100:
        raise ValueError(f"test_percent must be between 1 and 100, got {test_percent}")
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_intent[example.intent].append(example)
    rng = random.Random(seed)
    train: list[Example] = []
    test: list[Example] = []
    train_only: list[str] = []
    for intent in sorted(by_intent):
        group = by_intent[intent]
        rng.shuffle(group)
        if test_percent == 100:
            test.extend(group)
            continue
        if len(group) < 2:
            train.extend(group)
            train_only.append(intent)
            continue
        n_test = min(len(group) - 1, max(1, round(len(group) * test_percent / 100)))
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    # Interleave intents again so that the files read like the source data.
    rng.shuffle(train)
    rng.shuffle(test)
    return Split(train, test, train_only)


@dataclass(frozen=True)
class ModelMetadata:
    """`metadata.json` of a model directory."""

    name: str
    version: str
    created_at: str
    """ISO 8601, UTC."""
    algorithm: str
    labels: list[str]
    train_examples: int
    distinct_utterances: int
    conflicting_utterances: int
    """Distinct utterances tagged with more than one intent (resolved by majority)."""
    intent_counts: dict[str, int]
    languages: dict[str, int]
    seed: int
    sha256: str
    """Of model.joblib."""
    libraries: dict[str, str] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    """Free-form description of the data the model was trained on."""


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    """The fitted scikit-learn pipeline."""
    distinct_utterances: int
    conflicting_utterances: int


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def train(examples: Sequence[Example], *, seed: int = 0) -> TrainedModel:
    """Fits the intent classifier.

    Identical utterances are trained on once, with the intent most of their copies carry
    and a weight growing with the log of their count. Tagged ASR transcripts repeat a lot
    ("yes" thousands of times, under several tags when tags are noisy): the majority tag
    is what a classifier can best predict for them anyway, and training on distinct
    utterances is an order of magnitude faster and converges where the full set does not.

    Raises:
        DataError: no examples, or a single intent.
    """
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    if not examples:
        raise DataError("the training set is empty")
    by_text: dict[str, Counter[str]] = defaultdict(Counter)
    for example in examples:
        by_text[normalise(example.text)][example.intent] += 1
    texts = sorted(by_text)
    labels = [_majority(by_text[t]) for t in texts]
    if len(set(labels)) < 2:
        raise DataError(f"training needs two intents or more, got {sorted(set(labels))}")
    weights = np.log1p([sum(by_text[t].values()) for t in texts])
    conflicting = sum(1 for t in texts if len(by_text[t]) > 1)
    model = Pipeline(
        [
            (
                "features",
                FeatureUnion(
                    [
                        (
                            "words",
                            TfidfVectorizer(
                                token_pattern=_TOKEN_PATTERN,
                                ngram_range=(1, 2),
                                sublinear_tf=True,
                            ),
                        ),
                        (
                            "chars",
                            TfidfVectorizer(
                                analyzer="char_wb",
                                ngram_range=(2, 5),
                                sublinear_tf=True,
                                min_df=2,
                            ),
                        ),
                    ]
                ),
            ),
            ("classifier", LinearSVC(C=_C, random_state=seed)),
        ]
    )
    model.fit(texts, labels, classifier__sample_weight=weights)
    return TrainedModel(model, len(texts), conflicting)


def _majority(counts: Counter[str]) -> str:
    # Ties go to the alphabetically first intent, so that training is reproducible.
    return min(counts, key=lambda intent: (-counts[intent], intent))


def predict(model: Any, texts: Sequence[str]) -> list[str]:
    """The predicted intent of each text (each distinct text is classified once)."""
    if not texts:
        return []
    keys = [normalise(t) for t in texts]
    distinct = sorted(set(keys))
    predicted = dict(zip(distinct, model.predict(distinct), strict=True))
    return [str(predicted[k]) for k in keys]


def save_model(
    trained: TrainedModel,
    examples: Sequence[Example],
    directory: str | Path,
    *,
    name: str = "slu-intents",
    seed: int = 0,
    created_at: datetime | None = None,
    training_data: dict[str, Any] | None = None,
) -> ModelMetadata:
    """Writes model.joblib, metadata.json and a model card (without evaluation) to
    `directory`. The version is `<name>-<UTC time>-<first 8 of the SHA-256>`."""
    import joblib
    import sklearn

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / MODEL_FILE
    # The vectorizers cache id(stop_words), a memory address: dropped, so that the same
    # data and seed give the same bytes, hash and version on every run.
    for _, vectorizer in trained.model.named_steps["features"].transformer_list:
        vars(vectorizer).pop("_stop_words_id", None)
    joblib.dump(trained.model, model_path)
    sha256 = file_sha256(model_path)
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    intents = Counter(e.intent for e in examples)
    languages = Counter(e.language or "unknown" for e in examples)
    metadata = ModelMetadata(
        name=name,
        version=f"{name}-{created:%Y%m%d-%H%M%S}-{sha256[:8]}",
        created_at=created.isoformat(timespec="seconds"),
        algorithm=ALGORITHM,
        labels=sorted(str(label) for label in trained.model.classes_),
        train_examples=len(examples),
        distinct_utterances=trained.distinct_utterances,
        conflicting_utterances=trained.conflicting_utterances,
        intent_counts=dict(sorted(intents.items())),
        languages=dict(sorted(languages.items())),
        seed=seed,
        sha256=sha256,
        libraries={
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "joblib": joblib.__version__,
        },
        training_data=training_data or {},
    )
    write_metadata(directory, metadata)
    (directory / CARD_FILE).write_text(model_card(metadata), encoding="utf-8")
    return metadata


def write_metadata(directory: str | Path, metadata: ModelMetadata) -> None:
    text = json.dumps(asdict(metadata), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (Path(directory) / METADATA_FILE).write_text(text, encoding="utf-8")


def read_metadata(directory: str | Path) -> ModelMetadata:
    """Raises DataError when the directory is not a model directory."""
    path = Path(directory) / METADATA_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ModelMetadata(**raw)
    except FileNotFoundError:
        raise DataError(f"{Path(directory)} is not an SLU model: no {METADATA_FILE}") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataError(f"{path} is not valid model metadata: {exc}") from None


def load_model(directory: str | Path) -> tuple[Any, ModelMetadata]:
    """Loads a model directory after checking model.joblib against its recorded hash.

    Raises:
        DataError: not a model directory, or the model file does not match its metadata.
    """
    import joblib

    directory = Path(directory)
    metadata = read_metadata(directory)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise DataError(f"{directory} is not an SLU model: no {MODEL_FILE}")
    actual = file_sha256(model_path)
    if actual != metadata.sha256:
        raise DataError(
            f"{model_path} has SHA-256 {actual[:12]}… but its metadata says "
            f"{metadata.sha256[:12]}…: refusing to load a model that was changed"
        )
    return joblib.load(model_path), metadata


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class IntentScores:
    intent: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a test set."""

    examples: int
    labels: list[str]
    """The intents of the test set; macro F1 averages over exactly these."""
    per_intent: list[IntentScores]
    macro_f1: float
    weighted_f1: float
    accuracy: float
    confusion_labels: list[str]
    """Rows (true) and columns (predicted): the test intents, then any other intent the
    model predicted."""
    confusion: list[list[int]]
    per_language: dict[str, float]
    """Macro F1 per language, when the test set says the language."""
    top_confusions: list[tuple[str, str, int]]
    """(true, predicted, count), most frequent first."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(model: Any, examples: Sequence[Example], *, top: int = 10) -> Evaluation:
    """Scores `model` on tagged examples.

    Raises:
        DataError: the test set is empty.
    """
    if not examples:
        raise DataError("the test set is empty")
    truth = [e.intent for e in examples]
    predicted = predict(model, [e.text for e in examples])
    return score(truth, predicted, [e.language for e in examples], top=top)


def score(
    truth: Sequence[str],
    predicted: Sequence[str],
    languages: Sequence[str] = (),
    *,
    top: int = 10,
) -> Evaluation:
    """Per-intent precision/recall/F1, macro and weighted F1, accuracy and the confusion
    matrix of predictions against the truth."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = sorted(set(truth))
    extra = sorted(set(predicted) - set(labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    per_intent = [
        IntentScores(label, _r(p), _r(r), _r(f), int(s))
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    ]
    total = sum(s.support for s in per_intent)
    confusion_labels = labels + extra
    matrix = confusion_matrix(truth, predicted, labels=confusion_labels)
    pairs = [
        (confusion_labels[i], confusion_labels[j], int(matrix[i][j]))
        for i in range(len(labels))
        for j in range(len(confusion_labels))
        if i != j and matrix[i][j]
    ]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    per_language: dict[str, float] = {}
    if languages and any(languages):
        grouped: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for t, p, language in zip(truth, predicted, languages, strict=True):
            grouped[language or "unknown"][0].append(t)
            grouped[language or "unknown"][1].append(p)
        for language, (language_truth, language_predicted) in sorted(grouped.items()):
            per_language[language] = _macro_f1(language_truth, language_predicted)
    return Evaluation(
        examples=len(truth),
        labels=labels,
        per_intent=per_intent,
        macro_f1=_r(sum(s.f1 for s in per_intent) / len(per_intent)),
        weighted_f1=_r(sum(s.f1 * s.support for s in per_intent) / total),
        accuracy=_r(sum(1 for t, p in zip(truth, predicted, strict=True) if t == p) / len(truth)),
        confusion_labels=confusion_labels,
        confusion=[[int(v) for v in row] for row in matrix],
        per_language=per_language,
        top_confusions=pairs[:top],
    )


def _macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    from sklearn.metrics import f1_score

    return _r(f1_score(truth, predicted, labels=sorted(set(truth)), average="macro"))


def _r(value: float) -> float:
    # Four decimals: enough to rank models, and stable in reports and comparisons.
    return round(float(value), 4) if math.isfinite(value) else 0.0


def majority_baseline(train_intents: Sequence[str], truth: Sequence[str]) -> Evaluation:
    """The scores of always predicting the most frequent training intent."""
    majority = _majority(Counter(train_intents))
    return score(truth, [majority] * len(truth))


def model_card(metadata: ModelMetadata, evaluation_markdown: str = "") -> str:
    """The model card; `evaluation_markdown` is added once the model has been evaluated."""
    intents = "\n".join(
        f"| `{intent}` | {count} |" for intent, count in metadata.intent_counts.items()
    )
    languages = ", ".join(f"{lang} ({n})" for lang, n in metadata.languages.items())
    data = "\n".join(f"- {k}: {v}" for k, v in sorted(metadata.training_data.items()))
    libraries = ", ".join(f"{k} {v}" for k, v in metadata.libraries.items())
    evaluation = evaluation_markdown.strip() or (
        "Not evaluated yet: see the evaluation report published with this model."
    )
    return f"""# Model card: {metadata.name}

| | |
|---|---|
| Version | `{metadata.version}` |
| Created | {metadata.created_at} |
| Task | intent classification of caller utterances (ASR transcripts) |
| Algorithm | {metadata.algorithm} |
| Intents | {len(metadata.labels)} |
| SHA-256 of {MODEL_FILE} | `{metadata.sha256}` |
| Libraries | {libraries} |

## Intended use

Predicts the intent of one caller turn of a voice-bot conversation from its best ASR
transcript, for the clients, flows and languages of its training data. It is not meant for
languages or intents it was not trained on: anything else is mapped to the nearest known
intent, never to "unknown".

## Training data

{metadata.train_examples} tagged utterances ({metadata.distinct_utterances} distinct) in
{languages}. {metadata.conflicting_utterances} distinct utterances carried more than one
tag; each was trained on with its majority tag.

{data}

| Intent | Examples |
|---|---|
{intents}

## Evaluation

{evaluation}

## Limitations

- Tags of ASR transcripts are noisy, and an utterance ASR garbled may be unrecoverable.
- Utterances repeat across train and test sets (callers say "yes" the same way), so
  held-out scores are optimistic for unseen phrasings.
- Scores are per intent and macro-averaged: rare intents weigh as much as frequent ones.
"""
