from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParameterType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAMETER_TYPE_UNSPECIFIED: _ClassVar[ParameterType]
    PARAMETER_TYPE_STRING: _ClassVar[ParameterType]
    PARAMETER_TYPE_INTEGER: _ClassVar[ParameterType]
    PARAMETER_TYPE_DOUBLE: _ClassVar[ParameterType]
    PARAMETER_TYPE_BOOLEAN: _ClassVar[ParameterType]
    PARAMETER_TYPE_LIST: _ClassVar[ParameterType]
    PARAMETER_TYPE_STRUCT: _ClassVar[ParameterType]
PARAMETER_TYPE_UNSPECIFIED: ParameterType
PARAMETER_TYPE_STRING: ParameterType
PARAMETER_TYPE_INTEGER: ParameterType
PARAMETER_TYPE_DOUBLE: ParameterType
PARAMETER_TYPE_BOOLEAN: ParameterType
PARAMETER_TYPE_LIST: ParameterType
PARAMETER_TYPE_STRUCT: ParameterType

class Pipeline(_message.Message):
    __slots__ = ("name", "display_name", "description", "version", "parameters", "pipeline_spec")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_SPEC_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    description: str
    version: str
    parameters: _containers.RepeatedCompositeFieldContainer[PipelineParameter]
    pipeline_spec: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., version: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[PipelineParameter, _Mapping]]] = ..., pipeline_spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PipelineParameter(_message.Message):
    __slots__ = ("name", "type", "required", "default_value", "description", "rules")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ParameterType
    required: bool
    default_value: _struct_pb2.Value
    description: str
    rules: _containers.RepeatedCompositeFieldContainer[ParameterRule]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ParameterType, str]] = ..., required: _Optional[bool] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., description: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[ParameterRule, _Mapping]]] = ...) -> None: ...

class ParameterRule(_message.Message):
    __slots__ = ("description", "each_item", "allow_empty", "date", "time_zone", "enumeration", "range", "pattern", "non_empty")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EACH_ITEM_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EMPTY_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    ENUMERATION_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    NON_EMPTY_FIELD_NUMBER: _ClassVar[int]
    description: str
    each_item: bool
    allow_empty: bool
    date: DateRule
    time_zone: TimeZoneRule
    enumeration: EnumerationRule
    range: RangeRule
    pattern: PatternRule
    non_empty: NonEmptyRule
    def __init__(self, description: _Optional[str] = ..., each_item: _Optional[bool] = ..., allow_empty: _Optional[bool] = ..., date: _Optional[_Union[DateRule, _Mapping]] = ..., time_zone: _Optional[_Union[TimeZoneRule, _Mapping]] = ..., enumeration: _Optional[_Union[EnumerationRule, _Mapping]] = ..., range: _Optional[_Union[RangeRule, _Mapping]] = ..., pattern: _Optional[_Union[PatternRule, _Mapping]] = ..., non_empty: _Optional[_Union[NonEmptyRule, _Mapping]] = ...) -> None: ...

class DateRule(_message.Message):
    __slots__ = ("not_before",)
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    not_before: str
    def __init__(self, not_before: _Optional[str] = ...) -> None: ...

class TimeZoneRule(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EnumerationRule(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class RangeRule(_message.Message):
    __slots__ = ("minimum", "maximum", "integer")
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    minimum: float
    maximum: float
    integer: bool
    def __init__(self, minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., integer: _Optional[bool] = ...) -> None: ...

class PatternRule(_message.Message):
    __slots__ = ("regex",)
    REGEX_FIELD_NUMBER: _ClassVar[int]
    regex: str
    def __init__(self, regex: _Optional[str] = ...) -> None: ...

class NonEmptyRule(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
