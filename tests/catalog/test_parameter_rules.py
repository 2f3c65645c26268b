"""Parameter rules: each kind on its own, a module's `rules` read by the catalog (compiled
or from its cache), mistakes in them failing the load, and resolve_parameters refusing
what breaks them with one field violation each."""

from __future__ import annotations

import os
import shutil
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from skit_pipelines import catalog, rules
from skit_pipelines.catalog import Catalog, pipeline_from_spec, resolve_parameters
from skit_pipelines.domain import Pipeline
from skit_pipelines.errors import InvalidArgument, NotFound
from skit_pipelines.rules import (
    Date,
    Each,
    NonEmpty,
    OneOf,
    ParameterRule,
    Pattern,
    Range,
    TimeZone,
    did_you_mean,
    rule_from_json,
    shown,
)


def problems(rule: ParameterRule, value: Any, **others: Any) -> list[str]:
    return [f"{p.where}{p.description}" for p in rule.problems(value, others)]


@pytest.mark.parametrize(
    ("rule", "good", "bad", "said"),
    [
        (Date(), "2026-10-31", "2026-13-45", 'must be a date YYYY-MM-DD, got "2026-13-45"'),
        (Date(), "2024-02-29", "2026-02-29", 'must be a date YYYY-MM-DD, got "2026-02-29"'),
        (Date(), "2026-10-31", "20261031", 'must be a date YYYY-MM-DD, got "20261031"'),
        (Date(), "2026-10-31", "", 'must be a date YYYY-MM-DD, got ""'),
        (Date(allow_empty=True), "", 5, "must be a string, got 5"),
        (TimeZone(), "Asia/Kolkata", "Mars/Base", 'got "Mars/Base"'),
        (TimeZone(), "UTC", "posixrules", 'got "posixrules"'),
        (OneOf("a", "b"), "b", "c", 'must be one of a, b, got "c"'),
        (OneOf("a", "b", allow_empty=True), "", "c", 'must be one of a, b (or empty), got "c"'),
        (Range(minimum=1), 1, 0, "must be at least 1, got 0"),
        (Range(minimum=1, maximum=99), 99, 100, "must be from 1 to 99, got 100"),
        (Range(maximum=0.5), -3, 0.75, "must be at most 0.5, got 0.75"),
        (Range(minimum=0), 0, True, "must be at least 0, got true"),
        (Range(minimum=1, integer=True), 2, 2.5, "must be an integer of at least 1, got 2.5"),
        (Pattern("[a-z]{2}", meaning="a code"), "en", "eng", 'must be a code, got "eng"'),
        (Pattern("[a-z]{2}"), "en", "EN", 'must be a string matching [a-z]{2}, got "EN"'),
        (NonEmpty(), [0], [], "must not be empty"),
        (Each(Range(minimum=1)), [1, 2], [1, 0, -1], "[1]must be at least 1, got 0"),
        (Each(OneOf("x")), ["x"], "x", 'must be a list, got "x"'),
    ],
)
def test_a_rule_passes_good_values_and_says_what_is_wrong_with_bad_ones(rule, good, bad, said):
    assert problems(rule, good) == []
    assert said in problems(rule, bad)[0]
    assert rule_from_json(rule.to_json()) == rule


def test_a_listed_time_zone_is_told_from_its_own_file(monkeypatch):
    # The catalog checks the pipelines' defaults at every start: listing the tz database
    # (every file opened) took ~30 ms of it.
    if not any(Path(root, "Asia", "Kolkata").is_file() for root in zoneinfo.TZPATH):
        pytest.skip("no tz database files on this machine")
    monkeypatch.setattr(rules, "_time_zones", _never_listed)

    assert problems(TimeZone(), "Asia/Kolkata") == []
    assert problems(TimeZone(), "UTC") == []


def _never_listed() -> frozenset[str]:
    raise AssertionError("the tz database was listed")


def test_time_zones_told_from_their_files_are_those_the_listing_names():
    listed = zoneinfo.available_timezones()
    files = {
        os.path.relpath(os.path.join(directory, name), root)
        for root in zoneinfo.TZPATH
        for directory, _, names in os.walk(root, followlinks=True)
        for name in names
    }
    odd = {"posixrules", "right/UTC", "posix/UTC", "Europe//Berlin", "./UTC", "../UTC", "Europe"}

    told = {name for name in files | odd | listed if rules._surely_listed(name)}

    assert told <= listed
    assert told == {name for name in listed if name in files}


def test_each_names_every_bad_item():
    assert problems(Each(Range(minimum=1, integer=True)), [1, 0, 2.5]) == [
        "[1]must be an integer of at least 1, got 0",
        "[2]must be an integer of at least 1, got 2.5",
    ]


def test_a_date_may_not_precede_the_one_it_names():
    rule = Date(allow_empty=True, not_before="start")
    assert problems(rule, "2026-11-01", start="2026-11-02") == [
        'must not be before start (2026-11-02), got "2026-11-01"'
    ]
    assert problems(rule, "2026-11-02", start="2026-11-02") == []
    assert problems(rule, "2026-11-01", start="") == []
    assert problems(rule, "", start="2026-11-02") == []


def test_a_near_miss_gets_a_did_you_mean():
    assert problems(TimeZone(), "Asia/Kolkatta")[0].endswith("; did you mean Asia/Kolkata?")
    assert problems(OneOf("INBOUND", "OUTBOUND"), "inbound")[0].endswith("; did you mean INBOUND?")
    assert "did you mean" not in problems(TimeZone(), "Mars/Base")[0]
    assert did_you_mean("random-sample-call", ["evaluate-asr", "random-sample-calls"]) == (
        "random-sample-calls"
    )
    assert did_you_mean("zzz", ["evaluate-asr"]) is None


def test_values_are_shown_as_typed():
    assert shown(5.0) == "5"
    assert shown(2.5) == "2.5"
    assert shown([1.0, "a"]) == '[1, "a"]'
    assert shown("x" * 200).endswith("…") and len(shown("x" * 200)) == 80


@pytest.mark.parametrize(
    "broken",
    [
        lambda: OneOf(),
        lambda: Range(),
        lambda: Range(minimum=2, maximum=1),
        lambda: Pattern("("),
        lambda: Each(NonEmpty()),  # type: ignore[arg-type]
    ],
)
def test_a_rule_that_cannot_work_fails_when_declared(broken):
    with pytest.raises(Exception):  # noqa: B017 - ValueError or re.error
        broken()


# The typed pipeline (tests/conftest.py) with rules.


def with_rules(pipeline: Pipeline, **rules: Any) -> Pipeline:
    return pipeline_from_spec(pipeline.spec, rules)


def refused(pipeline: Pipeline, **given: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        resolve_parameters(pipeline, {"greeting": "hi", **given})
    assert caught.value.reason == "INVALID_PARAMETERS"
    return {v.field: v.description for v in caught.value.violations}


def test_resolve_parameters_refuses_each_broken_rule_by_field(typed_pipeline):
    pipeline = with_rules(
        typed_pipeline,
        greeting=OneOf("hi", "hello"),
        count=Range(minimum=1, maximum=10),
        items=[NonEmpty(), Each(Range(minimum=0))],
    )

    assert refused(pipeline, greeting="hey", count=11.0, items=[1, -2]) == {
        "run.parameters.greeting": 'must be one of hi, hello, got "hey"',
        "run.parameters.count": "must be from 1 to 10, got 11",
        "run.parameters.items[1]": "must be at least 0, got -2",
    }
    assert refused(pipeline, items=[]) == {"run.parameters.items": "must not be empty"}
    assert resolve_parameters(pipeline, {"greeting": "hello", "count": 10.0})["count"] == 10


def test_a_wrong_type_is_reported_once_not_also_against_the_rules(typed_pipeline):
    pipeline = with_rules(typed_pipeline, count=Range(minimum=1))

    assert refused(pipeline, count="many") == {
        "run.parameters.count": 'must be an integer, got "many"'
    }


def test_unknown_parameters_get_a_did_you_mean(typed_pipeline):
    assert refused(typed_pipeline, cuont=3)["run.parameters.cuont"].startswith(
        "unknown parameter for pipelines/typed; did you mean count? known: count, flag, greeting"
    )


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"colour": OneOf("red")}, "rules for unknown parameters ['colour']"),
        ({"count": OneOf("1")}, "count is INTEGER, which the rule"),
        ({"greeting": Range(minimum=1)}, "greeting is STRING, which the rule"),
        ({"flag": NonEmpty()}, "flag is BOOLEAN, which the rule"),
        ({"count": Range(minimum=5)}, "the default of count, 3, breaks its rule: must be"),
        ({"items": Each(Range(minimum=2))}, "the default of items[0], [1, 2], breaks its rule"),
        ({"greeting": Date(not_before="count")}, "compares it with 'count', which is no date"),
    ],
)
def test_rules_that_do_not_fit_the_pipeline_fail_the_load(typed_pipeline, rules, message):
    with pytest.raises(ValueError, match="pipeline typed: ") as caught:
        pipeline_from_spec(typed_pipeline.spec, rules)
    assert message in str(caught.value)


def test_an_unknown_pipeline_gets_a_did_you_mean(typed_pipeline):
    known = Catalog({typed_pipeline.id: typed_pipeline})
    with pytest.raises(NotFound) as caught:
        known.get("typd")
    assert (
        caught.value.message
        == "pipeline pipelines/typd not found; did you mean typed? known: typed"
    )


# A module's `rules`, read by Catalog.load.

RULES = """

from skit_pipelines.rules import OneOf

rules = {"mode": OneOf("ok", "fail")}
"""


@pytest.fixture
def ruled(project: Path, tmp_path: Path) -> Path:
    root = Path(shutil.copytree(project, tmp_path / "project"))
    module = root / "pipelines" / "traced.py"
    module.write_text(module.read_text() + RULES)
    return root


def test_a_module_s_rules_are_loaded_compiled_and_from_the_cache(ruled, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    compiled = Catalog.load(ruled / "pipelines", cache)

    def refuse(path: Path) -> None:
        raise AssertionError(f"compiled {path.name} though nothing changed")

    monkeypatch.setattr(catalog, "compile_pipeline", refuse)
    cached = Catalog.load(ruled / "pipelines", cache)

    for loaded in (compiled, cached):
        (mode,) = loaded.get("traced").parameters
        assert mode.rules == (OneOf("ok", "fail"),)
        with pytest.raises(InvalidArgument):
            resolve_parameters(loaded.get("traced"), {"mode": "sideways"})


def test_a_module_whose_rules_are_not_rules_fails_the_load(ruled):
    module = ruled / "pipelines" / "traced.py"
    module.write_text(module.read_text() + '\nrules = {"mode": "ok or fail"}\n')

    with pytest.raises(ValueError, match=r"rules\['mode'\] holds 'ok or fail', which is no rule"):
        Catalog.load(ruled / "pipelines")
