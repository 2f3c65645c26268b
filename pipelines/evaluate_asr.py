"""Evaluate ASR: word and character error rates of the ASR against annotated transcripts.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, Range, TimeZone

fetch_tagged_dataset = load_component(__file__, "fetch_tagged_dataset")
asr_metrics = load_component(__file__, "asr_metrics")


# Named, so the run's outputs read "report", "metrics", "utterances", "wer" and "cer".
class Outputs(NamedTuple):
    report: dsl.Markdown
    metrics: dsl.Dataset
    utterances: dsl.Dataset
    wer: float
    cer: float


@dsl.pipeline(
    name="evaluate-asr",
    description="Scores ASR transcripts against annotated true transcripts: WER and CER.",
)
def pipeline(
    project_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
    job_ids: list[int] = [],  # noqa: B006
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    worst_count: int = 20,
) -> Outputs:
    """Compares the true transcripts of transcription tasks with what the ASR heard.

    The transcription projects' latest annotations give the true transcripts and the task
    data the ASR n-best lists (the best alternative of each utterance segment is scored).
    Word and character error rates are computed with jiwer over all utterances and per
    language, after lowercasing and removing punctuation and markup such as <noise>. With
    no parameters, every transcription project and job.

    Args:
        project_ids: Label Studio project ids of transcription projects; with job_ids empty
            too, all of them.
        job_ids: Tog job ids of transcription jobs.
        start_date: First tagging date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last tagging date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates, e.g. Asia/Kolkata.
        worst_count: How many of the worst utterances, by WER, the report lists.
    """
    fetch = fetch_tagged_dataset(
        project_ids=project_ids,
        job_ids=job_ids,
        task_type="transcription",
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
        all_annotations=False,
    )
    # The annotation store changes under the same parameters.
    fetch.set_caching_options(False)
    scores = asr_metrics(
        dataset=fetch.outputs["dataset"],
        true_column="tag",
        pred_column="raw.utterances",
        language_column="raw.language",
        worst_count=worst_count,
    )
    return Outputs(
        report=scores.outputs["report"],
        metrics=scores.outputs["metrics"],
        utterances=scores.outputs["utterances"],
        wer=scores.outputs["wer"],
        cer=scores.outputs["cer"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "project_ids": Each(Range(minimum=1, integer=True)),
    "job_ids": Each(Range(minimum=1, integer=True)),
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
    "worst_count": Range(minimum=0),
}
