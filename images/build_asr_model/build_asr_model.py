"""build_asr_model: a domain model for the offline recogniser, from the calls database's
transcripts (the successor of the original's asr_tune, which tuned a Kaldi model).

Reads what the production ASR heard in the calls of one language (each caller turn's best
alternative, CALLS_DB_URL), and writes a pocketsphinx JSGF grammar of the domain:

- entity spans the calls database marks (`entities`: date, time, number) become rules, so
  "i will pay <date>" covers every date phrase callers used, not only the ones seen with it;
  a number is read out digit by digit (`<digit>{n}`: as many digits as the numbers had);
- sentences and entity phrases heard fewer than `min_count` times are left out: the ASR's
  own one-off mistakes ("to morrow", "celery") are rare, what callers say is not;
- words the recogniser's dictionary (pocketsphinx's en-us cmudict) lacks are spelled out
  letter by letter when they are short all-letter words (acronyms: upi, emi), otherwise the
  sentences with them are left out and counted.

Writes the model directory: `model.json` (kind, language, counts, what was left out),
`grammar.jsgf` and `words.dict` (pronunciations added to the dictionary). With
`kind=default` it writes only `model.json` saying so: the recogniser then uses its bundled
general language model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from skit_components import cli
from skit_components.db import connect
from skit_components.outputs import output_path, write_json, write_parameter

logger = logging.getLogger("build_asr_model")

DB_ENV = "CALLS_DB_URL"
KINDS = ("grammar", "default")
MODEL_FILE = "model.json"
GRAMMAR_FILE = "grammar.jsgf"
WORDS_FILE = "words.dict"
ROOT_RULE = "utterance"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_ACRONYM_LETTERS = 4
ENTITY_RULES = ("date", "time", "number")
SUPPORTED_LANGUAGES = ("en",)
"""pocketsphinx's wheel ships an en-us model only."""


@dataclass(frozen=True)
class Options:
    language: str = "en"
    kind: str = "grammar"
    min_count: int = 2


@dataclass
class Corpus:
    """What the calls database says callers said, with entity spans made rule references."""

    sentences: Counter[str] = field(default_factory=Counter)
    entities: dict[str, Counter[str]] = field(default_factory=dict)
    number_lengths: set[int] = field(default_factory=set)
    turns: int = 0


def read_corpus(database_url: str, language: str) -> Corpus:
    """The best alternative of every caller turn in `language`."""
    corpus = Corpus(entities={name: Counter() for name in ENTITY_RULES if name != "number"})
    with connect(database_url) as db:
        d = db.dialect
        rows = db.fetchall(
            f"SELECT {d.json_text('t.utterances')}, {d.json_text('t.entities')} "
            "FROM turns t JOIN calls c ON c.id = t.call_id WHERE c.language = ? ORDER BY t.id",
            (language,),
        )
    for utterances_text, entities_text in rows:
        utterances = json.loads(utterances_text or "[]")
        if not utterances or not utterances[0]:
            continue
        text = str(utterances[0][0].get("transcript", "")).strip().lower()
        if not text:
            continue
        corpus.turns += 1
        for entity in json.loads(entities_text or "[]"):
            kind, start, end = entity.get("type"), entity.get("start", -1), entity.get("end", -1)
            span = str(entity.get("text", ""))
            if kind not in ENTITY_RULES or not 0 <= start < end or text[start:end] != span.lower():
                continue
            if kind == "number":
                if not span.isdigit():
                    continue
                corpus.number_lengths.add(len(span))
            else:
                corpus.entities[kind][span.lower()] += 1
            text = f"{text[:start]}<{kind}>{text[end:]}"
            break  # the spans of one turn are offsets into the original text
        corpus.sentences[" ".join(text.split())] += 1
    return corpus


def load_dictionary(path: Path) -> dict[str, str]:
    """word -> its first pronunciation, from a CMU-style dictionary."""
    words: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) == 2 and "(" not in parts[0]:
                words.setdefault(parts[0], parts[1].strip())
    return words


def _pronounce(word: str, dictionary: dict[str, str]) -> str | None:
    if word in dictionary:
        return dictionary[word]
    if word.isalpha() and len(word) <= MAX_ACRONYM_LETTERS:
        letters = [dictionary.get(letter) for letter in word]
        if all(letters):
            return " ".join(p for p in letters if p)
    return None


@dataclass(frozen=True)
class Grammar:
    text: str
    added_words: dict[str, str]
    sentences: int
    left_out: dict[str, int]


def build_grammar(corpus: Corpus, dictionary: dict[str, str], min_count: int) -> Grammar:
    """The JSGF grammar of the corpus (see the module docstring)."""
    added: dict[str, str] = {}
    left_out: Counter[str] = Counter()

    def known(phrase: str) -> bool:
        for word in phrase.split():
            if word.startswith("<") and word[1:-1] in ENTITY_RULES:
                continue
            if word not in dictionary:
                pronunciation = _pronounce(word, dictionary)
                if pronunciation is None:
                    return False
                added[word] = pronunciation
        return True

    rules: dict[str, list[str]] = {}
    for name, phrases in corpus.entities.items():
        kept = sorted(p for p, n in phrases.items() if n >= min_count and known(p))
        left_out[f"{name} phrases heard fewer than {min_count} times or unpronounceable"] += len(
            phrases
        ) - len(kept)
        if kept:
            rules[name] = kept
    if corpus.number_lengths:
        rules["number"] = [" ".join(["<digit>"] * n) for n in sorted(corpus.number_lengths)]
    sentences = []
    for sentence, count in sorted(corpus.sentences.items()):
        if count < min_count:
            left_out[f"sentences heard fewer than {min_count} times"] += 1
        elif any(
            w.startswith("<") and w[1:-1] in ENTITY_RULES and w[1:-1] not in rules
            for w in sentence.split()
        ):
            left_out["sentences whose entity rule is empty"] += 1
        elif not known(sentence):
            left_out["sentences with words the dictionary lacks"] += 1
        else:
            sentences.append(sentence)
    if not sentences:
        raise cli.BadInput(
            f"no sentence was heard at least {min_count} times with words the dictionary "
            f"knows ({sum(corpus.sentences.values())} transcripts read)"
        )
    lines = [
        "#JSGF V1.0;",
        "grammar domain;",
        f"public <{ROOT_RULE}> = {' | '.join(_escape(s) for s in sentences)};",
    ]
    if "number" in rules:
        lines.append(f"<digit> = {' | '.join(DIGITS)};")
    for name, alternatives in sorted(rules.items()):
        lines.append(f"<{name}> = {' | '.join(_escape(a) for a in alternatives)};")
    kept_reasons = {reason: n for reason, n in left_out.items() if n}
    return Grammar("\n".join(lines) + "\n", added, len(sentences), kept_reasons)


def _escape(phrase: str) -> str:
    # JSGF tokens with an apostrophe ("can't") are fine as they are; group each
    # alternative so "a b | c" cannot be misread.
    return f"( {phrase} )"


def build(database_url: str | None, options: Options, out: Path) -> dict[str, object]:
    """Writes the model directory `out`; returns its model.json."""
    if options.kind not in KINDS:
        raise cli.BadInput(f"kind must be one of {', '.join(KINDS)}, got {options.kind!r}")
    if options.min_count < 1:
        raise cli.BadInput(f"min_count must be >= 1, got {options.min_count}")
    out.mkdir(parents=True, exist_ok=True)
    if options.kind == "default":
        model: dict[str, object] = {"kind": "default", "language": options.language}
        write_json(out / MODEL_FILE, model)
        return model
    if options.language not in SUPPORTED_LANGUAGES:
        raise cli.BadInput(
            f"language {options.language!r} has no pocketsphinx model here; "
            f"supported: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    if database_url is None:
        raise cli.BadInput(f"{DB_ENV} is not set: the step needs the calls database URL")
    # Imported here: kind=default needs no recogniser in the step.
    from pocketsphinx import get_model_path

    dictionary = load_dictionary(Path(get_model_path("en-us")) / "cmudict-en-us.dict")
    corpus = read_corpus(database_url, options.language)
    if not corpus.turns:
        raise cli.BadInput(f"the calls database has no caller transcript in {options.language!r}")
    grammar = build_grammar(corpus, dictionary, options.min_count)
    (out / GRAMMAR_FILE).write_text(grammar.text, encoding="utf-8")
    (out / WORDS_FILE).write_text(
        "".join(f"{w} {p}\n" for w, p in sorted(grammar.added_words.items())), encoding="utf-8"
    )
    model = {
        "kind": "grammar",
        "language": options.language,
        "grammar": GRAMMAR_FILE,
        "words": WORDS_FILE,
        "rule": ROOT_RULE,
        "transcripts": corpus.turns,
        "sentences": grammar.sentences,
        "min_count": options.min_count,
        "added_words": sorted(grammar.added_words),
        "left_out": grammar.left_out,
    }
    write_json(out / MODEL_FILE, model)
    logger.info(
        "grammar of %d sentences from %d %s transcripts; left out: %s",
        grammar.sentences,
        corpus.turns,
        options.language,
        grammar.left_out,
    )
    return model


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="build_asr_model", description=__doc__)
    parser.add_argument("--language", default=Options.language)
    parser.add_argument("--kind", default=Options.kind)
    parser.add_argument("--min-count", type=cli.integer, default=Options.min_count)
    parser.add_argument("--model", type=Path, required=True, help="output: model directory")
    parser.add_argument("--sentence-count", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, builds the model; returns the exit code."""

    def body() -> None:
        args = _parse_args(argv)
        options = Options(args.language.strip(), args.kind.strip(), args.min_count)
        database_url = os.environ.get(DB_ENV, "").strip() or None
        model = build(database_url, options, output_path(args.model / MODEL_FILE).parent)
        write_parameter(args.sentence_count, int(str(model.get("sentences", 0))))

    return cli.run("build_asr_model", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
