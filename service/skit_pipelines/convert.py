"""Domain values <-> skit.pipelines.v1 messages."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import status_pb2

from skit.pipelines.v1 import pipeline_pb2, pipeline_service_pb2, run_pb2
from skit_pipelines import domain, rules
from skit_pipelines.errors import InvalidArgument
from skit_pipelines.identity_memo import DEFAULT_SIZE, IdentityMemo

# The domain enums carry the proto enums' numbers; the generated stubs type enum fields
# as their wrapper class, hence the casts from int below.


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_PER_DAY = 86_400
_NANOS_PER_MICROSECOND = 1_000


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """As Timestamp.FromDatetime (a naive value is local time), by one subtraction: its
    time tuple and calendar.timegm took ~5 us a field, and a run with three steps has ten,
    all converted between a revision's store write and its first delivery."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.astimezone(UTC)
    elapsed = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=elapsed.days * _SECONDS_PER_DAY + elapsed.seconds,
        nanos=elapsed.microseconds * _NANOS_PER_MICROSECOND,
    )


# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799
_MAX_NANOS = 999_999_999


def from_timestamp(message: timestamp_pb2.Timestamp, *, field: str) -> datetime:
    """The Timestamp as an aware datetime; InvalidArgument (naming the field) outside years
    1 to 9999 or with nanos outside 0 to 999,999,999, which datetime cannot hold."""
    if not _MIN_TIMESTAMP_SECONDS <= message.seconds <= _MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            f"seconds {message.seconds} is outside years 1 to 9999", field=f"{field}.seconds"
        )
    if not 0 <= message.nanos <= _MAX_NANOS:
        raise InvalidArgument(
            f"nanos {message.nanos} must be from 0 to {_MAX_NANOS}", field=f"{field}.nanos"
        )
    return message.ToDatetime(tzinfo=UTC)


def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(values))
    return message


def from_struct(message: struct_pb2.Struct, *, field: str) -> dict[str, Any]:
    """The Struct as plain values; InvalidArgument (naming the field) for NaN or infinity,
    which JSON and the pipeline parameters cannot carry."""
    return {key: _from_value(item, f"{field}.{key}") for key, item in message.fields.items()}


def _from_value(message: struct_pb2.Value, field: str) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(message.number_value):
            raise InvalidArgument("numbers must be finite (no NaN or infinity)", field=field)
        return message.number_value
    if kind == "struct_value":
        return from_struct(message.struct_value, field=field)
    if kind == "list_value":
        return [
            _from_value(item, f"{field}[{i}]") for i, item in enumerate(message.list_value.values)
        ]
    if kind == "string_value":
        return message.string_value
    if kind == "bool_value":
        return message.bool_value
    return None


def value(item: Any) -> struct_pb2.Value:
    # Imported at the first conversion: it costs the server's start a few ms.
    from google.protobuf import json_format

    message = struct_pb2.Value()
    json_format.ParseDict(item, message)
    return message


def status(error: domain.ErrorInfo | None) -> status_pb2.Status | None:
    if error is None:
        return None
    return status_pb2.Status(code=error.code, message=error.message)


def artifact(item: domain.Artifact) -> run_pb2.Artifact:
    return run_pb2.Artifact(
        name=item.name,
        uri=item.uri,
        step=item.step,
        sha256=item.sha256,
        size_bytes=item.size_bytes,
        type=item.type,
        metadata=struct(item.metadata) if item.metadata else None,
    )


def metric(item: domain.Metric) -> run_pb2.Metric:
    return run_pb2.Metric(name=item.name, value=item.value, artifact=item.artifact)


def step(item: domain.Step) -> run_pb2.Step:
    return run_pb2.Step(
        name=item.name,
        component=item.component,
        image=item.image,
        state=cast("run_pb2.StepState", int(item.state)),
        attempt=item.attempt,
        cached=item.cached,
        start_time=timestamp(item.start_time),
        end_time=timestamp(item.end_time),
        output_artifacts=[artifact(a) for a in item.output_artifacts],
        output_parameters=struct(item.output_parameters),
        error=status(item.error),
        metrics=[metric(m) for m in item.metrics],
    )


def run(
    item: domain.Run, step_message: Callable[[domain.Step], run_pb2.Step] = step
) -> run_pb2.Run:
    return run_pb2.Run(
        name=item.name,
        pipeline=f"pipelines/{item.pipeline}",
        pipeline_version=item.pipeline_version,
        parameters=struct(item.parameters),
        labels=dict(item.labels),
        state=cast("run_pb2.RunState", int(item.state)),
        create_time=timestamp(item.create_time),
        start_time=timestamp(item.start_time),
        end_time=timestamp(item.end_time),
        update_time=timestamp(item.update_time),
        steps=[step_message(s) for s in item.steps],
        outputs=[artifact(a) for a in item.outputs],
        error=status(item.error),
        revision=item.revision,
        request_id=item.request_id,
        retry_of=item.retry_of,
        creator=item.creator,
        backend=item.backend,
        backend_run_id=item.backend_run_id,
        backend_run_url=item.backend_run_url,
        output_parameters=struct(item.output_parameters),
        disable_cache=item.disable_cache,
    )


class StepMessages(IdentityMemo[domain.Step, run_pb2.Step]):
    """convert.step, remembered for the last `size` steps converted: converting a revision
    for its watchers converts only the step it changed, and copies the others' messages
    from an earlier revision. Converting a step took two thirds of a three-step run's
    conversion, which happens between the store write and the revision's first delivery.
    """

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        super().__init__(step, size)


def pipeline(item: domain.Pipeline, *, with_spec: bool = False) -> pipeline_pb2.Pipeline:
    message = pipeline_pb2.Pipeline(
        name=item.name,
        display_name=item.display_name,
        description=item.description,
        version=item.version,
        parameters=[
            pipeline_pb2.PipelineParameter(
                name=p.name,
                type=cast("pipeline_pb2.ParameterType", int(p.type)),
                required=p.required,
                default_value=value(p.default) if p.default is not None else None,
                description=p.description,
                rules=[parameter_rule(r) for r in p.rules],
            )
            for p in item.parameters
        ],
    )
    if with_spec:
        message.pipeline_spec.update(dict(item.spec))
    return message


def parameter_rule(item: rules.ParameterRule) -> pipeline_pb2.ParameterRule:
    message = pipeline_pb2.ParameterRule(description=item.description)
    if isinstance(item, rules.Each):
        message.each_item = True
        inner: rules.ParameterRule = item.rule
    else:
        inner = item
    if isinstance(inner, rules.Date):
        message.date.SetInParent()
        message.date.not_before = inner.not_before
    elif isinstance(inner, rules.TimeZone):
        message.time_zone.SetInParent()
    elif isinstance(inner, rules.OneOf):
        message.enumeration.SetInParent()
        message.enumeration.values.extend(inner.values)
    elif isinstance(inner, rules.Range):
        message.range.SetInParent()
        if inner.minimum is not None:
            message.range.minimum = inner.minimum
        if inner.maximum is not None:
            message.range.maximum = inner.maximum
        message.range.integer = inner.integer
    elif isinstance(inner, rules.Pattern):
        message.pattern.SetInParent()
        message.pattern.regex = inner.regex
    elif isinstance(inner, rules.NonEmpty):
        message.non_empty.SetInParent()
    message.allow_empty = getattr(inner, "allow_empty", False)
    return message


_LOG_STREAMS = {
    "stdout": pipeline_service_pb2.LOG_STREAM_STDOUT,
    "stderr": pipeline_service_pb2.LOG_STREAM_STDERR,
}


def log_line(item: domain.LogLine) -> pipeline_service_pb2.LogLine:
    return pipeline_service_pb2.LogLine(
        time=timestamp(item.time),
        stream=_LOG_STREAMS.get(item.stream, pipeline_service_pb2.LOG_STREAM_UNSPECIFIED),
        text=item.text,
        attempt=item.attempt,
    )
