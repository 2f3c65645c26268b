"""Official pipeline #9: generate and upload conversations.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Each, OneOf, Pattern, Range

add_situations = load_component(__file__, "add_situations")
generate_conversations = load_component(__file__, "generate_conversations")
push_annotation_tasks = load_component(__file__, "push_annotation_tasks")
record_conversations = load_component(__file__, "record_conversations")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    conversations: dsl.Dataset
    report: dsl.Artifact
    situation_ids: list
    situations_added: int
    generated_count: int
    dropped_count: int
    generator_used: str
    project_id: int
    tasks_created: int
    tasks_existing: int
    conversations_recorded: int
    prompts_recorded: int


@dsl.pipeline(
    name="generate-and-upload-conversations",
    description=(
        "Adds LLM situations to the metrics database, generates conversations for them, "
        "uploads them to an annotation store project and records prompts and conversations "
        "in the metrics database."
    ),
)
def pipeline(
    situations: list[str] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    scenario: str = "",
    scenario_category: str = "",
    situation_ids: list[int] = [],  # noqa: B006
    situation_limit: int = 10,
    generator: str = "auto",
    prompt_template: str = "",
    conversations_per_situation: int = 2,
    temperature: float = 0.7,
    seed: int = 0,
    llm_concurrency: int = 4,
    project_id: int = 0,
    project_title: str = "Generated conversations",
    create_project: bool = True,
    client_id: int = 0,
    template_id: int = 0,
) -> Outputs:
    """Generates conversations for LLM situations and hands them to annotators.

    The given situations are found or added (under `scenario` and `scenario_category`) in
    the metrics database; conversations are generated for them and for `situation_ids` (for
    every valid situation, at most `situation_limit`, when neither is given) as in
    generate-sample-conversations; each becomes a conversation task of the annotation project
    (keyed by its content, so a rerun adds nothing twice); and the prompts and conversations
    are recorded in the metrics database (prompt_details, generated_conversations) with the
    client, template and project. Invalidated or unknown situations, an unreachable LLM
    endpoint or annotation store, an unknown project or every conversation dropped fail the
    run.

    Args:
        situations: Situations to find or add, e.g. "the caller lost their job and cannot pay".
        scenario: Scenario of the given situations, e.g. "promise to pay"; required with them.
        scenario_category: Scenario category of the given situations, a snake_case use case
            such as debt_collection; required with them.
        situation_ids: Ids of existing situations to generate for as well.
        situation_limit: At most this many situations (the lowest ids), given or, with none
            given, valid ones; 0 for no limit.
        generator: auto (llm when the service configures an LLM endpoint, else template),
            llm (the OpenAI-compatible endpoint) or template (deterministic and offline).
        prompt_template: The user prompt per conversation, with the placeholders {situation},
            {scenario}, {scenario_category}, {situation_id}, {index} and {count}; empty for
            the bundled prompt.
        conversations_per_situation: Conversations per situation, 1 to 20.
        temperature: Sampling temperature of the llm generator, 0 to 2.
        seed: Seed of the template generator.
        llm_concurrency: How many requests the llm generator sends to the endpoint at once.
        project_id: Annotation project for the conversation tasks; 0 to use project_title.
        project_title: Title of the annotation project when project_id is 0; also the
            project name recorded in the metrics database.
        create_project: Create the titled project when the store does not have it yet.
        client_id: Client the conversations are for, recorded with the prompts; 0 for none.
        template_id: Flow template the conversations are for, recorded with the prompts; 0
            for none.
    """
    added = add_situations(
        situations=situations,
        scenario=scenario,
        scenario_category=scenario_category,
        situation_ids=situation_ids,
    )
    # The metrics database changes under the same parameters.
    added.set_caching_options(False)
    generated = generate_conversations(
        situation_ids=added.outputs["selected_situation_ids"],
        situation_limit=situation_limit,
        generator=generator,
        prompt_template=prompt_template,
        conversations_per_situation=conversations_per_situation,
        temperature=temperature,
        seed=seed,
        llm_concurrency=llm_concurrency,
    )
    # An LLM is not deterministic and its endpoint is configuration, not an input.
    generated.set_caching_options(False)
    uploaded = push_annotation_tasks(
        tasks=generated.outputs["conversations"],
        task_type="conversation",
        project_id=project_id,
        project_title=project_title,
        create_project=create_project,
    )
    uploaded.set_caching_options(False)
    recorded = record_conversations(
        conversations=generated.outputs["conversations"],
        generation_report=generated.outputs["report"],
        client_id=client_id,
        template_id=template_id,
        project_name=project_title,
        annotation_project_id=uploaded.outputs["pushed_project_id"],
    )
    recorded.set_caching_options(False)
    return Outputs(
        conversations=generated.outputs["conversations"],
        report=generated.outputs["report"],
        situation_ids=added.outputs["selected_situation_ids"],
        situations_added=added.outputs["added_count"],
        generated_count=generated.outputs["generated_count"],
        dropped_count=generated.outputs["dropped_count"],
        generator_used=generated.outputs["generator_used"],
        project_id=uploaded.outputs["pushed_project_id"],
        tasks_created=uploaded.outputs["created_count"],
        tasks_existing=uploaded.outputs["existing_count"],
        conversations_recorded=recorded.outputs["conversation_count"],
        prompts_recorded=recorded.outputs["prompt_count"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "situations": Each(
        Pattern(r"(?s)(?=.*\S).{1,500}", meaning="a situation of 1 to 500 characters")
    ),
    "scenario_category": Pattern(
        "[a-z][a-z0-9_]{0,62}",
        allow_empty=True,
        meaning="a snake_case name such as debt_collection",
    ),
    "situation_ids": Each(Range(minimum=1, integer=True)),
    "situation_limit": Range(minimum=0),
    "generator": OneOf("auto", "llm", "template"),
    "conversations_per_situation": Range(minimum=1, maximum=20),
    "temperature": Range(minimum=0, maximum=2),
    "llm_concurrency": Range(minimum=1),
    "project_id": Range(minimum=0),
    "project_title": Pattern(
        r"\S.{2,49}", allow_empty=True, meaning="a project title of 3 to 50 characters"
    ),
    "client_id": Range(minimum=0),
    "template_id": Range(minimum=0),
}
