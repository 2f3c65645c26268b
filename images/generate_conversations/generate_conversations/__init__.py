"""generate_conversations: sample conversations for the metrics database's LLM situations.

The image's entrypoint (`python3 -m generate_conversations`), one module per job:

- `situations`: the situations from the metrics database (ids or all valid ones, a limit).
- `prompts`: the system message and the user prompt template.
- `conversation`: the conversation JSON schema, its check, the JSON line per conversation.
- `templates`: the deterministic offline generator (demo vocabulary).
- `llm_generator`: the OpenAI-compatible generator (skit_components.llm), with drops counted.
- `cli`: arguments, generator choice, the outputs, `main(argv) -> int`.
"""

from __future__ import annotations

from .cli import GENERATORS, NO_ENDPOINT, Options, Outcome, generate, main
from .conversation import (
    CONVERSATION_SCHEMA,
    RESPONSE_FORMAT,
    Conversation,
    Malformed,
    Turn,
    conversation_record,
    parse_conversation,
)
from .llm_generator import Drop, Generated, LlmGenerator
from .prompts import DEFAULT_TEMPLATE, FIELDS, SYSTEM, PromptTemplate, prompt_template
from .situations import Situation, read_situations
from .templates import CALLER_SAYS, CONFIRM, template_conversation

__all__ = [
    "CALLER_SAYS",
    "CONFIRM",
    "CONVERSATION_SCHEMA",
    "DEFAULT_TEMPLATE",
    "FIELDS",
    "GENERATORS",
    "NO_ENDPOINT",
    "RESPONSE_FORMAT",
    "SYSTEM",
    "Conversation",
    "Drop",
    "Generated",
    "LlmGenerator",
    "Malformed",
    "Options",
    "Outcome",
    "PromptTemplate",
    "Situation",
    "Turn",
    "conversation_record",
    "generate",
    "main",
    "parse_conversation",
    "prompt_template",
    "read_situations",
    "template_conversation",
]
