"""What a generated conversation is: the JSON schema the LLM is asked to follow (OpenAI
structured output), the same rules checked on every answer, and the JSON line written
per conversation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .situations import Situation

ROLES = ("bot", "user")
MIN_TURNS = 2
MAX_TURNS = 40
MAX_TEXT_CHARS = 2000
"""Bounds of a usable conversation; an answer outside them is malformed (retried, then
dropped)."""

CONVERSATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "turns": {
            "type": "array",
            "minItems": MIN_TURNS,
            "maxItems": MAX_TURNS,
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": list(ROLES)},
                    "text": {"type": "string"},
                },
                "required": ["role", "text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["turns"],
    "additionalProperties": False,
}
"""Sent as `response_format: {"type": "json_schema", ...}` (strict: every property
required, no others, as OpenAI's structured outputs demand)."""

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "conversation", "strict": True, "schema": CONVERSATION_SCHEMA},
}

_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


class Malformed(ValueError):
    """An answer that is not a conversation by CONVERSATION_SCHEMA."""


@dataclass(frozen=True)
class Turn:
    role: str
    text: str


@dataclass(frozen=True)
class Conversation:
    situation: Situation
    index: int
    """0 .. conversations_per_situation - 1."""
    turns: tuple[Turn, ...]
    generator: str
    """`template` or `llm:<model>`."""
    prompt: str
    """What the generator was asked (for the template generator, what an LLM would be)."""
    tokens: int = 0


def parse_conversation(content: str) -> tuple[Turn, ...]:
    """The turns of a model's answer (a JSON object, possibly in a ```json fence).

    Raises:
        Malformed: not JSON, or not a conversation by CONVERSATION_SCHEMA.
    """
    fenced = _FENCED.search(content)
    text = fenced.group(1) if fenced else content.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON ({exc.msg})") from None
    if not isinstance(value, dict) or set(value) != {"turns"}:
        raise Malformed('not an object with exactly the key "turns"')
    turns = value["turns"]
    if not isinstance(turns, list) or not MIN_TURNS <= len(turns) <= MAX_TURNS:
        raise Malformed(f"turns must be a list of {MIN_TURNS} to {MAX_TURNS} turns")
    parsed = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or set(turn) != {"role", "text"}:
            raise Malformed(f'turns[{i}] must have exactly "role" and "text"')
        role, said = turn["role"], turn["text"]
        if role not in ROLES:
            raise Malformed(f"turns[{i}].role must be bot or user, got {role!r}")
        if not isinstance(said, str) or not said.strip() or len(said) > MAX_TEXT_CHARS:
            raise Malformed(f"turns[{i}].text must be non-empty text of at most {MAX_TEXT_CHARS}")
        parsed.append(Turn(role, " ".join(said.split())))
    if {t.role for t in parsed} != set(ROLES):
        raise Malformed("a conversation needs both bot and user turns")
    return tuple(parsed)


def conversation_record(conversation: Conversation) -> dict[str, Any]:
    """The JSON line written for one conversation."""
    s = conversation.situation
    return {
        "situation_id": s.id,
        "situation": s.situation,
        "scenario": s.scenario,
        "scenario_category": s.scenario_category,
        "index": conversation.index,
        "generator": conversation.generator,
        "prompt": conversation.prompt,
        "turns": [{"role": t.role, "text": t.text} for t in conversation.turns],
    }
