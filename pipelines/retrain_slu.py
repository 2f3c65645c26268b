"""Official pipeline #6: retrain SLU.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, Pattern, Range, TimeZone

fetch_tagged_dataset = load_component(__file__, "fetch_tagged_dataset")
prepare_slu_dataset = load_component(__file__, "prepare_slu_dataset")
train_slu = load_component(__file__, "train_slu")
evaluate_slu = load_component(__file__, "evaluate_slu")
publish_slu_model = load_component(__file__, "publish_slu_model")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    model: dsl.Model
    report: dsl.Artifact
    macro_f1: float
    production_macro_f1: float
    promoted: bool
    decision: str


@dsl.pipeline(
    name="retrain-slu",
    description=(
        "Trains the intent classifier on tagged data, compares it with the production model "
        "and publishes it with its report; promotes it only when asked and not worse."
    ),
)
def pipeline(
    project_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    job_ids: list[int] = [],  # noqa: B006
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    aliases_yaml: str = "",
    remove_intents: list[str] = [],  # noqa: B006
    test_percent: int = 15,
    seed: int = 0,
    model_name: str = "slu-intents",
    promote: bool = False,
) -> Outputs:
    """Retrains the SLU intent classifier and publishes it with a model card and a report.

    Tagged intent data from the annotation store -> intent aliases and removals -> a train
    and test split stratified by intent -> training -> evaluation of the new and the
    production model on the same test set -> report (per-intent precision, recall and F1,
    macro F1, confusion matrices, comparison; Markdown and HTML) -> the model with its card
    as the run's output, registered in the model registry. Production changes only when
    `promote` is true and the new model is not worse than production.

    Args:
        project_ids: Label Studio intent project ids to train on; with job_ids empty too,
            every intent project and job.
        job_ids: Tog intent job ids to train on.
        start_date: First tagging date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last tagging date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates, e.g. Asia/Kolkata.
        aliases_yaml: YAML text of the intent alias file (aliases as canonical intent to old
            names, and intents to remove); empty for the one bundled with prepare_slu_dataset.
        remove_intents: Intents to leave out of training and evaluation.
        test_percent: Share of every intent's examples held out for the test set, 1 to 99.
        seed: Random seed of the split and of training.
        model_name: Name of the model; its version is the name, the UTC time and a hash.
        promote: Make the new model the production model if it is not worse than production.
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
    trained = train_slu(train=split.outputs["train"], seed=seed, model_name=model_name)
    # Every run trains a new version (named by its training time), as its report says; a
    # cached model would republish an older version under this run.
    trained.set_caching_options(False)
    evaluated = evaluate_slu(
        test_set=split.outputs["test"],
        model=trained.outputs["model"],
        compare_with_production=True,
    )
    # Production is read from the model registry, which changes under the same inputs.
    evaluated.set_caching_options(False)
    published = publish_slu_model(
        model=trained.outputs["model"],
        evaluation=evaluated.outputs["report"],
        promote=promote,
    )
    published.set_caching_options(False)
    return Outputs(
        model=published.outputs["published"],
        report=evaluated.outputs["report"],
        macro_f1=evaluated.outputs["macro_f1"],
        production_macro_f1=evaluated.outputs["production_macro_f1"],
        promoted=published.outputs["promoted"],
        decision=published.outputs["decision"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "project_ids": Each(Range(minimum=1, integer=True)),
    "job_ids": Each(Range(minimum=1, integer=True)),
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
    # With 100, nothing would be left to train on.
    "test_percent": Range(minimum=1, maximum=99),
    # LinearSVC's random_state.
    "seed": Range(minimum=0, maximum=2**32 - 1),
    "model_name": Pattern(
        "[a-z][a-z0-9-]{0,62}", meaning="lowercase letters, digits and '-', starting with a letter"
    ),
}
