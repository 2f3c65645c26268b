"""Official pipeline #7: random sample and tag turns and calls.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, OneOf, Pattern, Range, TimeZone

fetch_calls = load_component(__file__, "fetch_calls")
pre_annotate_turns = load_component(__file__, "pre_annotate_turns")
push_annotation_tasks = load_component(__file__, "push_annotation_tasks")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    turns: dsl.Dataset
    turn_project_id: int
    turn_tasks_created: int
    turn_tasks_existing: int
    call_project_id: int
    call_tasks_created: int
    call_tasks_existing: int
    prediction_model_version: str


@dsl.pipeline(
    name="sample-and-tag-calls",
    description=(
        "Samples calls with filters, pre-annotates their caller turns with the production "
        "SLU model and pushes turn (intent) and call tasks into annotation store projects."
    ),
)
def pipeline(
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    lang: str = "",
    client_id: int = 0,
    flow_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    template_id: int = 0,
    states: list[str] = [],  # noqa: B006
    intents: list[str] = [],  # noqa: B006
    call_type: str = "",
    min_duration: float = 0.0,
    call_quantity: int = 50,
    turn_quantity: int = 100,
    seed: int = 0,
    pre_annotate: bool = True,
    model_version: str = "",
    turn_project_id: int = 0,
    turn_project_title: str = "Sampled turns",
    call_project_id: int = 0,
    call_project_title: str = "Sampled calls",
    create_projects: bool = True,
    labels: list[str] = [],  # noqa: B006
) -> Outputs:
    """Samples calls and pushes their turns and the calls themselves to annotators.

    fetch_calls samples `call_quantity` calls with the filters (as random-sample-calls);
    `turn_quantity` of their caller turns are picked at random and, with `pre_annotate`,
    classified by the SLU model of the model registry, whose intent is attached to each task
    as a prediction so annotators confirm or correct it. One intent task per picked turn
    goes into the turn project and one call task per sampled call (its whole dialogue) into
    the call project, in the annotation store the service configures (Label Studio, or the
    embedded store). Tasks are keyed by the turn's and the call's uuid, so running again
    adds only tasks the projects do not hold. No matching call, an unknown project, a
    project of another task type or an unreachable store fails the run.

    Args:
        start_date: First call date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last call date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates and of the tasks' reftime, e.g. Asia/Kolkata.
        lang: Call language code such as en, hi, ta or te; empty for any.
        client_id: Client id; 0 for any.
        flow_ids: Flow ids; empty for any.
        template_id: Flow template id; 0 for any.
        states: Keep calls with a turn in one of these bot states; empty for any.
        intents: Keep calls with a turn predicted as one of these intents; empty for any.
        call_type: INBOUND or OUTBOUND; empty for any.
        min_duration: Minimum call duration in seconds.
        call_quantity: How many calls to sample; all matching calls when fewer match.
        turn_quantity: How many caller turns of the sampled calls become intent tasks; 0 for all.
        seed: Random seed of the call and turn samples.
        pre_annotate: Attach the SLU model's predicted intent to every turn task.
        model_version: The model registry version that pre-annotates; empty for production.
        turn_project_id: Project for the turn (intent) tasks; 0 to use turn_project_title.
        turn_project_title: Title of the turn project when turn_project_id is 0.
        call_project_id: Project for the call tasks; 0 to use call_project_title.
        call_project_title: Title of the call project when call_project_id is 0.
        create_projects: Create a titled project the store does not have yet.
        labels: Intent choices of created projects; empty for the intents in the sample.
    """
    sampled = fetch_calls(
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
        lang=lang,
        client_id=client_id,
        flow_ids=flow_ids,
        template_id=template_id,
        states=states,
        intents=intents,
        call_type=call_type,
        min_duration=min_duration,
        call_quantity=call_quantity,
        seed=seed,
    )
    # The calls database changes under the same parameters.
    sampled.set_caching_options(False)
    turns = pre_annotate_turns(
        calls=sampled.outputs["calls"],
        turn_quantity=turn_quantity,
        seed=seed,
        pre_annotate=pre_annotate,
        model_version=model_version,
    )
    # Production is read from the model registry, which changes under the same inputs.
    turns.set_caching_options(False)
    turn_tasks = push_annotation_tasks(
        tasks=turns.outputs["turns"],
        task_type="intent",
        project_id=turn_project_id,
        project_title=turn_project_title,
        create_project=create_projects,
        labels=labels,
        language=lang,
    )
    # Pushing is the point: a cached step would push nothing.
    turn_tasks.set_caching_options(False)
    call_tasks = push_annotation_tasks(
        tasks=sampled.outputs["calls"],
        task_type="call",
        project_id=call_project_id,
        project_title=call_project_title,
        create_project=create_projects,
        labels=labels,
        language=lang,
    )
    call_tasks.set_caching_options(False)
    return Outputs(
        turns=turns.outputs["turns"],
        turn_project_id=turn_tasks.outputs["pushed_project_id"],
        turn_tasks_created=turn_tasks.outputs["created_count"],
        turn_tasks_existing=turn_tasks.outputs["existing_count"],
        call_project_id=call_tasks.outputs["pushed_project_id"],
        call_tasks_created=call_tasks.outputs["created_count"],
        call_tasks_existing=call_tasks.outputs["existing_count"],
        prediction_model_version=turns.outputs["used_model_version"],
    )


_TITLE = Pattern(r"\S.{2,49}", allow_empty=True, meaning="a project title of 3 to 50 characters")

# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
    "lang": Pattern(
        "[a-z]{2,3}", allow_empty=True, meaning="a language code such as en, hi, ta or te"
    ),
    "client_id": Range(minimum=0),
    "flow_ids": Each(Range(minimum=1, integer=True)),
    "template_id": Range(minimum=0),
    "call_type": OneOf("INBOUND", "OUTBOUND", allow_empty=True),
    "min_duration": Range(minimum=0),
    "call_quantity": Range(minimum=1),
    "turn_quantity": Range(minimum=0),
    "turn_project_id": Range(minimum=0),
    "turn_project_title": _TITLE,
    "call_project_id": Range(minimum=0),
    "call_project_title": _TITLE,
}
