"""What a Slack message asks for: `run <pipeline>` with a JSON code block or key=value
pairs, `status|cancel|retry <run>`, `pipelines`, `help`.

Slack delivers message text in its own markup (https://api.slack.com/reference/surfaces/formatting#escaping):
`&`, `<` and `>` arrive as `&amp;`, `&lt;`, `&gt;`; mentions as `<@U123>`, links as
`<https://x|label>` or `<https://x>`. The text is turned back into what the person typed
before it is parsed.
"""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skit_pipelines_cli.values import parse_value
from skit_pipelines_client import ParameterType, PipelineParameter

_MENTION = re.compile(r"<[@!#][^>]*>")
_LINK = re.compile(r"<((?:https?|mailto|s3|file):[^>|]*)(?:\|[^>]*)?>")
_CODE_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
# Slack clients turn typed quotes into typographic ones outside code.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


class CommandError(ValueError):
    """The message cannot be understood; the text says how to fix it."""


@dataclass(frozen=True)
class RunCommand:
    """`run <pipeline> [key=value ...] [```{json}```]`."""

    pipeline: str
    json_parameters: Mapping[str, Any] = field(default_factory=dict)
    """From the code block, already typed by JSON."""
    assignments: tuple[tuple[str, str], ...] = ()
    """key=value pairs as typed; `typed_parameters` types them by the pipeline's schema."""

    def typed_parameters(self, schema: tuple[PipelineParameter, ...]) -> dict[str, Any]:
        """The run's parameters: the JSON block's values, then each key=value typed as the
        pipeline declares it (text for a STRING parameter; otherwise JSON when it parses,
        as the CLI reads --param); a key the pipeline lacks is passed on for the service
        to reject by name."""
        types = {p.name: p.type for p in schema}
        parameters = dict(self.json_parameters)
        for key, text in self.assignments:
            if key in parameters:
                raise CommandError(f"`{key}` is given twice")
            parameters[key] = text if types.get(key) is ParameterType.STRING else parse_value(text)
        return parameters


@dataclass(frozen=True)
class RunRefCommand:
    """`status <run>`, `cancel <run>` or `retry <run>`."""

    verb: str
    run: str


@dataclass(frozen=True)
class SimpleCommand:
    """`pipelines` or `help`."""

    verb: str


@dataclass(frozen=True)
class UnknownCommand:
    word: str


Command = RunCommand | RunRefCommand | SimpleCommand | UnknownCommand
RUN_VERBS = ("status", "cancel", "retry")


def plain_text(text: str) -> str:
    """Slack's markup back to what was typed, without mentions."""
    text = _MENTION.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    return html.unescape(text).strip()


def parse(text: str) -> Command:
    """The command in a message's text (Slack markup).

    Raises:
        CommandError: a known command with bad arguments.
    """
    text = plain_text(text)
    blocks = _CODE_BLOCK.findall(text)
    rest = _CODE_BLOCK.sub(" ", text).translate(_QUOTES)
    try:
        words = shlex.split(rest)
    except ValueError as error:
        raise CommandError(f"can't read the command: {error}") from None
    if not words:
        return SimpleCommand("help")
    verb = words[0].lower()
    args = [w.strip("`") for w in words[1:]]
    if verb == "run":
        return _run(args, blocks)
    if verb in RUN_VERBS:
        if len(args) != 1 or not args[0]:
            raise CommandError(f"usage: `{verb} <run>`")
        return RunRefCommand(verb, args[0].removeprefix("runs/"))
    if verb in ("pipelines", "help"):
        return SimpleCommand(verb)
    return UnknownCommand(words[0])


def _run(args: list[str], blocks: list[str]) -> RunCommand:
    if not args:
        raise CommandError("usage: `run <pipeline> key=value ...` or a ```{JSON}``` block")
    if len(blocks) > 1:
        raise CommandError("give the parameters in one ```{JSON}``` block")
    json_parameters: dict[str, Any] = {}
    if blocks:
        try:
            loaded = json.loads(blocks[0].translate(_QUOTES))
        except ValueError as error:
            raise CommandError(f"the parameters block is not JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise CommandError('the parameters block must be a JSON object: {"name": value}')
        json_parameters = loaded
    assignments = []
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise CommandError(f"expected key=value, got `{arg}`")
        assignments.append((key, value))
    return RunCommand(args[0].removeprefix("pipelines/"), json_parameters, tuple(assignments))
