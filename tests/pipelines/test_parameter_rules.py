"""The official pipelines' parameter rules: a value one of their steps would refuse is
refused at CreateRun instead, naming the parameter, and never becomes a FAILED run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skit_pipelines.catalog import Catalog, resolve_parameters
from skit_pipelines.errors import InvalidArgument
from skit_pipelines.rules import Date, Each, Range, TimeZone

ROOT = Path(__file__).resolve().parents[2]

# (pipeline, parameters, the field refused): each a value the step consuming it rejects.
REFUSED = [
    ("random-sample-calls", {"start_date": "2026-13-45"}, "start_date"),
    ("random-sample-calls", {"timezone": "Mars/Base"}, "timezone"),
    (
        "random-sample-calls",
        {"start_date": "2026-11-02", "end_date": "2026-11-01"},
        "end_date",
    ),
    ("random-sample-calls", {"call_type": "inbound"}, "call_type"),
    ("random-sample-calls", {"lang": "English"}, "lang"),
    ("random-sample-calls", {"client_id": -1}, "client_id"),
    ("random-sample-calls", {"flow_ids": [3, 0]}, "flow_ids[1]"),
    ("random-sample-calls", {"min_duration": -0.5}, "min_duration"),
    ("random-sample-calls", {"call_quantity": 0}, "call_quantity"),
    ("download-tagged-dataset", {"task_type": "intents"}, "task_type"),
    ("download-tagged-dataset", {"project_ids": [0]}, "project_ids[0]"),
    ("download-tagged-dataset", {"job_ids": [1.5]}, "job_ids[0]"),
    ("download-tagged-dataset", {"timezone": "Asia/Kolkatta"}, "timezone"),
    ("download-tagged-entity-dataset", {"start_date": "31-10-2026"}, "start_date"),
    ("download-tagged-entity-dataset", {"timezone": ""}, "timezone"),
    ("evaluate-asr", {"worst_count": -1}, "worst_count"),
    ("evaluate-asr", {"end_date": "2026-02-30"}, "end_date"),
    ("evaluate-slu", {"test_percent": 0}, "test_percent"),
    ("evaluate-slu", {"test_percent": 101}, "test_percent"),
    ("retrain-slu", {"test_percent": 100}, "test_percent"),
    ("retrain-slu", {"seed": -1}, "seed"),
    ("retrain-slu", {"model_name": "SLU model"}, "model_name"),
    ("publish-compliance-breaches", {"judge": "gpt"}, "judge"),
    ("publish-compliance-breaches", {"llm_concurrency": 0}, "llm_concurrency"),
    ("publish-compliance-breaches", {"call_type": "OUTGOING"}, "call_type"),
    ("invalidate-llm-situations", {"situation_ids": [4, -4]}, "situation_ids[1]"),
    ("generate-sample-conversations", {"situation_ids": [0]}, "situation_ids[0]"),
    ("generate-sample-conversations", {"situation_limit": -1}, "situation_limit"),
    ("generate-sample-conversations", {"generator": "gpt"}, "generator"),
    (
        "generate-sample-conversations",
        {"conversations_per_situation": 21},
        "conversations_per_situation",
    ),
    ("generate-sample-conversations", {"temperature": 2.5}, "temperature"),
    ("generate-sample-conversations", {"llm_concurrency": 0}, "llm_concurrency"),
]

ACCEPTED = [
    ("random-sample-calls", {"start_date": "2026-10-01", "end_date": "2026-10-01"}),
    ("random-sample-calls", {"timezone": "Asia/Kolkata", "call_type": "INBOUND", "lang": "te"}),
    ("download-tagged-dataset", {"task_type": "transcription", "project_ids": [1, 2]}),
    ("evaluate-slu", {"test_percent": 100}),
    ("retrain-slu", {"test_percent": 99, "seed": 2**32 - 1, "model_name": "slu-intents-2"}),
    ("publish-compliance-breaches", {"judge": "llm", "llm_concurrency": 1}),
    (
        "generate-sample-conversations",
        {"generator": "llm", "conversations_per_situation": 20, "temperature": 0.0},
    ),
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "pipelines")


@pytest.mark.parametrize(("pipeline", "given", "field"), REFUSED)
def test_a_value_its_step_would_refuse_is_refused_at_create_run(
    catalog: Catalog, pipeline: str, given: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve_parameters(catalog.get(pipeline), given)

    assert [v.field for v in caught.value.violations] == [f"run.parameters.{field}"]


@pytest.mark.parametrize(("pipeline", "given"), ACCEPTED)
def test_good_values_pass(catalog: Catalog, pipeline: str, given: dict[str, Any]) -> None:
    resolved = resolve_parameters(catalog.get(pipeline), given)
    assert {name: resolved[name] for name in given} == given


def test_every_date_time_zone_and_id_list_parameter_has_its_rule(catalog: Catalog) -> None:
    """The parameters every pipeline shares are checked in every pipeline (and in a new
    one, which this test names if its author forgets)."""
    missing = []
    for pipeline in catalog.list():
        for parameter in pipeline.parameters:
            kinds = {type(rule) for rule in parameter.rules}
            if parameter.name.endswith("_date"):
                expected = Date
            elif parameter.name == "timezone":
                expected = TimeZone
            elif parameter.name.endswith("_ids"):
                expected = Each
                ids_rule = next((r for r in parameter.rules if isinstance(r, Each)), None)
                if ids_rule is not None and ids_rule.rule != Range(minimum=1, integer=True):
                    missing.append(f"{pipeline.id}.{parameter.name}: ids are positive integers")
            else:
                continue
            if expected not in kinds:
                missing.append(f"{pipeline.id}.{parameter.name}: no {expected.__name__} rule")
    assert missing == []
