"""The CEL subset in conditions and parameter selectors, and parameter type coercion."""

from __future__ import annotations

from typing import Any

import pytest

from skit_pipelines.executor._cel import ExpressionError, evaluate_condition, select
from skit_pipelines.executor._values import ParameterTypeError, coerce, parse_output, to_text

VALUES = {
    "pipelinechannel--x": 3,
    "pipelinechannel--ratio": 0.5,
    "pipelinechannel--flag": "yes",
    "pipelinechannel--on": True,
    "pipelinechannel--text-number": "7",
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("int(inputs.parameter_values['pipelinechannel--x']) > 0", True),
        ("int(inputs.parameter_values['pipelinechannel--x']) < -1", False),
        ("inputs.parameter_values['pipelinechannel--flag'] == 'yes'", True),
        ("inputs.parameter_values['pipelinechannel--flag'] != 'yes'", False),
        ("inputs.parameter_values['pipelinechannel--on'] == true", True),
        ("inputs.parameter_values['pipelinechannel--on'] == 1", False),
        ("double(inputs.parameter_values['pipelinechannel--x']) >= 3.0", True),
        ("inputs.parameter_values['pipelinechannel--ratio'] <= 0.25", False),
        ("string(inputs.parameter_values['pipelinechannel--x']) == '3'", True),
        ("int(inputs.parameter_values['pipelinechannel--text-number']) == 7", True),
        (
            "!(int(inputs.parameter_values['pipelinechannel--x']) > 0) && "
            "int(inputs.parameter_values['pipelinechannel--x']) < 0",
            False,
        ),
        (
            "!(int(inputs.parameter_values['pipelinechannel--x']) > 5) && "
            "!(int(inputs.parameter_values['pipelinechannel--x']) < 0)",
            True,
        ),
        ("false || inputs.parameter_values[\"pipelinechannel--flag\"] == 'yes'", True),
        ("true && (false || !true)", False),
        ("'a' in ['a', 'b']", True),
    ],
)
def test_conditions(condition: str, expected: bool) -> None:
    assert evaluate_condition(condition, VALUES) is expected


def test_and_short_circuits_past_a_missing_value() -> None:
    assert evaluate_condition("false && inputs.parameter_values['missing'] == 1", VALUES) is False


@pytest.mark.parametrize(
    "condition",
    [
        "inputs.parameter_values['missing'] == 1",
        "__import__('os').system('true')",
        "inputs.parameter_values['pipelinechannel--x'] >",
        "int(inputs.parameter_values['pipelinechannel--x'])",
        "inputs.parameter_values['pipelinechannel--x'] ; 1",
    ],
)
def test_bad_conditions_raise(condition: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate_condition(condition, VALUES)


def test_selectors_pick_fields_of_json_items() -> None:
    assert select('parseJson(string_value)["age"]', '{"age": 31}') == 31
    assert select('parseJson(string_value)["age"]', {"age": 31}) == 31
    assert select("parseJson(string_value)[1]", "[4, 5]") == 5


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (200.0, "NUMBER_INTEGER", 200),
        ("12", "NUMBER_INTEGER", 12),
        (2, "NUMBER_DOUBLE", 2.0),
        ("false", "BOOLEAN", False),
        ('[1, "a"]', "LIST", [1, "a"]),
        ('{"a": 1}', "STRUCT", {"a": 1}),
        ({"a": 1}, "STRING", '{"a": 1}'),
        (None, "NUMBER_INTEGER", None),
    ],
)
def test_coerce(value: Any, kind: str, expected: Any) -> None:
    result = coerce(value, kind)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "kind"), [(2.5, "NUMBER_INTEGER"), ("x", "BOOLEAN"), (True, "NUMBER_INTEGER")]
)
def test_coerce_rejects_values_of_the_wrong_type(value: Any, kind: str) -> None:
    with pytest.raises(ParameterTypeError):
        coerce(value, kind)


def test_command_line_text_and_output_files() -> None:
    assert [to_text(v) for v in ("raw text", 3, 1.5, True, [1, "a"], {"k": None}, None)] == [
        "raw text",
        "3",
        "1.5",
        "true",
        '[1, "a"]',
        '{"k": null}',
        "",
    ]
    assert parse_output(" 42\n", "NUMBER_INTEGER") == 42
    assert parse_output("True\n", "BOOLEAN") is True
    assert parse_output("[1, 2]", "LIST") == [1, 2]
    assert parse_output("keep\n", "STRING") == "keep\n"
