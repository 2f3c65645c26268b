"""List paging, sorting and filtering as the KFP 2.17 API server does it.

Sources (kubeflow/pipelines at the 2.17.0 release commit 020857a4):

- backend/src/apiserver/list/list.go: page_size 0 means 20, more than 200 means 200, a
  negative one is INVALID_ARGUMENT; sort_by is "field", "field asc" or "field desc" over
  the model's API field map, ties broken by the primary key in the same direction; the
  next_page_token is base64(JSON) of the sort and key values of the first row of the next
  page plus the sort order and the filter, empty on the last page; a token that does not
  decode is "Invalid page token".
- backend/src/apiserver/server/list_request_util.go: `validatedListOptions`: with a page
  token, a sort_by or filter that differs from the token's is refused;
  `parseAPIFilter`: the filter is URL-unescaped once more, camelCase value keys are
  renamed, and it is protojson-unmarshalled into a v2beta1 Filter (unknown fields refused).
- backend/src/apiserver/filter/filter.go: EQUALS, NOT_EQUALS, GREATER_THAN(_EQUALS),
  LESS_THAN(_EQUALS), IN and IS_SUBSTRING, all predicates ANDed; a key outside the model's
  field map is "no support for filtering on unrecognized field".
- backend/src/apiserver/model/{run,pipeline,pipeline_version,experiment}.go: the field maps
  and default sort (CreatedAtInSec) of each listable.
- total_size counts every row the filter matches, not just the page.

Difference: MySQL compares strings with the table's collation (usually case-insensitive);
the stand-in compares them exactly.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

from skit_testing.kfp.errors import invalid_input, invalid_input_with_details

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
_CAMEL_VALUE_KEYS = {
    "intValue": "int_value",
    "longValue": "long_value",
    "stringValue": "string_value",
    "timestampValue": "timestamp_value",
    "intValues": "int_values",
    "longValues": "long_values",
    "stringValues": "string_values",
}
_SCALAR_VALUE_KEYS = ("int_value", "long_value", "string_value", "timestamp_value")
_LIST_VALUE_KEYS = ("int_values", "long_values", "string_values")
_OPERATIONS = frozenset(
    {
        "EQUALS",
        "NOT_EQUALS",
        "GREATER_THAN",
        "GREATER_THAN_EQUALS",
        "LESS_THAN",
        "LESS_THAN_EQUALS",
        "IN",
        "IS_SUBSTRING",
    }
)
_OPERATION_NUMBERS = {
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}
"""Predicate.Operation's numbers (backend/api/v2beta1/filter.proto)."""


@dataclass(frozen=True)
class Listable:
    """What list.go needs of a model."""

    type_name: str
    """The Go model type, for messages ("Run", "Pipeline", ...)."""
    fields: Mapping[str, str]
    """API field name -> model field name (APIToModelFieldMap)."""
    default_sort: str = "CreatedAtInSec"
    key: str = "UUID"


RUN = Listable(
    "Run",
    {
        "run_id": "UUID",
        "id": "UUID",
        "display_name": "DisplayName",
        "name": "DisplayName",
        "created_at": "CreatedAtInSec",
        "finished_at": "FinishedAtInSec",
        "description": "Description",
        "scheduled_at": "ScheduledAtInSec",
        "storage_state": "StorageState",
        "status": "Conditions",
        "namespace": "Namespace",
        "experiment_id": "ExperimentUUID",
        "state": "State",
        "state_history": "StateHistory",
        "runtime_details": "PipelineRuntimeManifest",
        "recurring_run_id": "JobUUID",
    },
)
PIPELINE = Listable(
    "Pipeline",
    {
        "id": "UUID",
        "pipeline_id": "UUID",
        "name": "Name",
        "display_name": "DisplayName",
        "created_at": "CreatedAtInSec",
        "description": "Description",
        "namespace": "Namespace",
    },
)
PIPELINE_VERSION = Listable(
    "PipelineVersion",
    {
        "id": "UUID",
        "pipeline_version_id": "UUID",
        "name": "Name",
        "display_name": "DisplayName",
        "created_at": "CreatedAtInSec",
        "status": "Status",
        "description": "Description",
        "pipeline_spec": "PipelineSpec",
    },
)
EXPERIMENT = Listable(
    "Experiment",
    {
        "id": "UUID",
        "experiment_id": "UUID",
        "name": "Name",
        "display_name": "Name",
        "created_at": "CreatedAtInSec",
        "last_run_created_at": "LastRunCreatedAtInSec",
        "description": "Description",
        "namespace": "Namespace",
        "storage_state": "StorageState",
    },
)


@dataclass(frozen=True)
class Predicate:
    operation: str
    field: str
    """The model field."""
    value: Any


@dataclass(frozen=True)
class _Options:
    page_size: int
    sort_field: str
    descending: bool
    predicates: tuple[Predicate, ...]
    filter_json: Any
    """The filter as received (JSON), kept in tokens for the "does not match" check."""
    cursor: tuple[Any, Any] | None = None
    """(sort value, key value) of the first row to return."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total_size: int
    next_page_token: str = ""


def _page_size(page_size: int) -> int:
    if page_size < 0:
        raise invalid_input(f"The page size should be greater than 0. Got {page_size}")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def _parse_filter(raw: str, listable: Listable) -> tuple[tuple[Predicate, ...], Any]:
    if not raw:
        return (), None
    decoded = unquote(raw)
    for camel, snake in _CAMEL_VALUE_KEYS.items():
        decoded = decoded.replace(f'"{camel}":', f'"{snake}":')
    try:
        data = json.loads(decoded)
    except ValueError as exc:
        raise invalid_input(f"failed to parse valid filter from {raw!r}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"predicates"}:
        unknown = sorted(set(data) - {"predicates"}) if isinstance(data, dict) else []
        raise invalid_input(f"failed to parse valid filter from {raw!r}: unknown field {unknown}")
    predicates = []
    for item in data.get("predicates") or []:
        allowed = {"operation", "key", *_SCALAR_VALUE_KEYS, *_LIST_VALUE_KEYS}
        if not isinstance(item, dict) or set(item) - allowed:
            raise invalid_input(f"failed to parse valid filter from {raw!r}: unknown field")
        raw_operation = item.get("operation", "")
        # protojson takes an enum by name or by number (kfp.Client.get_experiment sends 1).
        operation = (
            _OPERATION_NUMBERS.get(raw_operation, "")
            if isinstance(raw_operation, int) and not isinstance(raw_operation, bool)
            else str(raw_operation)
        )
        if operation not in _OPERATIONS:
            raise invalid_input(f"invalid predicate operation: {operation or 'unspecified'}")
        key = str(item.get("key", ""))
        model_field = listable.fields.get(key)
        if model_field is None:
            raise invalid_input(f'no support for filtering on unrecognized field "{key}"')
        value: Any = None
        for name in _SCALAR_VALUE_KEYS:
            if name in item:
                value = item[name]
        for name in _LIST_VALUE_KEYS:
            if name in item:
                value = list((item[name] or {}).get("values") or [])
        predicates.append(Predicate(operation, model_field, value))
    return tuple(predicates), data


def _matches(predicate: Predicate, actual: Any) -> bool:
    wanted = predicate.value
    if isinstance(actual, int) and isinstance(wanted, str) and wanted.lstrip("-").isdigit():
        wanted = int(wanted)  # long_value arrives as a JSON string (protojson int64)
    match predicate.operation:
        case "EQUALS":
            return bool(actual == wanted)
        case "NOT_EQUALS":
            return bool(actual != wanted)
        case "GREATER_THAN":
            return bool(actual > wanted)
        case "GREATER_THAN_EQUALS":
            return bool(actual >= wanted)
        case "LESS_THAN":
            return bool(actual < wanted)
        case "LESS_THAN_EQUALS":
            return bool(actual <= wanted)
        case "IN":
            return actual in (wanted or [])
        case "IS_SUBSTRING":
            return str(wanted) in str(actual)
    return False


def _options(
    listable: Listable, page_token: str, page_size: int, sort_by: str, filter_raw: str
) -> _Options:
    def fresh() -> _Options:
        predicates, filter_json = _parse_filter(filter_raw, listable)
        words = sort_by.lower().split()
        if len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise invalid_input(
                f"Received invalid sort by format {json.dumps(sort_by)}. Supported format:"
                ' "field_name", "field_name desc", or "field_name asc"'
            )
        sort_field = listable.default_sort
        if words:
            if words[0] not in listable.fields:
                raise invalid_input(
                    f"Invalid sorting field: {json.dumps(words[0])} on listable type"
                    f" {listable.type_name}"
                )
            sort_field = listable.fields[words[0]]
        descending = len(words) == 2 and words[1] == "desc"
        return _Options(_page_size(page_size), sort_field, descending, predicates, filter_json)

    if not page_token:
        return fresh()
    size = _page_size(page_size)
    try:
        token = json.loads(base64.b64decode(page_token, validate=True))
        cursor = (token["SortByFieldValue"], token["KeyFieldValue"])
        sort_field = str(token["SortByFieldName"])
        descending = bool(token["IsDesc"])
        filter_json = token.get("Filter")
        predicates, _ = _parse_filter(json.dumps(filter_json) if filter_json else "", listable)
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise invalid_input_with_details(str(exc), "Invalid page token") from None
    options = _Options(size, sort_field, descending, predicates, filter_json, cursor)
    if sort_by or filter_raw:
        given = fresh()
        if (given.sort_field, given.descending, given.filter_json) != (
            sort_field,
            descending,
            filter_json,
        ):
            raise invalid_input(
                "page token does not match the supplied sort by and/or filtering criteria."
                " Either specify the same criteria or leave the latter empty if page token is"
                " specified"
            )
    return options


def list_page(
    items: Sequence[T],
    listable: Listable,
    value: Callable[[T, str], Any],
    *,
    page_token: str = "",
    page_size: int = 0,
    sort_by: str = "",
    filter_raw: str = "",
) -> Page[T]:
    """One page of `items`; `value(item, model_field)` reads a model field.

    Raises:
        ApiError: INVALID_ARGUMENT for a bad page size, sort, filter or token.
    """
    options = _options(listable, page_token, page_size, sort_by, filter_raw)
    matching = [
        item for item in items if all(_matches(p, value(item, p.field)) for p in options.predicates)
    ]

    def order(item: T) -> tuple[Any, Any]:
        return (value(item, options.sort_field), value(item, listable.key))

    matching.sort(key=order, reverse=options.descending)
    start = 0
    if options.cursor is not None:
        cursor = tuple(options.cursor)
        for index, item in enumerate(matching):
            here = order(item)
            if (here >= cursor) if not options.descending else (here <= cursor):
                start = index
                break
        else:
            start = len(matching)
    page = matching[start : start + options.page_size]
    next_token = ""
    following = start + options.page_size
    if following < len(matching):
        sort_value, key_value = order(matching[following])
        token = {
            "SortByFieldName": options.sort_field,
            "SortBySQLColumn": options.sort_field,
            "SortByFieldValue": sort_value,
            "SortByFieldPrefix": "",
            "KeyFieldName": listable.key,
            "KeyFieldValue": key_value,
            "KeyFieldPrefix": "",
            "IsDesc": options.descending,
            "ModelName": listable.type_name,
            "Filter": options.filter_json,
        }
        next_token = base64.b64encode(json.dumps(token).encode()).decode()
    return Page(page, len(matching), next_token)
