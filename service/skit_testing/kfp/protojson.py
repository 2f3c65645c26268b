"""JSON as grpc-gateway writes and reads it, through the kfp-server-api models.

Answers are built as kfp_server_api model instances (so a field name the SDK does not know
fails) and written the way backend/src/apiserver/common/utils.go `CustomMarshaler` does:
protojson with UseProtoNames and EmitUnpopulated false, i.e. snake_case names and no
zero values (empty strings, 0, false, empty lists and maps, enum values named
*_UNSPECIFIED); timestamps as RFC 3339 in UTC with a "Z" (whole seconds: KFP stores
seconds). A set message stays even when empty, as protojson keeps a non-nil message.

Requests are read like protojson with DiscardUnknown false: both proto (snake_case) and
JSON (lowerCamelCase) names are accepted, any other field is INVALID_ARGUMENT
`proto: (line 1:<column>): unknown field "<name>"`, as grpc-gateway reports decoding
errors (status.Errorf(codes.InvalidArgument, "%v", err)).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kfp_server_api
from kfp_server_api import models

from skit_testing.kfp.errors import Code, gateway

_PRIMITIVES = frozenset({"str", "int", "bool", "float", "object", "date"})
_ENUM_ZERO = re.compile(r"_UNSPECIFIED$")
_OMIT = object()
_CLIENT = kfp_server_api.ApiClient()


def rfc3339(moment: datetime) -> str:
    """protojson's Timestamp format (whole seconds)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.strftime('%m-%dT%H:%M:%S')}Z"


def _model(type_name: str) -> Any:
    return getattr(models, type_name)


def _is_enum(type_name: str) -> bool:
    return type_name not in _PRIMITIVES and not _model(type_name).openapi_types


def _encode(value: Any, type_name: str) -> Any:
    if value is None:
        return _OMIT
    if type_name == "datetime":
        return rfc3339(value)
    if type_name.startswith("list["):
        items = [_encode(item, type_name[5:-1]) for item in value]
        return [i for i in items if i is not _OMIT] or _OMIT
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        encoded = {k: _encode(v, inner) for k, v in value.items()}
        return {k: v for k, v in encoded.items() if v is not _OMIT} or _OMIT
    if type_name == "object":
        return value
    if type_name in _PRIMITIVES:
        return value if value else _OMIT
    if _is_enum(type_name):
        return _OMIT if _ENUM_ZERO.search(str(value)) else value
    return to_json(value)


def to_json(model: Any) -> dict[str, Any]:
    """A kfp_server_api model as grpc-gateway would write its proto message."""
    out: dict[str, Any] = {}
    for attribute, type_name in model.openapi_types.items():
        encoded = _encode(getattr(model, attribute), type_name)
        if encoded is not _OMIT:
            out[model.attribute_map[attribute]] = encoded
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _unknown_field(raw: str, name: str) -> Exception:
    # protojson reports the position of the offending name.
    offset = raw.find(json.dumps(name))
    column = offset + 1 if offset >= 0 else 1
    return gateway(Code.INVALID_ARGUMENT, f'proto: (line 1:{column}): unknown field "{name}"')


def _normalize(data: Any, type_name: str, raw: str) -> Any:
    """Checks fields against the model and renames JSON names to proto names."""
    if data is None or type_name in _PRIMITIVES or type_name == "datetime":
        return data
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise gateway(Code.INVALID_ARGUMENT, f"proto: invalid value for {type_name}")
        return [_normalize(item, type_name[5:-1], raw) for item in data]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            raise gateway(Code.INVALID_ARGUMENT, f"proto: invalid value for {type_name}")
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return {k: _normalize(v, inner, raw) for k, v in data.items()}
    if _is_enum(type_name):
        return data
    klass = _model(type_name)
    if not isinstance(data, dict):
        raise gateway(Code.INVALID_ARGUMENT, f"proto: invalid value for {type_name}")
    names = {}
    for attribute, key in klass.attribute_map.items():
        names[key] = attribute
        names[_camel(key)] = attribute
    out: dict[str, Any] = {}
    for key, value in data.items():
        attribute = names.get(key)
        if attribute is None:
            raise _unknown_field(raw, key)
        out[klass.attribute_map[attribute]] = _normalize(value, klass.openapi_types[attribute], raw)
    return out


class _Response:
    def __init__(self, data: str) -> None:
        self.data = data


def from_json(raw: bytes, type_name: str) -> Any:
    """The request body as a kfp_server_api model.

    Raises:
        ApiError: INVALID_ARGUMENT for bad JSON or unknown fields.
    """
    text = raw.decode() if raw else "{}"
    try:
        data = json.loads(text or "{}")
    except ValueError as exc:
        raise gateway(Code.INVALID_ARGUMENT, f"proto: syntax error: {exc}") from None
    if data is None:
        data = {}
    normalized = _normalize(data, type_name, text)
    return _CLIENT.deserialize(_Response(json.dumps(normalized)), type_name)


def to_model(data: Mapping[str, Any], type_name: str) -> Any:
    """A JSON answer read back into a kfp_server_api model (as the SDK would)."""
    return _CLIENT.deserialize(_Response(json.dumps(data)), type_name)


def fields_set(raw: bytes) -> set[str]:
    """The top-level field names of a JSON body, proto-named (for oneof checks)."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return set()
    if not isinstance(data, dict):
        return set()
    return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key) for key in data}
