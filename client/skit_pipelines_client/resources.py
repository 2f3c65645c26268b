"""What the client returns: runs, steps and pipelines as frozen dataclasses, with states as
enums that print their names, times as datetimes and values typed.

Parameter and output values travel as google.protobuf.Struct, whose only number is a
double: an integer parameter set to 20 arrives as 20.0. `ValueTypes`, read from the
pipeline (its parameters' types and its IR's outputDefinitions), turns them back: INTEGER
values become ints, DOUBLE values stay floats. A value the pipeline declares no type for
(a pipeline the server no longer has, an item of a list) reads as JSON does: a whole
number is an int. Each object keeps the message it came from in `raw`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.rpc import status_pb2

from skit.pipelines.v1 import pipeline_pb2, pipeline_service_pb2, run_pb2

_IR_TYPES = {
    "STRING": "STRING",
    "NUMBER_INTEGER": "INTEGER",
    "NUMBER_DOUBLE": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "LIST": "LIST",
    "STRUCT": "STRUCT",
}
_COMPONENT_PREFIX = "comp-"
_NUMBER_FORMATS = frozenset("bcdnoxX")


class _NamedEnum(enum.IntEnum):
    """An IntEnum that prints its name (Python 3.11's IntEnum prints the number) and
    keeps a number a newer server sends as a member named by it."""

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        if spec and spec[-1] in _NUMBER_FORMATS:  # f"{state:d}" still gives the number
            return int.__format__(self, spec)
        return format(self.name, spec)

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_ = str(value)
        member._value_ = value
        return member


class RunState(_NamedEnum):
    """skit.pipelines.v1.RunState without its prefix: `print(run.state)` prints SUCCEEDED.
    Members equal the generated constants (RunState.SUCCEEDED == run_pb2.RUN_STATE_SUCCEEDED)."""

    UNSPECIFIED = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLING = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        """Whether the run has ended: SUCCEEDED, FAILED or CANCELLED."""
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class StepState(_NamedEnum):
    """skit.pipelines.v1.StepState without its prefix."""

    UNSPECIFIED = 0
    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    SKIPPED = 5
    CACHED = 6
    CANCELLED = 7

    @property
    def terminal(self) -> bool:
        """Whether the step has ended (anything but UNSPECIFIED, PENDING and RUNNING)."""
        return self not in (StepState.UNSPECIFIED, StepState.PENDING, StepState.RUNNING)


class ParameterType(_NamedEnum):
    """skit.pipelines.v1.ParameterType without its prefix."""

    UNSPECIFIED = 0
    STRING = 1
    INTEGER = 2
    DOUBLE = 3
    BOOLEAN = 4
    LIST = 5
    STRUCT = 6


def typed(value: Any, kind: ParameterType | None) -> Any:
    """A value as its declared type has it: an INTEGER's whole double becomes an int, a
    DOUBLE stays a float; in anything else (lists, objects, no type known) whole numbers
    become ints, as JSON reads them."""
    if isinstance(value, float):
        if kind is ParameterType.DOUBLE or not (math.isfinite(value) and value.is_integer()):
            return value
        return int(value)
    if isinstance(value, list):
        return [typed(item, None) for item in value]
    if isinstance(value, dict):
        return {key: typed(item, None) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class ValueTypes:
    """The declared types of a pipeline's values, by name."""

    parameters: Mapping[str, ParameterType] = field(default_factory=dict)
    """The run parameters."""
    outputs: Mapping[str, ParameterType] = field(default_factory=dict)
    """The run's output parameters (the IR root's outputDefinitions)."""
    step_outputs: Mapping[str, Mapping[str, ParameterType]] = field(default_factory=dict)
    """Each component's output parameters, by component name as steps carry it
    ("fetch-calls", without the IR's "comp-")."""

    @classmethod
    def of(cls, pipeline: pipeline_pb2.Pipeline) -> ValueTypes:
        """Read from a Pipeline message: its parameters, and its pipeline_spec when set
        (GetPipeline), which declares the outputs."""
        spec = (
            json_format.MessageToDict(pipeline.pipeline_spec)
            if pipeline.HasField("pipeline_spec")
            else None
        )
        return cls.read(pipeline, spec)

    @classmethod
    def read(cls, pipeline: pipeline_pb2.Pipeline, spec: Mapping[str, Any] | None) -> ValueTypes:
        """Like `of`, with the pipeline_spec already read into `spec`."""
        parameters = {p.name: ParameterType(p.type) for p in pipeline.parameters}
        if spec is None:
            return cls(parameters)
        step_outputs = {
            name.removeprefix(_COMPONENT_PREFIX): _declared_outputs(component)
            for name, component in spec.get("components", {}).items()
        }
        return cls(parameters, _declared_outputs(spec.get("root", {})), step_outputs)

    def parameters_of(self, values: struct_pb2.Struct) -> dict[str, Any]:
        return _typed_struct(values, self.parameters)

    def outputs_of(self, values: struct_pb2.Struct) -> dict[str, Any]:
        return _typed_struct(values, self.outputs)

    def step_outputs_of(self, component: str, values: struct_pb2.Struct) -> dict[str, Any]:
        return _typed_struct(values, self.step_outputs.get(component, {}))


UNTYPED = ValueTypes()
"""No types known: whole numbers read as ints."""


def _declared_outputs(component: Mapping[str, Any]) -> dict[str, ParameterType]:
    declared = component.get("outputDefinitions", {}).get("parameters", {})
    return {
        name: ParameterType[_IR_TYPES.get(definition.get("parameterType", ""), "UNSPECIFIED")]
        for name, definition in declared.items()
    }


def _typed_struct(values: struct_pb2.Struct, types: Mapping[str, ParameterType]) -> dict[str, Any]:
    return {
        key: typed(json_format.MessageToDict(item), types.get(key))
        for key, item in values.fields.items()
    }


def _time(value: timestamp_pb2.Timestamp) -> datetime | None:
    if not value.seconds and not value.nanos:
        return None
    return value.ToDatetime(tzinfo=UTC)


def _status_code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


@dataclass(frozen=True)
class Status:
    """Why a run or a step failed."""

    code: grpc.StatusCode
    """ABORTED for a step that failed, FAILED_PRECONDITION for one that refused its input."""
    message: str

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def of(cls, message: status_pb2.Status) -> Status:
        return cls(_status_code(message.code), message.message)


@dataclass(frozen=True)
class Artifact:
    """A file or directory a run produced."""

    name: str
    uri: str
    """file:///absolute/path or s3://bucket/key."""
    step: str
    sha256: str
    size_bytes: int
    type: str
    """The KFP artifact type, e.g. "system.Dataset"; "" when unknown."""
    metadata: Mapping[str, Any]
    raw: run_pb2.Artifact = field(repr=False, compare=False)

    @classmethod
    def of(cls, message: run_pb2.Artifact) -> Artifact:
        return cls(
            name=message.name,
            uri=message.uri,
            step=message.step,
            sha256=message.sha256,
            size_bytes=message.size_bytes,
            type=message.type,
            metadata=typed(json_format.MessageToDict(message.metadata), None),
            raw=message,
        )


@dataclass(frozen=True)
class Metric:
    """A scalar metric a step logged (KFP's Metrics.log_metric)."""

    name: str
    value: float
    artifact: str
    """The step's Metrics output holding it."""


@dataclass(frozen=True)
class Step:
    """One task execution of a run."""

    name: str
    """The task path, e.g. "fetch-calls" or "for-loop-1[2]/square"."""
    component: str
    image: str
    state: StepState
    attempt: int
    cached: bool
    start_time: datetime | None
    end_time: datetime | None
    output_artifacts: tuple[Artifact, ...]
    output_parameters: Mapping[str, Any]
    """Typed by the component's outputDefinitions."""
    metrics: tuple[Metric, ...]
    error: Status | None
    raw: run_pb2.Step = field(repr=False, compare=False)

    @classmethod
    def of(cls, message: run_pb2.Step, types: ValueTypes = UNTYPED) -> Step:
        return cls(
            name=message.name,
            component=message.component,
            image=message.image,
            state=StepState(message.state),
            attempt=message.attempt,
            cached=message.cached,
            start_time=_time(message.start_time),
            end_time=_time(message.end_time),
            output_artifacts=tuple(Artifact.of(a) for a in message.output_artifacts),
            output_parameters=types.step_outputs_of(message.component, message.output_parameters),
            metrics=tuple(Metric(m.name, m.value, m.artifact) for m in message.metrics),
            error=Status.of(message.error) if message.HasField("error") else None,
            raw=message,
        )

    def to_json(self) -> dict[str, Any]:
        """The step as the API's JSON (proto3 JSON names), its values typed."""
        data = json_format.MessageToDict(self.raw)
        if "outputParameters" in data:
            data["outputParameters"] = dict(self.output_parameters)
        return data


@dataclass(frozen=True)
class Run:
    """A run at one revision."""

    name: str
    """"runs/{run}"."""
    pipeline: str
    """"pipelines/{pipeline}"."""
    pipeline_version: str
    parameters: Mapping[str, Any]
    """Typed by the pipeline's parameters."""
    labels: Mapping[str, str]
    state: RunState
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime | None
    steps: tuple[Step, ...]
    """In execution order: by the DAG, then by start time."""
    outputs: tuple[Artifact, ...]
    output_parameters: Mapping[str, Any]
    """Typed by the pipeline's outputs."""
    error: Status | None
    revision: int
    request_id: str
    retry_of: str
    creator: str
    backend: str
    backend_run_id: str
    backend_run_url: str
    disable_cache: bool
    """The run looks no step up in the step cache: every step runs."""
    raw: run_pb2.Run = field(repr=False, compare=False)

    @property
    def id(self) -> str:
        """The run's id, its name without "runs/"."""
        return self.name.removeprefix("runs/")

    @classmethod
    def of(cls, message: run_pb2.Run, types: ValueTypes = UNTYPED) -> Run:
        return cls(
            name=message.name,
            pipeline=message.pipeline,
            pipeline_version=message.pipeline_version,
            parameters=types.parameters_of(message.parameters),
            labels=dict(message.labels),
            state=RunState(message.state),
            create_time=_time(message.create_time),
            start_time=_time(message.start_time),
            end_time=_time(message.end_time),
            update_time=_time(message.update_time),
            steps=tuple(Step.of(s, types) for s in message.steps),
            outputs=tuple(Artifact.of(a) for a in message.outputs),
            output_parameters=types.outputs_of(message.output_parameters),
            error=Status.of(message.error) if message.HasField("error") else None,
            revision=message.revision,
            request_id=message.request_id,
            retry_of=message.retry_of,
            creator=message.creator,
            backend=message.backend,
            backend_run_id=message.backend_run_id,
            backend_run_url=message.backend_run_url,
            disable_cache=message.disable_cache,
            raw=message,
        )

    def to_json(self) -> dict[str, Any]:
        """The run as the API's JSON (proto3 JSON names, as grpcurl prints it), with its
        parameters and outputs typed: 20, not 20.0, for an integer."""
        data = json_format.MessageToDict(self.raw)
        if "parameters" in data:
            data["parameters"] = dict(self.parameters)
        if "outputParameters" in data:
            data["outputParameters"] = dict(self.output_parameters)
        if "steps" in data:
            data["steps"] = [step.to_json() for step in self.steps]
        return data


@dataclass(frozen=True)
class ParameterRule:
    """A rule a parameter's value must meet besides its type; CreateRun enforces it."""

    description: str
    """What a value must be, in words: "a date YYYY-MM-DD (or empty)", "at least 1"."""
    kind: str
    """"date", "time_zone", "enumeration", "range", "pattern" or "non_empty"."""
    each_item: bool
    """It applies to every item of a list."""
    raw: pipeline_pb2.ParameterRule = field(repr=False, compare=False)

    @classmethod
    def of(cls, message: pipeline_pb2.ParameterRule) -> ParameterRule:
        return cls(
            description=message.description,
            kind=message.WhichOneof("kind") or "",
            each_item=message.each_item,
            raw=message,
        )


@dataclass(frozen=True)
class PipelineParameter:
    """One parameter of a pipeline."""

    name: str
    type: ParameterType
    required: bool
    default: Any
    """The value a run gets when it sets none (typed); None when required."""
    description: str
    rules: tuple[ParameterRule, ...]

    @classmethod
    def of(cls, message: pipeline_pb2.PipelineParameter) -> PipelineParameter:
        kind = ParameterType(message.type)
        default = None
        if message.HasField("default_value"):
            default = typed(json_format.MessageToDict(message.default_value), kind)
        return cls(
            name=message.name,
            type=kind,
            required=message.required,
            default=default,
            description=message.description,
            rules=tuple(ParameterRule.of(r) for r in message.rules),
        )


@dataclass(frozen=True)
class Pipeline:
    """A pipeline that can be run."""

    name: str
    """"pipelines/{pipeline}"."""
    display_name: str
    description: str
    version: str
    """The content hash of its compiled IR."""
    parameters: tuple[PipelineParameter, ...]
    """In declaration order."""
    pipeline_spec: Mapping[str, Any] | None
    """The compiled IR (GetPipeline only)."""
    value_types: ValueTypes = field(repr=False, compare=False)
    raw: pipeline_pb2.Pipeline = field(repr=False, compare=False)

    @classmethod
    def of(cls, message: pipeline_pb2.Pipeline) -> Pipeline:
        spec = (
            json_format.MessageToDict(message.pipeline_spec)
            if message.HasField("pipeline_spec")
            else None
        )
        return cls(
            name=message.name,
            display_name=message.display_name,
            description=message.description,
            version=message.version,
            parameters=tuple(PipelineParameter.of(p) for p in message.parameters),
            pipeline_spec=spec,
            value_types=ValueTypes.read(message, spec),
            raw=message,
        )

    def to_json(self) -> dict[str, Any]:
        """The pipeline as the API's JSON, with defaults (and integer bounds) typed."""
        data = json_format.MessageToDict(self.raw)
        for item, parameter in zip(data.get("parameters", []), self.parameters, strict=True):
            if "defaultValue" in item:
                item["defaultValue"] = parameter.default
            for rule in item.get("rules", []):
                bounds = rule.get("range", {})
                for end in ("minimum", "maximum"):
                    if end in bounds and parameter.type is not ParameterType.DOUBLE:
                        bounds[end] = typed(bounds[end], None)
        return data


_LOG_STREAMS = {
    pipeline_service_pb2.LOG_STREAM_STDOUT: "stdout",
    pipeline_service_pb2.LOG_STREAM_STDERR: "stderr",
}


@dataclass(frozen=True)
class LogLine:
    """One line a step wrote."""

    time: datetime | None
    stream: str
    """"stdout" or "stderr" ("" if the server did not say)."""
    text: str
    attempt: int
    raw: pipeline_service_pb2.LogLine = field(repr=False, compare=False)

    @classmethod
    def of(cls, message: pipeline_service_pb2.LogLine) -> LogLine:
        return cls(
            time=_time(message.time),
            stream=_LOG_STREAMS.get(message.stream, ""),
            text=message.text,
            attempt=message.attempt,
            raw=message,
        )

    def to_json(self) -> dict[str, Any]:
        """The line as the API's JSON."""
        return json_format.MessageToDict(self.raw)
