"""Official pipeline #3: download tagged entity dataset.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, Range, TimeZone

fetch_tagged_dataset = load_component(__file__, "fetch_tagged_dataset")
normalize_entities = load_component(__file__, "normalize_entities")


# Named, so the run's outputs read "dataset", "entity_count" and "unresolved_count".
class Outputs(NamedTuple):
    dataset: dsl.Dataset
    entity_count: int
    unresolved_count: int


@dsl.pipeline(
    name="download-tagged-entity-dataset",
    description=(
        "Downloads tagged date/time entities as a CSV with their values resolved to ISO 8601."
    ),
)
def pipeline(
    project_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    job_ids: list[int] = [],  # noqa: B006
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
) -> Outputs:
    """Downloads entity tasks and resolves their tagged dates and times.

    Each task's latest annotation is downloaded as in download-tagged-dataset; every tagged
    date or time is then resolved relative to the call's reference time, in the call's
    timezone: spoken dates and times of English, Hindi, Tamil and Telugu by
    normalize-entities' grammar, anything else by dateparser. Entities that cannot be
    resolved stay in the CSV, marked, and are counted in unresolved_count. With no
    parameters, every entity project and job.

    Args:
        project_ids: Label Studio project ids of entity projects; with job_ids empty too, all
            of them.
        job_ids: Tog job ids of entity jobs.
        start_date: First tagging date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last tagging date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates and the CSV's times, and of the calls whose task
            data names none.
    """
    fetch = fetch_tagged_dataset(
        project_ids=project_ids,
        job_ids=job_ids,
        task_type="entity",
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
        all_annotations=False,
    )
    # The annotation store changes under the same parameters.
    fetch.set_caching_options(False)
    normalize = normalize_entities(dataset=fetch.outputs["dataset"], timezone=timezone)
    return Outputs(
        dataset=normalize.outputs["normalized"],
        entity_count=normalize.outputs["entity_count"],
        unresolved_count=normalize.outputs["unresolved_count"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "project_ids": Each(Range(minimum=1, integer=True)),
    "job_ids": Each(Range(minimum=1, integer=True)),
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
}
