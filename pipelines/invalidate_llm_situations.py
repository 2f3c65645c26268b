"""Official pipeline #10: invalidate situations in the metrics database for LLM generation.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Each, Range

invalidate_situations = load_component(__file__, "invalidate_situations")


# Named, so the run's outputs read "report" and "invalidated_count" rather than kfp's "Output".
class Outputs(NamedTuple):
    report: dsl.Artifact
    invalidated_count: int


@dsl.pipeline(
    name="invalidate-llm-situations",
    description="Marks LLM situations invalid in the metrics database; outputs a JSON report.",
)
def pipeline(
    situation_ids: list[int] = [],  # noqa: B006 - kfp reads the default; it is never mutated
) -> Outputs:
    """Marks situations invalid so conversation generation stops using them.

    All or nothing: if any id does not exist the run fails naming it and nothing changes.
    Already-invalid ids are reported, not counted. With no ids the run changes nothing and
    reports so.

    Args:
        situation_ids: Ids of the situations to invalidate.
    """
    task = invalidate_situations(situation_ids=situation_ids)
    # A write to an external database: rerun it every time, never reuse an earlier result.
    task.set_caching_options(False)
    return Outputs(
        report=task.outputs["report"], invalidated_count=task.outputs["invalidated_count"]
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "situation_ids": Each(Range(minimum=1, integer=True)),
}
