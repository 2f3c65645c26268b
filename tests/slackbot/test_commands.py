"""Reading commands out of Slack message text (Slack's markup included)."""

from __future__ import annotations

import pytest

from skit_pipelines_client import ParameterType, PipelineParameter
from skit_slackbot.commands import (
    CommandError,
    RunCommand,
    RunRefCommand,
    SimpleCommand,
    UnknownCommand,
    parse,
    plain_text,
)


def _param(name: str, kind: ParameterType) -> PipelineParameter:
    return PipelineParameter(name, kind, False, None, "", ())


SCHEMA = (
    _param("greeting", ParameterType.STRING),
    _param("count", ParameterType.INTEGER),
    _param("ratio", ParameterType.DOUBLE),
    _param("flag", ParameterType.BOOLEAN),
    _param("items", ParameterType.LIST),
)


def test_slack_markup_back_to_what_was_typed() -> None:
    text = "<@U0BOT> run x url=<https://a.example/b?c=1&amp;d=2|a.example/b> q=&lt;&gt;"
    assert plain_text(text) == "run x url=https://a.example/b?c=1&d=2 q=<>"


def test_key_values_typed_by_the_schema() -> None:
    command = parse(
        "<@U0BOT> run typed greeting=42 count=7 ratio=2 flag=true items=[1,2] “note”=“a b” other=x"
    )
    assert isinstance(command, RunCommand) and command.pipeline == "typed"
    assert command.typed_parameters(SCHEMA) == {
        "greeting": "42",
        "count": 7,
        "ratio": 2,
        "flag": True,
        "items": [1, 2],
        "note": "a b",
        "other": "x",
    }


def test_a_json_block_with_or_without_a_language() -> None:
    for block in ('```{"count": 3}```', '```json\n{"count": 3}\n```'):
        command = parse(f"run pipelines/typed\n{block}")
        assert command == RunCommand("typed", {"count": 3}, ())
    command = parse('run typed greeting=hi ```{"count": 3}```')
    assert isinstance(command, RunCommand)
    assert command.typed_parameters(SCHEMA) == {"count": 3, "greeting": "hi"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run", "usage: `run <pipeline>"),
        ("run typed ```[1]```", "must be a JSON object"),
        ("run typed ```{nope}```", "not JSON"),
        ("run typed ```{}``` ```{}```", "one ```{JSON}``` block"),
        ("run typed greeting", "expected key=value"),
        ('run typed "unclosed', "can't read"),
        ("status", "usage: `status <run>`"),
        ("cancel a b", "usage: `cancel <run>`"),
    ],
)
def test_bad_commands_say_how_to_fix_them(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("`", ".").replace("{", ".")):
        parse(text)


def test_a_parameter_given_twice_is_refused() -> None:
    command = parse('run typed count=1 ```{"count": 2}```')
    assert isinstance(command, RunCommand)
    with pytest.raises(CommandError, match="twice"):
        command.typed_parameters(SCHEMA)


def test_run_verbs_and_simple_commands() -> None:
    assert parse("<@U0BOT> STATUS `runs/typed-1`") == RunRefCommand("status", "typed-1")
    assert parse("cancel typed-1") == RunRefCommand("cancel", "typed-1")
    assert parse("retry typed-1") == RunRefCommand("retry", "typed-1")
    assert parse("<@U0BOT> pipelines") == SimpleCommand("pipelines")
    assert parse("<@U0BOT>") == SimpleCommand("help")
    assert parse("dance now") == UnknownCommand("dance")
