"""Official pipeline #4: publish compliance breaches.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, OneOf, Pattern, Range, TimeZone

fetch_calls = load_component(__file__, "fetch_calls")
judge_compliance = load_component(__file__, "judge_compliance")
publish_breaches = load_component(__file__, "publish_breaches")


# Named, so the run's outputs read as below rather than kfp's "Output".
class Outputs(NamedTuple):
    breaches: dsl.Dataset
    report: dsl.Artifact
    breach_count: int
    failed_count: int


@dsl.pipeline(
    name="publish-compliance-breaches",
    description=(
        "Samples calls, judges each against the compliance policy, writes the judgements to "
        "the metrics database; outputs the breaches."
    ),
)
def pipeline(
    start_date: str = "",
    end_date: str = "",
    timezone: str = "UTC",
    lang: str = "",
    client_id: int = 0,
    template_id: int = 0,
    call_type: str = "",
    call_quantity: int = 1000,
    seed: int = 0,
    judge: str = "rules",
    policy_yaml: str = "",
    llm_concurrency: int = 4,
) -> Outputs:
    """Judges sampled calls against a versioned compliance policy and publishes the breaches.

    Every judged call is stored in the metrics database's compliance_breaches table, keyed
    by call, policy version and judge, so running again over the same calls updates rows
    rather than adding them. Calls whose judgement fails are reported, never dropped.

    Args:
        start_date: First call date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last call date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates, e.g. Asia/Kolkata.
        lang: Call language code such as en, hi, ta or te; empty for any.
        client_id: Client id; 0 for any.
        template_id: Flow template id; 0 for any.
        call_type: INBOUND or OUTBOUND; empty for any.
        call_quantity: How many calls to sample and judge; all matching calls when fewer match.
        seed: Random seed of the sample; the same seed and data give the same calls.
        judge: The judge, rules (deterministic, offline) or llm (the OpenAI-compatible endpoint
            the service configures in LLM_BASE_URL, LLM_MODEL and LLM_API_KEY).
        policy_yaml: YAML text of a compliance policy to judge against; empty for the policy
            bundled with the judge_compliance image.
        llm_concurrency: How many calls the llm judge sends to the endpoint at once.
    """
    calls = fetch_calls(
        start_date=start_date,
        end_date=end_date,
        timezone=timezone,
        lang=lang,
        client_id=client_id,
        template_id=template_id,
        call_type=call_type,
        call_quantity=call_quantity,
        seed=seed,
    )
    # The calls database changes under the same parameters.
    calls.set_caching_options(False)
    judged = judge_compliance(
        calls=calls.outputs["calls"],
        judge=judge,
        policy_yaml=policy_yaml,
        llm_concurrency=llm_concurrency,
    )
    # The llm judge is not deterministic, and its endpoint is configuration, not an input.
    judged.set_caching_options(False)
    published = publish_breaches(judgements=judged.outputs["judgements"])
    # A write to an external database: rerun it every time, never reuse an earlier result.
    published.set_caching_options(False)
    return Outputs(
        breaches=published.outputs["breaches"],
        report=published.outputs["report"],
        breach_count=published.outputs["breach_count"],
        failed_count=published.outputs["failed_count"],
    )


# What the steps would refuse, refused at CreateRun instead (skit_pipelines.rules).
rules = {
    "start_date": Date(allow_empty=True),
    "end_date": Date(allow_empty=True, not_before="start_date"),
    "timezone": TimeZone(),
    "lang": Pattern(
        "[a-z]{2,3}", allow_empty=True, meaning="a language code such as en, hi, ta or te"
    ),
    "client_id": Range(minimum=0),
    "template_id": Range(minimum=0),
    "call_type": OneOf("INBOUND", "OUTBOUND", allow_empty=True),
    "call_quantity": Range(minimum=1),
    "judge": OneOf("rules", "llm"),
    "llm_concurrency": Range(minimum=1),
}
