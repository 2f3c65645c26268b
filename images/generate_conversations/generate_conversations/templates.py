"""The deterministic template generator: conversations assembled from the demo vocabulary
(the demo bots' prompts and the demo callers' English phrases, as in skit_demo), chosen
by a seeded random generator per situation and index, so the same inputs give the same
conversations. It runs when no LLM endpoint is configured, offline."""

from __future__ import annotations

import random

from .conversation import Conversation, Turn
from .prompts import SYSTEM, PromptTemplate
from .situations import Situation

GENERATOR = "template"

_CLIENTS = {
    "debt_collection": "Kaveri Finance",
    "insurance_renewal": "Nirmal Insurance",
    "customer_support": "Metro Telecom",
}
_OPENINGS = {
    "debt_collection": (
        "Hello, this is an automated call from {client}. Am I speaking with the account holder?",
        "Your loan EMI of rupees {amount} for the account ending {digits} is overdue. "
        "When will you be able to pay?",
    ),
    "insurance_renewal": (
        "Hello, I am calling from {client}. Am I speaking with the policy holder?",
        "Your health insurance policy number {digits} expires on {date}. The renewal premium "
        "is rupees {amount}. Would you like to renew now?",
    ),
    "customer_support": ("Welcome to {client} customer care. How can I help you today?",),
}
_GENERIC_OPENING = ("Hello, this is an automated call. Am I speaking with the customer?",)
CONFIRM = ("yes", "yes speaking", "yeah")
CALLER_SAYS = {
    "promise to pay": ("i will pay {date}", "i will make the payment {date}", "i'll pay by {date}"),
    "already paid": ("i have already paid", "i paid yesterday", "payment is done already"),
    "dispute": ("i never took this loan", "this amount is wrong", "i have not taken any loan"),
    "callback": ("call me later", "i am busy right now call me back", "can you call me {time}"),
    "wrong number": (
        "wrong number",
        "you have the wrong number",
        "there is no one by that name here",
    ),
    "renewal": CONFIRM,
    "objection": (
        "the premium is too high",
        "it is too expensive",
        "i can't afford it this year",
    ),
    "network issue": (
        "my internet is not working",
        "no network since morning",
        "my sim is not working",
    ),
    "billing": ("why is my bill so high", "i was charged extra this month", "explain my bill"),
}
"""The demo callers' English phrases per scenario (skit_demo.vocabulary.CALLER_SAYS["en"]
of the scenario's intent; a test keeps them in step)."""
_BOT_REPLIES = {
    "promise to pay": "Thank you. I have noted that you will pay {date}.",
    "already paid": "Thank you. We will check the payment and update your account.",
    "dispute": "I understand. I am raising a dispute and our team will call you back.",
    "callback": "Sure, we will call you back {time}.",
    "wrong number": "Sorry for the trouble. We will update our records.",
    "renewal": "Great. I am sending you the payment link by SMS now.",
    "objection": "I understand. Our team will call you with other plans.",
    "network issue": "Sorry about that. I have raised a complaint and it will be fixed soon.",
    "billing": "Let me explain your bill. I am sending the details by SMS.",
}
_GENERIC_REPLY = "Thank you. I have noted that."
_CLOSING = "Thank you for your time. Have a good day."
_FILL = {"date": ("next friday", "tomorrow", "on monday"), "time": ("after six", "tomorrow")}


def template_conversation(
    situation: Situation, index: int, count: int, template: PromptTemplate, seed: int
) -> Conversation:
    """Conversation `index` of `count` for `situation`: the same for the same arguments."""
    rng = random.Random(f"{seed}:{situation.id}:{index}")
    context = {
        "client": _CLIENTS.get(situation.scenario_category, "our company"),
        "amount": f"{rng.randrange(15, 450) * 100:,}",
        "digits": f"{rng.randrange(10_000):04d}",
        "date": rng.choice(_FILL["date"]),
        "time": rng.choice(_FILL["time"]),
    }
    opening = _OPENINGS.get(situation.scenario_category, _GENERIC_OPENING)
    turns = [Turn("bot", opening[0].format(**context))]
    for bot in opening[1:]:
        turns.append(Turn("user", rng.choice(CONFIRM)))
        turns.append(Turn("bot", bot.format(**context)))
    says = CALLER_SAYS.get(situation.scenario)
    user = rng.choice(says).format(**context) if says else situation.situation.lower()
    turns.append(Turn("user", user))
    turns.append(
        Turn("bot", _BOT_REPLIES.get(situation.scenario, _GENERIC_REPLY).format(**context))
    )
    turns.append(Turn("user", rng.choice(("ok", "okay thank you", "fine"))))
    turns.append(Turn("bot", _CLOSING))
    prompt = f"{SYSTEM}\n\n{template.render(situation, index, count)}"
    return Conversation(situation, index, tuple(turns), GENERATOR, prompt)
