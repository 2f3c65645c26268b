"""Generated conversations' identity, shared by the components that push them as annotation
tasks (push_annotation_tasks: task key "conversation:<key>") and record them in the metrics
database (record_conversations: generated_conversations.conversation_key), so a recorded
conversation names its task and a rerun adds neither twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

_KEY_HEX_DIGITS = 32


def conversation_key(record: Mapping[str, Any]) -> str:
    """A hash of a generate_conversations record's situation, index, generator, prompt and
    turns: the same conversation pushed or recorded again has the same key."""
    identity = {
        "situation_id": record.get("situation_id"),
        "index": record.get("index"),
        "generator": record.get("generator"),
        "prompt": record.get("prompt"),
        "turns": record.get("turns"),
    }
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_KEY_HEX_DIGITS]
