"""Official pipeline #2: download tagged dataset.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, OneOf, Range, TimeZone

fetch_tagged_dataset = load_component(__file__, "fetch_tagged_dataset")


# Named, so the run's outputs read "dataset" and "row_count" rather than kfp's "Output".
class Outputs(NamedTuple):
    dataset: dsl.Dataset
    row_count: int


@dsl.pipeline(
    name="download-tagged-dataset",
    description="Downloads annotated tasks of annotation projects and jobs as a CSV.",
)
def pipeline(
    project_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    job_ids: list[int] = [],  # noqa: B006
    task_type: str = "intent",
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    all_annotations: bool = False,
) -> Outputs:
    """Downloads the annotations of Label Studio projects and Tog jobs as a CSV.

    One row per task with its latest annotation (the reviewer's on gold tasks), or one per
    annotation, with the task data as JSON and flattened into raw.* columns. With no
    parameters, every intent project and job. The run fails when nothing matches.

    Args:
        project_ids: Label Studio project ids; with job_ids empty too, every project and job
            of task_type.
        job_ids: Tog job ids.
        task_type: Task type of the projects, one of intent, entity or transcription.
        start_date: First tagging date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last tagging date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates and of the CSV's times, e.g. Asia/Kolkata.
        all_annotations: One row per annotation, for agreement checks, instead of one per task.
    """
    task = fetch_tagged_dataset(
        project_ids=project_ids,
        job_ids=job_ids,
        task_type=task_type,
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
        all_annotations=all_annotations,
    )
    # The annotation store changes under the same parameters.
    task.set_caching_options(False)
    return Outputs(dataset=task.outputs["dataset"], row_count=task.outputs["row_count"])


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "project_ids": Each(Range(minimum=1, integer=True)),
    "job_ids": Each(Range(minimum=1, integer=True)),
    "task_type": OneOf("intent", "entity", "transcription"),
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
}
