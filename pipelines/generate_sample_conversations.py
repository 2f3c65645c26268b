"""Official pipeline #8: generate sample conversations for LLM situations.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Each, OneOf, Range

generate_conversations = load_component(__file__, "generate_conversations")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    conversations: dsl.Dataset
    report: dsl.Artifact
    generated_count: int
    dropped_count: int
    generator_used: str


@dsl.pipeline(
    name="generate-sample-conversations",
    description=(
        "Writes sample conversations for LLM situations of the metrics database, with an "
        "OpenAI-compatible LLM or the offline template generator; outputs them as JSON lines."
    ),
)
def pipeline(
    situation_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    situation_limit: int = 10,
    generator: str = "auto",
    prompt_template: str = "",
    conversations_per_situation: int = 2,
    temperature: float = 0.7,
    seed: int = 0,
    llm_concurrency: int = 4,
) -> Outputs:
    """Generates sample conversations, one prompt per conversation, for LLM situations.

    The llm generator asks the OpenAI-compatible endpoint the service configures (LLM_BASE_URL,
    LLM_MODEL, LLM_API_KEY) for structured JSON checked against the conversation schema;
    rate limits, server errors, timeouts and malformed answers are retried with backoff,
    and a conversation still failing is dropped, counted in dropped_count and listed with
    its reason in the report. Unknown or invalidated situations, an unreachable endpoint,
    rejected credentials or every conversation dropped fail the run.

    Args:
        situation_ids: Ids of the situations to write conversations for; empty for every
            valid situation.
        situation_limit: At most this many situations (the lowest ids); 0 for no limit.
        generator: auto (llm when the service configures an LLM endpoint, else template),
            llm (the OpenAI-compatible endpoint) or template (deterministic and offline,
            from the demo vocabulary).
        prompt_template: The user prompt per conversation, with the placeholders {situation},
            {scenario}, {scenario_category}, {situation_id}, {index} and {count}; empty for
            the bundled prompt.
        conversations_per_situation: Conversations per situation, 1 to 20.
        temperature: Sampling temperature of the llm generator, 0 to 2.
        seed: Seed of the template generator; the same seed and situations give the same
            conversations.
        llm_concurrency: How many requests the llm generator sends to the endpoint at once.
    """
    task = generate_conversations(
        situation_ids=situation_ids,
        situation_limit=situation_limit,
        generator=generator,
        prompt_template=prompt_template,
        conversations_per_situation=conversations_per_situation,
        temperature=temperature,
        seed=seed,
        llm_concurrency=llm_concurrency,
    )
    # The metrics database changes under the same parameters, an LLM is not deterministic,
    # and its endpoint is configuration, not an input: never reuse an earlier result.
    task.set_caching_options(False)
    return Outputs(
        conversations=task.outputs["conversations"],
        report=task.outputs["report"],
        generated_count=task.outputs["generated_count"],
        dropped_count=task.outputs["dropped_count"],
        generator_used=task.outputs["generator_used"],
    )


# What the step would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "situation_ids": Each(Range(minimum=1, integer=True)),
    "situation_limit": Range(minimum=0),
    "generator": OneOf("auto", "llm", "template"),
    "conversations_per_situation": Range(minimum=1, maximum=20),
    "temperature": Range(minimum=0, maximum=2),
    "llm_concurrency": Range(minimum=1),
}
