"""prepare_slu_dataset: tagged utterances -> intent aliases and removals -> a stratified
train/test split.

The input is any CSV with an utterance column (utterance, text or primary_utterance) and an
intent column (intent, or tag in the annotation tools' JSON shapes): a tagged dataset, or
the turns CSV of fetch_calls, whose predicted intents then serve as (noisy) tags. Rows
without an intent or text are skipped and counted.

The alias file (the bundled intent_aliases.yaml, or YAML text given as input) maps older
intent names to their canonical intent and may list intents to remove:

    aliases:
      promise_to_pay: [ptp, will_pay]
    remove: [_oos_]

An alias file given as input is checked against the data: an alias group none of whose
names occurs in it, or a removal of an intent it does not have, fails the step (the file
most likely has a typo or belongs to another client). The bundled file covers every demo
client, so its groups that a selection of the data lacks are only logged. Removals are
always checked.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skit_components import cli
from skit_components.outputs import output_path, write_json, write_parameter
from skit_components.slu import (
    DataError,
    Example,
    read_tagged_csv,
    stratified_split,
    write_examples_csv,
)

logger = logging.getLogger("prepare_slu_dataset")

BUNDLED_ALIASES = Path(__file__).resolve().parent / "intent_aliases.yaml"
_SHOWN = 12


@dataclass(frozen=True)
class AliasFile:
    canonical: dict[str, str]
    """Alias -> canonical intent."""
    groups: dict[str, tuple[str, ...]]
    """Canonical intent -> its aliases, as written."""
    remove: tuple[str, ...] = ()
    source: str = ""
    strict: bool = True
    """Fail on alias groups the data does not have (a file given for this data), rather
    than log them (the bundled file, which covers every demo client)."""


def parse_alias_file(text: str, source: str, *, strict: bool = True) -> AliasFile:
    """Parses and checks an alias file.

    Raises:
        cli.BadInput: not YAML, unknown fields, names that are not strings, an alias of two
            intents, or an alias that is itself a canonical intent.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise cli.BadInput(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise cli.BadInput(f"{source}: expected a mapping with aliases and remove")
    unknown = sorted(set(map(str, raw)) - {"aliases", "remove"})
    if unknown:
        raise cli.BadInput(f"{source}: unknown field {unknown[0]!r} (known: aliases, remove)")
    aliases = raw.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise cli.BadInput(f"{source}: aliases: expected a mapping of intent -> [aliases]")
    canonical: dict[str, str] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for intent, names in aliases.items():
        intent = _name(intent, f"{source}: aliases")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list):
            raise cli.BadInput(f"{source}: aliases: {intent}: expected a list of intent names")
        group = tuple(_name(n, f"{source}: aliases: {intent}") for n in names)
        for alias in group:
            if alias in canonical and canonical[alias] != intent:
                raise cli.BadInput(
                    f"{source}: {alias!r} is an alias of both {canonical[alias]!r} and {intent!r}"
                )
            canonical[alias] = intent
        groups[intent] = group
    chained = sorted(set(canonical) & set(groups))
    if chained:
        raise cli.BadInput(
            f"{source}: {chained[0]!r} is both an alias (of {canonical[chained[0]]!r}) and a "
            "canonical intent with aliases of its own"
        )
    remove = raw.get("remove") or []
    if not isinstance(remove, list):
        raise cli.BadInput(f"{source}: remove: expected a list of intent names")
    return AliasFile(
        canonical,
        groups,
        tuple(_name(n, f"{source}: remove") for n in remove),
        source,
        strict,
    )


def _name(value: Any, where: str) -> str:
    if isinstance(value, bool):
        # YAML 1.1 reads a bare yes/no/on/off as a boolean.
        raise cli.BadInput(f'{where}: {value!r} is a boolean: quote intent names like "yes"')
    if not isinstance(value, str) or not value.strip():
        raise cli.BadInput(f"{where}: expected an intent name, got {value!r}")
    return value.strip()


def read_alias_file(aliases_yaml: str) -> AliasFile:
    if aliases_yaml.strip():
        return parse_alias_file(aliases_yaml, "aliases_yaml")
    text = BUNDLED_ALIASES.read_text(encoding="utf-8")
    return parse_alias_file(text, BUNDLED_ALIASES.name, strict=False)


@dataclass(frozen=True)
class Mapped:
    examples: list[Example]
    aliased: dict[str, int]
    """Alias -> how many examples were renamed from it."""
    unused_aliases: list[str]
    removed: dict[str, int]
    intents_before: list[str] = field(default_factory=list)


def apply_aliases(examples: list[Example], aliases: AliasFile, remove_intents: list[str]) -> Mapped:
    """Renames aliases to their canonical intents, then drops the removed intents.

    Raises:
        cli.BadInput: an intent of the alias file or of the removals is not in the data, or
            nothing is left.
    """
    present = Counter(e.intent for e in examples)
    unknown_groups = [
        intent
        for intent, group in aliases.groups.items()
        if not ({intent, *group} & present.keys())
    ]
    if unknown_groups and not aliases.strict:
        logger.warning(
            "%s: intents not in this data, skipped: %s", aliases.source, _show(unknown_groups)
        )
    elif unknown_groups:
        raise cli.BadInput(
            f"{aliases.source} names intents that are not in the dataset: "
            f"{_show(unknown_groups)} (neither they nor their aliases occur; the dataset has "
            f"{_show(sorted(present))})"
        )
    unused = sorted(a for a in aliases.canonical if a not in present)
    if unused:
        logger.warning("aliases that do not occur in the dataset: %s", _show(unused))
    aliased = Counter(e.intent for e in examples if e.intent in aliases.canonical)
    mapped = [
        Example(e.text, aliases.canonical.get(e.intent, e.intent), e.language) for e in examples
    ]
    after = Counter(e.intent for e in mapped)
    removals = sorted(set(aliases.remove) | set(remove_intents))
    # A removal may name the canonical intent or one of its aliases.
    removals = sorted({aliases.canonical.get(r, r) for r in removals})
    missing = [r for r in removals if r not in after]
    if missing:
        raise cli.BadInput(
            f"cannot remove intents that are not in the dataset: {_show(missing)} "
            f"(the dataset has {_show(sorted(after))})"
        )
    kept = [e for e in mapped if e.intent not in removals]
    if not kept:
        raise cli.BadInput(f"no examples are left after removing {_show(removals)}")
    return Mapped(
        kept,
        dict(sorted(aliased.items())),
        unused,
        {r: after[r] for r in removals},
        sorted(present),
    )


def _show(names: list[str]) -> str:
    if len(names) <= _SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:_SHOWN])}, ... ({len(names)} in all)"


def prepare(
    dataset: Path,
    *,
    aliases_yaml: str,
    remove_intents: list[str],
    test_percent: int,
    seed: int,
    train_csv: Path,
    test_csv: Path,
) -> dict[str, Any]:
    """Writes the train and test CSVs; returns the summary.

    Raises:
        cli.BadInput: bad parameters, alias file or data.
    """
    if not 1 <= test_percent <= 100:
        raise cli.BadInput(f"test_percent must be between 1 and 100, got {test_percent}")
    aliases = read_alias_file(aliases_yaml)
    try:
        examples, read = read_tagged_csv(dataset)
    except DataError as exc:
        raise cli.BadInput(str(exc)) from None
    if not examples:
        raise cli.BadInput(
            f"the dataset has no tagged utterances ({read.rows} rows: {read.skipped_untagged} "
            f"without an intent, {read.skipped_empty_text} without text)"
        )
    mapped = apply_aliases(examples, aliases, remove_intents)
    split = stratified_split(mapped.examples, test_percent, seed)
    if test_percent < 100 and len({e.intent for e in split.train}) < 2:
        raise cli.BadInput("the training set would have fewer than two intents")
    write_examples_csv(output_path(train_csv), split.train)
    write_examples_csv(output_path(test_csv), split.test)
    train_counts = Counter(e.intent for e in split.train)
    test_counts = Counter(e.intent for e in split.test)
    intents = sorted(train_counts.keys() | test_counts.keys())
    if split.train_only:
        logger.warning(
            "intents with one example, trained on but not tested: %s", _show(split.train_only)
        )
    logger.info(
        "%d examples of %d intents: %d train, %d test (%d%%, seed %d)",
        len(mapped.examples),
        len(intents),
        len(split.train),
        len(split.test),
        test_percent,
        seed,
    )
    return {
        "rows_read": read.rows,
        "text_column": read.text_column,
        "label_column": read.label_column,
        "skipped_untagged": read.skipped_untagged,
        "skipped_empty_text": read.skipped_empty_text,
        "alias_file": aliases.source,
        "aliased": mapped.aliased,
        "unused_aliases": mapped.unused_aliases,
        "removed": mapped.removed,
        "test_percent": test_percent,
        "seed": seed,
        "train_rows": len(split.train),
        "test_rows": len(split.test),
        "train_only": split.train_only,
        "intents": {i: {"train": train_counts[i], "test": test_counts[i]} for i in intents},
    }


def _parse_args(argv: list[str] | None) -> Any:
    parser = cli.ArgumentParser(prog="prepare_slu_dataset", description=__doc__)
    parser.add_argument("--dataset", type=Path, required=True, help="input: tagged CSV")
    parser.add_argument("--aliases-yaml", default="")
    parser.add_argument("--remove-intents", type=cli.json_list(str), default=[])
    parser.add_argument("--test-percent", type=cli.integer, default=15)
    parser.add_argument("--seed", type=cli.integer, default=0)
    parser.add_argument("--train", type=Path, required=True, help="output: train CSV")
    parser.add_argument("--test", type=Path, required=True, help="output: test CSV")
    parser.add_argument("--summary", type=Path, required=True, help="output: JSON")
    parser.add_argument("--train-count", type=Path, required=True, help="output")
    parser.add_argument("--test-count", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body() -> None:
        args = _parse_args(argv)
        summary = prepare(
            args.dataset,
            aliases_yaml=args.aliases_yaml,
            remove_intents=args.remove_intents,
            test_percent=args.test_percent,
            seed=args.seed,
            train_csv=args.train,
            test_csv=args.test,
        )
        write_json(args.summary, summary)
        write_parameter(args.train_count, summary["train_rows"])
        write_parameter(args.test_count, summary["test_rows"])

    return cli.run("prepare_slu_dataset", body)


if __name__ == "__main__":
    # Progress goes to stdout: stderr carries only the one-line failure reason.
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
