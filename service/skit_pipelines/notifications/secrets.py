"""Sink secrets, referenced by NAME and resolved from the server's configuration.

A subscription stores only the name of its secret (a Slack bot token, a webhook signing
key); the value comes, at every send, from a file in the secrets directory (a Kubernetes
secret mounted as a volume: one file per key, updated in place when the secret changes)
or from SKIT_SECRET_<NAME> in the environment (config.py reads it; nothing else does).
Values are never stored, logged or returned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from skit_pipelines.errors import InvalidArgument

SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
"""A Kubernetes secret key: alphanumerics, "-", "_" and "."."""


def env_key(name: str) -> str:
    """The environment variable of secret `name`: SKIT_SECRET_ + upper case, with "-"
    and "." as "_" (slack-bot-token -> SKIT_SECRET_SLACK_BOT_TOKEN)."""
    return "SKIT_SECRET_" + re.sub(r"[.-]", "_", name).upper()


class SecretNotFound(LookupError):
    """The configuration has no secret of that name (the message names it, never a value)."""


class Secrets:
    """Looks secrets up by name: first `directory`/<name>, then `values` (from the
    environment, keyed by the name as env_key spells it)."""

    def __init__(self, directory: Path | None = None, values: Mapping[str, str] | None = None):
        self._directory = directory
        self._values = dict(values or {})

    def __repr__(self) -> str:
        return f"Secrets(directory={self._directory!s}, names={sorted(self._values)})"

    def check_name(self, name: str, *, field: str) -> None:
        """InvalidArgument naming `field` when `name` is malformed or not configured."""
        if not name:
            raise InvalidArgument(
                f"{field} is required: the name of a configured secret", field=field
            )
        if not SECRET_NAME.match(name):
            raise InvalidArgument(
                f"{field} {name[:100]!r} is not a secret name ({SECRET_NAME.pattern})",
                field=field,
            )
        if not self.has(name):
            raise InvalidArgument(
                f"{field}: the server has no secret named {name!r} (a file of that name in"
                f" --secrets-dir, or {env_key(name)} in its environment)",
                field=field,
                reason="UNKNOWN_SECRET",
            )

    def has(self, name: str) -> bool:
        try:
            self.get(name)
        except SecretNotFound:
            return False
        return True

    def get(self, name: str) -> str:
        """The value (without a trailing newline); SecretNotFound when none is configured."""
        if SECRET_NAME.match(name):
            if self._directory is not None:
                path = self._directory / name
                try:
                    value = path.read_text().rstrip("\r\n")
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    pass
                else:
                    if value:
                        return value
            value = self._values.get(env_key(name), "")
            if value:
                return value
        raise SecretNotFound(f"no secret named {name!r} is configured")
