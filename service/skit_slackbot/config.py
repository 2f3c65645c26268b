"""The Slack bot's one configuration object and its user map; built from the environment
in main (nobody else reads os.environ). Secrets are fields that never print."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

DEFAULT_HOST = "0.0.0.0"  # Slack must reach the request URL from outside.
DEFAULT_PORT = 3000
DEFAULT_SERVICE = "localhost:50051"
EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"

_Number = TypeVar("_Number", int, float)


class ConfigError(ValueError):
    """The configuration cannot work; the message names the setting to change."""


@dataclass(frozen=True)
class SlackUser:
    """A Slack user allowed to use the bot, as the service principal they act as."""

    slack_user: str
    """The Slack user ID (U…/W…), as events carry it."""
    principal: str
    """The principal's name, for messages and logs (the service knows it by the token)."""
    token: str = field(repr=False)
    """The principal's service token (skp_…); never logged."""


@dataclass(frozen=True)
class UserMap:
    """Slack user ID -> service principal. Unknown users are refused."""

    users: Mapping[str, SlackUser] = field(default_factory=dict)

    def get(self, slack_user: str) -> SlackUser | None:
        return self.users.get(slack_user)

    @classmethod
    def load(cls, path: Path) -> UserMap:
        """Reads a YAML (or JSON) file:

            users:
              U0123ABCD: {principal: alice, token_file: /var/run/secrets/skit-slackbot/alice}
              U0456EFGH: {principal: bob, token: skp_...}

        A relative token_file is relative to the map's folder.
        """
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as error:
            raise ConfigError(f"SKIT_SLACKBOT_USERS_FILE {path}: {error}") from None
        entries = (data or {}).get("users") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise ConfigError(f"SKIT_SLACKBOT_USERS_FILE {path}: expected a 'users' mapping")
        users: dict[str, SlackUser] = {}
        for slack_user, entry in entries.items():
            users[str(slack_user)] = _user(path, str(slack_user), entry)
        return cls(users)


def _user(path: Path, slack_user: str, entry: Any) -> SlackUser:
    where = f"SKIT_SLACKBOT_USERS_FILE {path}, user {slack_user}"
    if not isinstance(entry, dict) or not entry.get("principal"):
        raise ConfigError(f"{where}: expected principal and token or token_file")
    token = entry.get("token")
    if token is None and entry.get("token_file"):
        token_path = Path(str(entry["token_file"]))
        token_path = token_path if token_path.is_absolute() else path.parent / token_path
        try:
            token = token_path.read_text().strip()
        except OSError as error:
            raise ConfigError(f"{where}: token_file: {error.strerror}") from None
    if not token:
        raise ConfigError(f"{where}: no token (token or token_file)")
    return SlackUser(slack_user, str(entry["principal"]), str(token))


@dataclass(frozen=True)
class SlackBotConfig:
    """How one Slack bot process runs."""

    slack_bot_token: str = field(repr=False)
    """The bot user OAuth token (xoxb-…); chat:write is all it needs to post."""
    slack_signing_secret: str = field(repr=False)
    """The app's signing secret: requests not signed with it are refused (401)."""
    users: UserMap = field(repr=False)
    """Who may use the bot, as which service principal."""
    service_target: str = DEFAULT_SERVICE
    """host:port of PipelineService."""
    service_ca_file: Path | None = None
    """PEM roots to verify the service's TLS certificate; None: plaintext."""
    host: str = DEFAULT_HOST
    """Address the Events API request URL listens on."""
    port: int = DEFAULT_PORT
    """Port to listen on; 0 picks a free one."""
    slack_api_url: str | None = None
    """Slack's Web API base URL; None: slack_sdk's default (https://slack.com/api/). Tests
    point it at a stand-in."""
    progress_interval_seconds: float = 2.0
    """The least time between two updates of a run's progress message (chat.update is
    rate-limited by Slack, about 50 a minute per workspace)."""
    max_request_bytes: int = 1024 * 1024
    """Event requests larger than this are refused (Slack's are a few KiB)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlackBotConfig:
        """Reads SKIT_SLACKBOT_SERVICE, SKIT_SLACKBOT_SERVICE_CA_FILE, SKIT_SLACKBOT_HOST,
        SKIT_SLACKBOT_PORT, SKIT_SLACKBOT_USERS_FILE, SKIT_SLACKBOT_SLACK_API_URL,
        SKIT_SLACKBOT_PROGRESS_SECONDS, and the secrets SLACK_BOT_TOKEN and
        SLACK_SIGNING_SECRET, each from the variable or from a file named by *_FILE."""
        users_file = env.get("SKIT_SLACKBOT_USERS_FILE")
        if not users_file:
            raise ConfigError("SKIT_SLACKBOT_USERS_FILE is required (Slack user -> principal)")
        ca_file = env.get("SKIT_SLACKBOT_SERVICE_CA_FILE")
        return cls(
            slack_bot_token=_secret(env, "SLACK_BOT_TOKEN"),
            slack_signing_secret=_secret(env, "SLACK_SIGNING_SECRET"),
            users=UserMap.load(Path(users_file)),
            service_target=env.get("SKIT_SLACKBOT_SERVICE", DEFAULT_SERVICE),
            service_ca_file=Path(ca_file) if ca_file else None,
            host=env.get("SKIT_SLACKBOT_HOST", DEFAULT_HOST),
            port=_number(env, "SKIT_SLACKBOT_PORT", int, DEFAULT_PORT),
            slack_api_url=env.get("SKIT_SLACKBOT_SLACK_API_URL") or None,
            progress_interval_seconds=_number(env, "SKIT_SLACKBOT_PROGRESS_SECONDS", float, 2.0),
        )


def _secret(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    file = env.get(f"{name}_FILE")
    if value and file:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"{name}_FILE {file}: {error.strerror}") from None
    if not value:
        raise ConfigError(f"{name} (or {name}_FILE) is required")
    return value


def _number(env: Mapping[str, str], name: str, kind: type[_Number], default: _Number) -> _Number:
    text = env.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {text!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {text!r}")
    return value
