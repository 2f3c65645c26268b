"""Official pipeline #1: random sample calls.

No `from __future__ import annotations` in pipeline modules: kfp reads the parameter types
from the real annotation objects, and string annotations make it fail.
"""

from typing import NamedTuple

from kfp import dsl

from skit_pipelines.images import load_component
from skit_pipelines.rules import Date, Each, OneOf, Pattern, Range, TimeZone

fetch_calls = load_component(__file__, "fetch_calls")


# Named, so the run's outputs read "calls" and "call_count" rather than kfp's "Output".
class Outputs(NamedTuple):
    calls: dsl.Dataset
    call_count: int


@dsl.pipeline(
    name="random-sample-calls",
    description="Samples calls from the calls database with filters; outputs a CSV of their turns.",
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
    call_quantity: int = 200,
    seed: int = 0,
) -> Outputs:
    """Samples calls and returns every turn of them as a CSV, one row per turn.

    Calls match when they pass every filter that is set; empty values mean "any". With no
    parameters, any of the calls may be sampled.

    Args:
        start_date: First call date included, YYYY-MM-DD in `timezone`; empty for no lower bound.
        end_date: Last call date included, YYYY-MM-DD in `timezone`; empty for no upper bound.
        timezone: IANA timezone of the dates and of the CSV's reftime, e.g. Asia/Kolkata.
        lang: Call language code such as en, hi, ta or te; empty for any.
        client_id: Client id; 0 for any.
        flow_ids: Flow ids; empty for any.
        template_id: Flow template id; 0 for any.
        states: Keep calls with a turn in one of these bot states; empty for any.
        intents: Keep calls with a turn predicted as one of these intents (the same turn as
            `states` when both are set); empty for any.
        call_type: INBOUND or OUTBOUND; empty for any.
        min_duration: Minimum call duration in seconds.
        call_quantity: How many calls to sample; all matching calls when fewer match.
        seed: Random seed of the sample; the same seed and data give the same calls.
    """
    task = fetch_calls(
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
    task.set_caching_options(False)
    return Outputs(calls=task.outputs["calls"], call_count=task.outputs["call_count"])


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
}
