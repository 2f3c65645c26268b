"""The bot's configuration: the user map, secrets from variables or files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from skit_slackbot.config import ConfigError, SlackBotConfig, UserMap


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  U1: {principal: alice, token: skp_alice}\n")
    return {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "sign-1",
        "SKIT_SLACKBOT_USERS_FILE": str(users),
        **extra,
    }


def test_from_env_and_secrets_never_print(tmp_path: Path) -> None:
    config = SlackBotConfig.from_env(
        _env(tmp_path, SKIT_SLACKBOT_PORT="0", SKIT_SLACKBOT_SERVICE="svc:1")
    )
    assert (config.port, config.service_target) == (0, "svc:1")
    user = config.users.get("U1")
    assert user is not None and (user.principal, user.token) == ("alice", "skp_alice")
    assert config.users.get("U2") is None
    shown = repr(config) + repr(user)
    assert "xoxb-1" not in shown and "sign-1" not in shown and "skp_alice" not in shown


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("xoxb-file\n")
    env = _env(tmp_path, SLACK_BOT_TOKEN_FILE=str(tmp_path / "token"))
    del env["SLACK_BOT_TOKEN"]
    assert SlackBotConfig.from_env(env).slack_bot_token == "xoxb-file"
    with pytest.raises(ConfigError, match="not both"):
        SlackBotConfig.from_env({**env, "SLACK_BOT_TOKEN": "x"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SLACK_SIGNING_SECRET": ""}, "SLACK_SIGNING_SECRET .or SLACK_SIGNING_SECRET_FILE. is"),
        ({"SKIT_SLACKBOT_USERS_FILE": ""}, "SKIT_SLACKBOT_USERS_FILE is required"),
        ({"SKIT_SLACKBOT_PORT": "http"}, "SKIT_SLACKBOT_PORT must be a number"),
        ({"SLACK_BOT_TOKEN": "", "SLACK_BOT_TOKEN_FILE": "/nonexistent"}, "SLACK_BOT_TOKEN_FILE"),
    ],
)
def test_bad_settings_name_the_setting(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SlackBotConfig.from_env({**_env(tmp_path), **change})


def test_user_map_token_files_and_errors(tmp_path: Path) -> None:
    (tmp_path / "bob").write_text("skp_bob\n")
    path = tmp_path / "users.json"
    path.write_text('{"users": {"U2": {"principal": "bob", "token_file": "bob"}}}')
    user = UserMap.load(path).get("U2")
    assert user is not None and user.token == "skp_bob"
    for text, message in [
        ("[]", "expected a 'users' mapping"),
        ('{"users": {"U3": {"token": "t"}}}', "user U3: expected principal"),
        ('{"users": {"U3": {"principal": "c"}}}', "user U3: no token"),
        ('{"users": {"U3": {"principal": "c", "token_file": "nope"}}}', "token_file"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            UserMap.load(path)
