"""The checks at the door, below the gRPC server: parameter and label limits, timestamps,
and error statuses that fit in gRPC's trailers whatever the error holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from skit_pipelines import convert
from skit_pipelines.errors import FieldViolation, InvalidArgument
from skit_pipelines.limits import RequestLimits, check_labels, check_parameters
from skit_pipelines.servicer import error_status

LIMITS = RequestLimits(
    max_parameter_bytes=10,
    max_parameters=3,
    max_parameters_bytes=25,
    max_labels=2,
    max_label_key_length=5,
    max_label_value_length=4,
)


def violated(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


@pytest.mark.parametrize(
    ("parameters", "reason", "fields"),
    [
        ({"a": 1, "b": 2, "c": 3, "d": 4}, "TOO_MANY_PARAMETERS", ["run.parameters"]),
        ({"a": "x" * 11}, "INVALID_PARAMETERS", ["run.parameters.a"]),
        ({"a": [1, 2, 3, 4, 5]}, "INVALID_PARAMETERS", ["run.parameters.a"]),
        ({"a": "x" * 10, "b": "y" * 10, "c": "z" * 10}, "PARAMETERS_TOO_LARGE", ["run.parameters"]),
        (
            {"a": "\0", "b": ["\0"]},
            "INVALID_PARAMETERS",
            ["run.parameters.a", "run.parameters.b[0]"],
        ),
    ],
)
def test_parameters_over_a_limit_name_the_field(
    parameters: dict, reason: str, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_parameters(parameters, LIMITS)
    assert caught.value.reason == reason
    assert violated(caught.value) == fields


def test_parameters_within_the_limits_pass() -> None:
    check_parameters({"a": "x" * 10, "b": [1, 2], "c": {"k": 1}}, LIMITS)
    check_parameters({"a": "ünï"}, LIMITS)


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"a": "1", "b": "2", "c": "3"}, "run.labels"),
        ({"longer": "1"}, "run.labels.longer"),
        ({"Team": "1"}, "run.labels.Team"),
        ({"team": "12345"}, "run.labels.team"),
        ({"team": "\0"}, "run.labels.team"),
    ],
)
def test_labels_over_a_limit_name_the_label(labels: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_labels(labels, LIMITS)
    assert violated(caught.value) == [field]


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (253_402_300_800, 0, "after.seconds"),
        (-62_135_596_801, 0, "after.seconds"),
        (0, -1, "after.nanos"),
        (0, 1_000_000_000, "after.nanos"),
    ],
)
def test_timestamps_out_of_range_are_invalid_argument(seconds: int, nanos: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.from_timestamp(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos), field="after")
    assert violated(caught.value) == [field]


def test_timestamps_at_the_ends_of_the_range_convert() -> None:
    first = convert.from_timestamp(timestamp_pb2.Timestamp(seconds=-62_135_596_800), field="t")
    assert first == datetime(1, 1, 1, tzinfo=UTC)
    last = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    assert convert.from_timestamp(last, field="t").year == 9999


def test_an_error_with_10k_long_violations_fits_in_the_trailers() -> None:
    violations = [
        FieldViolation(f"run.parameters.p{i}-{'x' * 500}", "d" * 1000) for i in range(10_000)
    ]
    status = error_status(InvalidArgument("é" * 100_000, violations=violations))
    assert status.ByteSize() <= 3 * 1024
    assert len(status.message.encode()) <= 512 and status.message.endswith("…")
    bad = error_details_pb2.BadRequest()
    assert status.details[-1].Unpack(bad)
    *shown, last = bad.field_violations
    assert shown and all(len(v.description.encode()) <= 256 for v in shown)
    assert last.field == "run.parameters"
    assert last.description == f"… and {10_000 - len(shown)} more"


def test_an_error_with_few_violations_keeps_them_all() -> None:
    violations = [FieldViolation("run.parameters.a", "bad"), FieldViolation("run.labels.b", "bad")]
    status = error_status(InvalidArgument("two problems", violations=violations))
    bad = error_details_pb2.BadRequest()
    assert status.details[-1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["run.parameters.a", "run.labels.b"]
    assert status.message == "two problems"
