"""Pipeline: evaluate SLU (not numbered in the original system's official list).

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, Range, TimeZone

fetch_tagged_dataset = load_component(__file__, "fetch_tagged_dataset")
prepare_slu_dataset = load_component(__file__, "prepare_slu_dataset")
fetch_slu_model = load_component(__file__, "fetch_slu_model")
evaluate_slu = load_component(__file__, "evaluate_slu")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    report: dsl.Artifact
    macro_f1: float
    model_version: str
    verdict: str


@dsl.pipeline(
    name="evaluate-slu",
    description=(
        "Evaluates an SLU model of the registry (production by default) on tagged data; "
        "outputs the report."
    ),
)
def pipeline(
    model_version: str = "",
    compare_with_production: bool = True,
    project_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    job_ids: list[int] = [],  # noqa: B006
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    aliases_yaml: str = "",
    remove_intents: list[str] = [],  # noqa: B006
    test_percent: int = 100,
    seed: int = 0,
) -> Outputs:
    """Evaluates an SLU intent classifier on tagged data and writes the same report as
    retrain-slu: per-intent precision, recall and F1, macro F1, confusion matrices and the
    comparison with the production model, as Markdown and HTML.

    Args:
        model_version: Version of the model in the model registry; empty for the production
            model.
        compare_with_production: Also score the production model on the same data and compare.
        project_ids: Label Studio intent project ids to evaluate on; with job_ids empty too,
            every intent project and job.
        job_ids: Tog intent job ids to evaluate on.
        start_date: First tagging date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last tagging date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates, e.g. Asia/Kolkata.
        aliases_yaml: YAML text of the intent alias file; empty for the one bundled with
            prepare_slu_dataset.
        remove_intents: Intents to leave out of the evaluation.
        test_percent: Share of every intent's examples to evaluate on; 100 for all of them, or
            retrain-slu's test_percent and seed for the test set it held out.
        seed: Random seed of the selection when test_percent is below 100.
    """
    tagged = fetch_tagged_dataset(
        project_ids=project_ids,
        job_ids=job_ids,
        task_type="intent",
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
    )
    # The annotation store changes under the same parameters.
    tagged.set_caching_options(False)
    split = prepare_slu_dataset(
        dataset=tagged.outputs["dataset"],
        aliases_yaml=aliases_yaml,
        remove_intents=remove_intents,
        test_percent=test_percent,
        seed=seed,
    )
    model = fetch_slu_model(version=model_version)
    # The production pointer moves under the same (empty) version.
    model.set_caching_options(False)
    evaluated = evaluate_slu(
        test_set=split.outputs["test"],
        model=model.outputs["model"],
        compare_with_production=compare_with_production,
    )
    evaluated.set_caching_options(False)
    return Outputs(
        report=evaluated.outputs["report"],
        macro_f1=evaluated.outputs["macro_f1"],
        model_version=model.outputs["model_version"],
        verdict=evaluated.outputs["verdict"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "project_ids": Each(Range(minimum=1, integer=True)),
    "job_ids": Each(Range(minimum=1, integer=True)),
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
    "test_percent": Range(minimum=1, maximum=100),
}
