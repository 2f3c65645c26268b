"""The one log formatter: a JSON object per line, with `extra` fields such as run and step
ids, the fields bound with `context()`, and no secrets."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
_SECRET_KEY = re.compile(r"token|password|passwd|secret|authorization|cookie|api_?key", re.I)
# scheme://user:password@host: database and broker URLs carry their password this way.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^@\s/]+@")
REDACTED = "[redacted]"

_bound: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "skit_log_fields", default=MappingProxyType({})
)
_sources: list[Callable[[], Mapping[str, Any]]] = []


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Adds `fields` (e.g. run="abc") to every line logged inside, also by the tasks
    started inside (they inherit the context)."""
    token = _bound.set({**_bound.get(), **fields})
    try:
        yield
    finally:
        _bound.reset(token)


def add_source(source: Callable[[], Mapping[str, Any]]) -> Callable[[], None]:
    """Merges `source()` into every line (e.g. the current trace id); returns the remover."""
    _sources.append(source)
    return lambda: _sources.remove(source)


def redact(text: str) -> str:
    """`text` with the passwords of URLs in it replaced."""
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)


def _clean(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for source in _sources:
            entry.update(source())
        for key, value in _bound.get().items():
            entry[key] = _clean(key, value)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = _clean(key, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
