"""SLU retraining at scale: split, train and evaluate the intent classifier on 100,000 tagged
utterances (what the train_slu and evaluate_slu steps do, in process), against a target of
60 s, and its macro F1 against a majority-class baseline measured on the same test set.

The utterances come from the demo call simulator (ASR n-best transcripts in four
languages), tagged with the simulated SLU's predictions mapped to canonical intents: noisy
tags, as real tagged data is."""

from __future__ import annotations

import json
import random
import time
from datetime import date

from benchmarks.report import Figure
from skit_components.slu import (
    Example,
    evaluate,
    majority_baseline,
    stratified_split,
    train,
)
from skit_demo import vocabulary as v
from skit_demo.calls import CALL_COLUMNS, TURN_COLUMNS, CallSimulator

TARGET_SECONDS = 60.0
_LANGUAGE = CALL_COLUMNS.index("language")
_UTTERANCES = TURN_COLUMNS.index("utterances")
_INTENT = TURN_COLUMNS.index("intent")


def tagged_utterances(count: int, seed: int = 0) -> list[Example]:
    """`count` tagged caller utterances of simulated calls."""
    canonical = {alias: intent for intent, aliases in v.INTENT_ALIASES.items() for alias in aliases}
    # About 2.2 tagged utterances per call; simulate enough, then cut.
    simulator = CallSimulator(
        random.Random(f"bench-slu:{seed}"),
        calls=count // 2 + 1000,
        start=date(2026, 9, 1),
        days=60,
        timestamp=lambda moment: moment,
    )
    examples: list[Example] = []
    for call in simulator:
        for turn in call.turns:
            segments = json.loads(turn[_UTTERANCES])
            if turn[_INTENT] is None or not segments or not segments[0]:
                continue
            text = segments[0][0]["transcript"]
            intent = canonical.get(turn[_INTENT], turn[_INTENT])
            examples.append(Example(text, intent, call.call[_LANGUAGE]))
            if len(examples) == count:
                return examples
    raise AssertionError(f"the simulation gave only {len(examples)} utterances")


def run(utterances: int = 100_000, test_percent: int = 15) -> list[Figure]:
    data = tagged_utterances(utterances)
    started = time.perf_counter()
    split = stratified_split(data, test_percent, seed=0)
    trained = train(split.train)
    trained_at = time.perf_counter()
    scores = evaluate(trained.model, split.test)
    elapsed = time.perf_counter() - started
    baseline = majority_baseline([e.intent for e in split.train], [e.intent for e in split.test])
    return [
        Figure(
            name=f"Retrain SLU: split, train and evaluate {utterances:,} tagged utterances",
            value=elapsed,
            unit="s",
            baseline=None,
            detail=f"train {trained_at - started:.1f} s on {len(split.train):,} "
            f"({trained.distinct_utterances:,} distinct), evaluate "
            f"{elapsed - (trained_at - started):.1f} s on {len(split.test):,}",
            target=f"<= {TARGET_SECONDS:.0f} s",
            met=elapsed <= TARGET_SECONDS,
        ),
        Figure(
            name="Retrain SLU: macro F1 on the held-out 15%",
            value=scores.macro_f1,
            unit="macro F1",
            baseline=baseline.macro_f1,
            detail=f"{len(scores.labels)} intents, accuracy {scores.accuracy:.3f}; baseline: "
            f"always the most frequent intent (accuracy {baseline.accuracy:.3f})",
            target="> 5 x the majority-class baseline",
            met=scores.macro_f1 > 5 * baseline.macro_f1,
        ),
    ]
