"""Names the field of a request's bytes that breaks it: a string that is not UTF-8 (which
makes protobuf refuse the whole message) or the largest field of one that is too big.

Both read the bytes with a twin of the request's message type in which every string is
`bytes` and every map a list of entries: that parses whatever a string holds, so the
offending field can be named as the rest of the API names fields (`run.parameters.lang`,
`run.labels.team`, `run.parameters.items[2]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

if TYPE_CHECKING:
    # The type protobuf's stubs give the descriptors of generated messages (upb's own).
    from google._upb._message import FileDescriptor as _UpbFileDescriptor
    from google.protobuf import descriptor_pb2

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_SCALAR_BYTES = 8
"""What a number or a boolean weighs when fields are compared by size."""


@dataclass(frozen=True)
class _Twin:
    message_class: type[Message]
    strings: frozenset[str]
    """Full names of the fields that are strings in the original."""
    maps: frozenset[tuple[str, str]]
    """(message full name, field name) of the fields that are maps in the original."""


def _loosen(message: descriptor_pb2.DescriptorProto, scope: str, twin: _TwinBuilder) -> None:
    from google.protobuf import descriptor_pb2

    name = f"{scope}.{message.name}" if scope else message.name
    entries = {f".{name}.{n.name}" for n in message.nested_type if n.options.map_entry}
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            twin.strings.add(f"{name}.{field.name}")
        if field.type_name in entries:
            twin.maps.add((name, field.name))
    for nested in message.nested_type:
        # A map's key may not be bytes: its entries become plain repeated messages.
        nested.options.map_entry = False
        _loosen(nested, name, twin)


class _TwinBuilder:
    def __init__(self) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.strings: set[str] = set()
        self.maps: set[tuple[str, str]] = set()
        self._added: set[str] = set()

    def add(self, file: FileDescriptor | _UpbFileDescriptor) -> None:
        if file.name in self._added:
            return
        # Imported here: only a refused request needs a twin, and descriptor_pb2 costs the
        # server's start a few ms.
        from google.protobuf import descriptor_pb2

        for dependency in file.dependencies:
            self.add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        for message in proto.message_type:
            _loosen(message, proto.package, self)
        self.pool.Add(proto)
        self._added.add(file.name)


_TWINS: dict[str, _Twin] = {}


def _twin(message_class: type[Message]) -> _Twin:
    descriptor = message_class.DESCRIPTOR
    twin = _TWINS.get(descriptor.full_name)
    if twin is None:
        builder = _TwinBuilder()
        builder.add(descriptor.file)
        twin = _Twin(
            message_factory.GetMessageClass(
                builder.pool.FindMessageTypeByName(descriptor.full_name)
            ),
            frozenset(builder.strings),
            frozenset(builder.maps),
        )
        _TWINS[descriptor.full_name] = twin
    return twin


def _parse_twin(message_class: type[Message], data: bytes) -> tuple[_Twin, Message] | None:
    twin = _twin(message_class)
    try:
        return twin, twin.message_class.FromString(data)
    except DecodeError:
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _size(value: Any) -> int:
    if isinstance(value, Message):
        return value.ByteSize()
    if isinstance(value, bytes | str):
        return len(value)
    return _SCALAR_BYTES


def _children(twin: _Twin, message: Message) -> Iterator[tuple[str, FieldDescriptor, Any]]:
    """(path suffix, field, value) of each value set in `message`, map entries and list
    items one by one (with the entry's value field); google.protobuf.Struct and Value read
    as the JSON they stand for."""
    owner = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        if owner == _VALUE:
            yield "", field, value
        elif (owner, field.name) in twin.maps:
            prefix = "" if owner == _STRUCT else f".{field.name}"
            for entry in value:
                yield (
                    f"{prefix}.{_text(entry.key)}",
                    entry.DESCRIPTOR.fields_by_name["value"],
                    entry.value,
                )
        elif field.is_repeated:
            prefix = "" if owner == _LIST_VALUE else f".{field.name}"
            for index, item in enumerate(value):
                yield f"{prefix}[{index}]", field, item
        else:
            yield f".{field.name}", field, value


def _join(path: str, suffix: str) -> str:
    return (path + suffix).lstrip(".")


def _not_utf8(twin: _Twin, message: Message, path: str) -> Iterator[str]:
    owner = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        if (owner, field.name) in twin.maps and any(not _is_utf8(e.key) for e in value):
            # A key that is not UTF-8 cannot name a field: its map is named instead.
            yield _join(path, "" if owner == _STRUCT else f".{field.name}")
    for suffix, field, value in _children(twin, message):
        where = _join(path, suffix)
        if isinstance(value, Message):
            yield from _not_utf8(twin, value, where)
        elif field.full_name in twin.strings and not _is_utf8(value):
            yield where


def _is_utf8(value: Any) -> bool:
    if not isinstance(value, bytes):
        return True
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def not_utf8(message_class: type[Message], data: bytes) -> list[str]:
    """The fields of a serialized `message_class` whose strings are not UTF-8; empty when
    the bytes are broken otherwise."""
    parsed = _parse_twin(message_class, data)
    if parsed is None:
        return []
    twin, message = parsed
    return list(dict.fromkeys(_not_utf8(twin, message, "")))


def largest_field(message_class: type[Message], data: bytes) -> tuple[str, int]:
    """The path of the largest leaf field of a serialized `message_class`, found by
    following the largest field at each level, and its size in bytes; ("", 0) when the
    bytes do not parse."""
    parsed = _parse_twin(message_class, data)
    if parsed is None:
        return "", 0
    twin, current = parsed
    path, size = "", len(data)
    while True:
        best = max(_children(twin, current), key=lambda child: _size(child[2]), default=None)
        if best is None:
            return path, size
        suffix, _, value = best
        path, size = _join(path, suffix), _size(value)
        if not isinstance(value, Message):
            return path, size
        current = value
