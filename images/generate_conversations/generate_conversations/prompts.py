"""The prompt sent per conversation: a fixed system message (the output format) and a user
message from a template with the situation's fields."""

from __future__ import annotations

import string
from dataclasses import dataclass

from skit_components import cli

from .conversation import MAX_TURNS, MIN_TURNS
from .situations import Situation

FIELDS = ("situation", "scenario", "scenario_category", "situation_id", "index", "count")
"""The placeholders a prompt template may use, as {name}."""

DEFAULT_TEMPLATE = (
    "Scenario category: {scenario_category}\nScenario: {scenario}\nSituation: {situation}\n"
    "Write sample conversation {index} of {count} for this situation between the company's "
    "voice bot and the customer; make it differ from the others."
)

SYSTEM = (
    "You write realistic sample phone conversations between a company's voice bot and a "
    "customer, used to test and train the bot. The bot speaks first; turns alternate; the "
    "customer talks the way callers do on the phone. Answer with one JSON object only: "
    '{"turns": [{"role": "bot" or "user", "text": "..."}, ...]}, '
    f"with {MIN_TURNS} to {MAX_TURNS} turns."
)


@dataclass(frozen=True)
class PromptTemplate:
    text: str

    def render(self, situation: Situation, index: int, count: int) -> str:
        """The user message for conversation `index` (0-based) of `count`."""
        return self.text.format(
            situation=situation.situation,
            scenario=situation.scenario,
            scenario_category=situation.scenario_category,
            situation_id=situation.id,
            index=index + 1,
            count=count,
        )


def prompt_template(text: str) -> PromptTemplate:
    """The template given (DEFAULT_TEMPLATE when blank), checked.

    Raises:
        cli.BadInput: unknown placeholders, or not a valid format string.
    """
    if not text.strip():
        return PromptTemplate(DEFAULT_TEMPLATE)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise cli.BadInput(
            f"prompt_template: {exc} (write a literal brace as {{{{ or }}}})"
        ) from None
    unknown = sorted(n for n in names if n not in FIELDS)
    if unknown:
        raise cli.BadInput(
            f"prompt_template: unknown placeholders {unknown}; use {', '.join(FIELDS)}"
        )
    if "situation" not in names:
        raise cli.BadInput("prompt_template must contain {situation}")
    return PromptTemplate(text)
