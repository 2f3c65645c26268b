"""The demo model registry and its production SLU model.

The production intent classifier of the demo is trained, deterministically, on a sample of
its own: a few hundred calls simulated with another seed, months before the demo calls,
whose predicted intents (aliases mapped to canonical names) serve as tags, as an older
model bootstrapped from production traffic would have been: less data and noisier tags
than the annotation store has now. So retrain-slu has a real model to compare with, on
data neither model saw, and the retrained one usually wins.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from skit_components.model_registry import LocalModelRegistry, ModelRegistry
from skit_components.slu import MODEL_KIND, Example, save_model, train
from skit_demo import vocabulary as v
from skit_demo.calls import CALL_COLUMNS, TURN_COLUMNS, CallSimulator
from skit_demo.generator import DEMO_END

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
PRODUCTION_CALLS = 500
"""Simulated calls the production model learns from (about 1,100 tagged utterances)."""
PRODUCTION_TRAINED_AT = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
"""A fixed time, so that the model's bytes and version are the same on every machine."""
_TEMP = re.compile(r"^\.models\.tmp-(?P<pid>\d+)-[0-9a-f]+$")
_LANGUAGE = CALL_COLUMNS.index("language")
_UTTERANCES = TURN_COLUMNS.index("utterances")
_INTENT = TURN_COLUMNS.index("intent")


def production_training_set(seed: int = 0, calls: int = PRODUCTION_CALLS) -> list[Example]:
    """Tagged utterances of simulated calls: their predictions, canonical intent names."""
    canonical = {alias: intent for intent, aliases in v.INTENT_ALIASES.items() for alias in aliases}
    simulator = CallSimulator(
        random.Random(f"slu-production:{seed}"),
        calls=calls,
        start=DEMO_END - timedelta(days=120),
        days=60,
        timestamp=lambda moment: moment,
    )
    examples = []
    for call in simulator:
        language = call.call[_LANGUAGE]
        for turn in call.turns:
            intent: str | None = turn[_INTENT]
            if intent is None:
                continue
            segments = json.loads(turn[_UTTERANCES])
            text = segments[0][0]["transcript"] if segments and segments[0] else ""
            if text:
                examples.append(Example(text, canonical.get(intent, intent), language))
    return examples


def write_production_model(registry: ModelRegistry, seed: int = 0) -> str:
    """Trains the demo's production SLU model, registers it and points production at it
    (when there is no production model yet); returns its version."""
    examples = production_training_set(seed)
    trained = train(examples, seed=seed)
    with tempfile.TemporaryDirectory(prefix="slu-production-") as tmp:
        metadata = save_model(
            trained,
            examples,
            Path(tmp) / "model",
            seed=seed,
            created_at=PRODUCTION_TRAINED_AT,
            training_data={
                "source": (
                    f"{PRODUCTION_CALLS} simulated calls (seed slu-production:{seed}), "
                    "their predicted intents as tags"
                ),
            },
        )
        registry.register(MODEL_KIND, metadata.version, Path(tmp) / "model")
    registry.promote(MODEL_KIND, metadata.version, expected=None)
    return metadata.version


def ensure_demo_models(demo_root: Path, seed: int = 0) -> str:
    """Creates the demo model registry `demo_root/models` with its production SLU model
    unless it exists; returns its URL (MODEL_REGISTRY_URL).

    Built under a temporary name and renamed into place, so an existing registry is always
    complete; a concurrent first start that loses the race discards its own.
    """
    root = demo_root.resolve() / MODELS_DIR
    for path in demo_root.resolve().iterdir():
        match = _TEMP.match(path.name)
        if match and not _alive(int(match.group("pid"))):
            shutil.rmtree(path, ignore_errors=True)
    if not root.exists():
        temporary = root.with_name(f".{MODELS_DIR}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            temporary.mkdir(parents=True)
            version = write_production_model(LocalModelRegistry(temporary), seed)
            try:
                os.rename(temporary, root)
            except OSError:
                # A concurrent first start renamed its registry into place first.
                if not root.is_dir():
                    raise
            logger.info("created the demo model registry in %s: production SLU %s", root, version)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return root.as_uri()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
