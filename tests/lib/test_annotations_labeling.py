"""The labeling configs and the mapping between Label Studio results and our tag JSON
(skit_components.annotations.labeling), without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from skit_components.annotations import TASK_TYPES, RequestRefused
from skit_components.annotations.labeling import (
    LAYOUTS,
    label_config,
    project_labels,
    result_to_tag,
    tag_to_result,
)

TAGS = {
    "intent": {"choices": ["promise_to_pay"]},
    "entity": {
        "entities": [
            {"type": "date", "text": "tomorrow", "start": 11, "end": 19},
            {"type": "time", "text": "at five", "start": 0, "end": 7},
        ]
    },
    "transcription": {"text": "i will pay <noise> tomorrow"},
    "call": {"choices": ["promise_to_pay", "dispute"]},
    "conversation": {"choices": ["bad"], "text": "the bot repeats itself"},
}


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_a_tag_survives_the_round_trip_through_a_result(task_type):
    result = tag_to_result(task_type, TAGS[task_type])
    layout = LAYOUTS[task_type]
    assert {item["to_name"] for item in result} == {layout.object_name}
    back = result_to_tag(task_type, result)
    if task_type == "entity":
        # Spans come back in text order.
        assert back["entities"] == sorted(TAGS["entity"]["entities"], key=lambda e: e["start"])
    else:
        assert back == TAGS[task_type]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_configs_are_xml_naming_the_controls_and_data_the_layout_says(task_type):
    labels = (
        project_labels(task_type, ["yes", "no", "yes", " "]) if task_type != "transcription" else ()
    )
    root = ET.fromstring(label_config(task_type, labels))
    names = {element.get("name") for element in root.iter() if element.get("name")}
    layout = LAYOUTS[task_type]
    assert {layout.object_name, layout.choices or layout.object_name} <= names
    values = {
        element.get("value") for element in root.iter() if element.get("value", "").startswith("$")
    }
    assert values == {f"${key}" for key in layout.required_data}
    offered = [c.get("value") for c in root.iter() if c.tag in ("Choice", "Label")]
    assert offered == list(labels)


def test_labels_default_or_are_required():
    assert project_labels("entity", []) == ("date", "time")
    assert project_labels("conversation", []) == ("good", "bad")
    assert project_labels("transcription", []) == ()
    assert project_labels("intent", [" a ", "b", "a"]) == ("a", "b")
    for task_type in ("intent", "call"):
        with pytest.raises(RequestRefused, match="needs labels"):
            project_labels(task_type, [])


def test_labels_are_escaped_in_the_config():
    config = label_config("intent", ['say "hi" & <bye>'])
    (choice,) = ET.fromstring(config).iter("Choice")
    assert choice.get("value") == 'say "hi" & <bye>'


def test_an_empty_submission_has_the_types_keys():
    assert result_to_tag("intent", []) == {"choices": []}
    assert result_to_tag("entity", []) == {"entities": []}
    assert result_to_tag("transcription", []) == {"text": ""}
