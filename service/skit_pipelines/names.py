"""Resource names ("runs/{run}", "pipelines/{pipeline}") and the ids inside them (AIP-122)."""

from __future__ import annotations

import os
import re

from skit_pipelines.errors import InvalidArgument

RESOURCE_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_REQUEST_ID = 128
_RUN_ID_RANDOM_BYTES = 6
"""A generated run id's random suffix: 48 bits, 12 hex digits (from os.urandom, as
uuid4 takes them; uuid itself costs the server's start a few ms of imports)."""


def parse_name(name: str, collection: str, *, field: str = "name") -> str:
    """Returns the id of "{collection}/{id}"; InvalidArgument naming `field` otherwise."""
    prefix = f"{collection}/"
    if not name:
        raise InvalidArgument(f"{field} is required, e.g. {prefix}my-id", field=field)
    if not name.startswith(prefix):
        raise InvalidArgument(
            f"{field} must look like {prefix}{{id}}, got {name[:200]!r}", field=field
        )
    resource_id = name.removeprefix(prefix)
    check_id(resource_id, field=field)
    return resource_id


def check_id(resource_id: str, *, field: str) -> str:
    if not RESOURCE_ID.match(resource_id):
        raise InvalidArgument(
            f"{field} {resource_id[:200]!r} must match {RESOURCE_ID.pattern}", field=field
        )
    return resource_id


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidArgument(
            f"request_id must be at most {MAX_REQUEST_ID} printable characters", field="request_id"
        )


def new_run_id(pipeline_id: str) -> str:
    return f"{pipeline_id[:48].rstrip('-')}-{os.urandom(_RUN_ID_RANDOM_BYTES).hex()}"
