import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from skit.pipelines.v1 import run_pb2 as _run_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATE_UNSPECIFIED: _ClassVar[DeliveryState]
    DELIVERY_STATE_PENDING: _ClassVar[DeliveryState]
    DELIVERY_STATE_DELIVERED: _ClassVar[DeliveryState]
    DELIVERY_STATE_FAILED: _ClassVar[DeliveryState]
DELIVERY_STATE_UNSPECIFIED: DeliveryState
DELIVERY_STATE_PENDING: DeliveryState
DELIVERY_STATE_DELIVERED: DeliveryState
DELIVERY_STATE_FAILED: DeliveryState

class Subscription(_message.Message):
    __slots__ = ("name", "filter", "notify_states", "sink", "creator", "create_time", "cursor", "health")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_STATES_FIELD_NUMBER: _ClassVar[int]
    SINK_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    filter: RunFilter
    notify_states: _containers.RepeatedScalarFieldContainer[_run_pb2.RunState]
    sink: Sink
    creator: str
    create_time: _timestamp_pb2.Timestamp
    cursor: int
    health: SubscriptionHealth
    def __init__(self, name: _Optional[str] = ..., filter: _Optional[_Union[RunFilter, _Mapping]] = ..., notify_states: _Optional[_Iterable[_Union[_run_pb2.RunState, str]]] = ..., sink: _Optional[_Union[Sink, _Mapping]] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cursor: _Optional[int] = ..., health: _Optional[_Union[SubscriptionHealth, _Mapping]] = ...) -> None: ...

class RunFilter(_message.Message):
    __slots__ = ("pipeline", "states", "labels", "create_time_after", "create_time_before")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_BEFORE_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    states: _containers.RepeatedScalarFieldContainer[_run_pb2.RunState]
    labels: _containers.ScalarMap[str, str]
    create_time_after: _timestamp_pb2.Timestamp
    create_time_before: _timestamp_pb2.Timestamp
    def __init__(self, pipeline: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_run_pb2.RunState, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., create_time_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Sink(_message.Message):
    __slots__ = ("slack", "webhook")
    SLACK_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    slack: SlackSink
    webhook: WebhookSink
    def __init__(self, slack: _Optional[_Union[SlackSink, _Mapping]] = ..., webhook: _Optional[_Union[WebhookSink, _Mapping]] = ...) -> None: ...

class SlackSink(_message.Message):
    __slots__ = ("channel", "thread_ts", "token_secret")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    THREAD_TS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    channel: str
    thread_ts: str
    token_secret: str
    def __init__(self, channel: _Optional[str] = ..., thread_ts: _Optional[str] = ..., token_secret: _Optional[str] = ...) -> None: ...

class WebhookSink(_message.Message):
    __slots__ = ("url", "signing_secret")
    URL_FIELD_NUMBER: _ClassVar[int]
    SIGNING_SECRET_FIELD_NUMBER: _ClassVar[int]
    url: str
    signing_secret: str
    def __init__(self, url: _Optional[str] = ..., signing_secret: _Optional[str] = ...) -> None: ...

class SubscriptionHealth(_message.Message):
    __slots__ = ("pending_deliveries", "failed_deliveries", "delivered_deliveries", "last_outcome", "last_attempt_time")
    PENDING_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    FAILED_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LAST_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    pending_deliveries: int
    failed_deliveries: int
    delivered_deliveries: int
    last_outcome: str
    last_attempt_time: _timestamp_pb2.Timestamp
    def __init__(self, pending_deliveries: _Optional[int] = ..., failed_deliveries: _Optional[int] = ..., delivered_deliveries: _Optional[int] = ..., last_outcome: _Optional[str] = ..., last_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("name", "run", "run_state", "cursor", "state", "attempts", "next_attempt_time", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    RUN_STATE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    run: str
    run_state: _run_pb2.RunState
    cursor: int
    state: DeliveryState
    attempts: _containers.RepeatedCompositeFieldContainer[DeliveryAttempt]
    next_attempt_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., run: _Optional[str] = ..., run_state: _Optional[_Union[_run_pb2.RunState, str]] = ..., cursor: _Optional[int] = ..., state: _Optional[_Union[DeliveryState, str]] = ..., attempts: _Optional[_Iterable[_Union[DeliveryAttempt, _Mapping]]] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeliveryAttempt(_message.Message):
    __slots__ = ("time", "outcome", "http_status")
    TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    outcome: str
    http_status: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[str] = ..., http_status: _Optional[int] = ...) -> None: ...
