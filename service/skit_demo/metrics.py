"""Demo rows of the metrics database: LLM situations (some already invalid), the prompts
generated for some of them, and the conversations those prompts produced."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from skit_demo import vocabulary as v
from skit_demo.calls import Row

SITUATION_COLUMNS = (
    "id",
    "situation",
    "scenario",
    "scenario_category",
    "is_valid",
    "created_at",
    "invalidated_at",
)
PROMPT_COLUMNS = (
    "id",
    "situation_id",
    "client_id",
    "template_id",
    "project_name",
    "model",
    "temperature",
    "n_iter",
    "n_choice",
    "prompt",
    "created_at",
)
CONVERSATION_COLUMNS = (
    "id",
    "prompt_id",
    "situation_id",
    "conversation",
    "project_name",
    "created_at",
)

INVALID_SHARE = 0.15

_CATEGORY_CLIENT = {
    "debt_collection": (101, v.DEBT_COLLECTION),
    "insurance_renewal": (103, v.INSURANCE_RENEWAL),
    "customer_support": (104, v.CUSTOMER_SUPPORT),
}
_SCENARIO_INTENT = {
    "promise to pay": "promise_to_pay",
    "already paid": "already_paid",
    "dispute": "dispute",
    "callback": "request_callback",
    "wrong number": "wrong_number",
    "renewal": "_confirm_",
    "objection": "too_expensive",
    "network issue": "report_issue",
    "billing": "billing_query",
}
_SECOND_STATE = {
    v.DEBT_COLLECTION: "PURPOSE",
    v.INSURANCE_RENEWAL: "POLICY_REMINDER",
    v.CUSTOMER_SUPPORT: "INIT",
}


@dataclass(frozen=True)
class MetricsRows:
    situations: list[Row]
    prompts: list[Row]
    conversations: list[Row]

    @property
    def invalid_situations(self) -> int:
        return sum(1 for row in self.situations if not row[4])


def metrics_rows(
    rng: random.Random, *, start: datetime, end: datetime, timestamp: Callable[[datetime], Any]
) -> MetricsRows:
    """Situations numbered from 1 in a seed-dependent order; about INVALID_SHARE of them
    invalid, and prompts with two generated conversations for about half of the valid ones."""
    span = (end - start).total_seconds()

    def moment() -> datetime:
        return start + timedelta(seconds=round(rng.uniform(0, span)))

    combos = [
        (situation if not mood else f"{situation}. {mood}", scenario, category)
        for category, scenario, situations in v.SITUATION_SCENARIOS
        for situation in situations
        for mood in v.SITUATION_MOODS
    ]
    rng.shuffle(combos)
    situations = []
    prompts: list[Row] = []
    conversations: list[Row] = []
    for situation_id, (situation, scenario, category) in enumerate(combos, start=1):
        created = moment()
        valid = rng.random() >= INVALID_SHARE
        invalidated = None
        if not valid:
            invalidated = timestamp(created + timedelta(hours=rng.uniform(1, 72)))
        situations.append(
            (situation_id, situation, scenario, category, valid, timestamp(created), invalidated)
        )
        if not valid or rng.random() < 0.5:
            continue
        client_id, template_id = _CATEGORY_CLIENT[category]
        prompt_id = len(prompts) + 1
        project = f"llm-{category.replace('_', '-')}"
        client = next(c for c in v.CLIENTS if c.id == client_id).name["en"]
        prompt = (
            f"You are simulating a phone call between the voice bot of {client} and a customer. "
            f"Scenario: {scenario}. Situation: {situation}. Write the conversation as "
            "alternating bot and user turns."
        )
        n_choice = 2
        prompts.append(
            (
                prompt_id,
                situation_id,
                client_id,
                template_id,
                project,
                "gpt-4o-mini",
                rng.choice((0.5, 0.7, 0.9)),
                1,
                n_choice,
                prompt,
                timestamp(created),
            )
        )
        for _ in range(n_choice):
            conversation = _conversation(rng, client, template_id, _SCENARIO_INTENT[scenario])
            conversations.append(
                (
                    len(conversations) + 1,
                    prompt_id,
                    situation_id,
                    json.dumps(conversation, ensure_ascii=False),
                    project,
                    timestamp(created),
                )
            )
    return MetricsRows(situations, prompts, conversations)


def _conversation(
    rng: random.Random, client: str, template_id: int, intent: str
) -> list[dict[str, Any]]:
    """A short English bot/user exchange reaching the situation's point."""
    context = {
        "client": client,
        "amount": f"{rng.randrange(15, 450) * 100:,}",
        "digits": f"{rng.randrange(10_000):04d}",
        "date": "15 November",
    }
    says = v.CALLER_SAYS["en"]
    fill = {"date": "next friday", "time": "after six", "number": "4821"}
    turns = [{"role": "bot", "text": v.bot_prompt(template_id, "en", "INIT").format(**context)}]
    second = _SECOND_STATE[template_id]
    if second != "INIT":
        turns.append({"role": "user", "text": rng.choice(says["_confirm_"])})
        text = v.bot_prompt(template_id, "en", second).format(**context)
        turns.append({"role": "bot", "text": text})
    turns.append({"role": "user", "text": rng.choice(says[intent]).format(**fill)})
    return turns
