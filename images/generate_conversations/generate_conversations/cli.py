"""generate_conversations: sample conversations for LLM situations of the metrics database.

Situations (the ids given, or every valid one; at most `situation_limit`) and a prompt
template make one prompt per conversation, `conversations_per_situation` per situation.
The generator:

- `llm`: an OpenAI-compatible chat endpoint (LLM_BASE_URL, LLM_MODEL, LLM_API_KEY) with
  structured JSON output checked against the conversation schema; 429s, 5xx, timeouts and
  malformed answers are retried with backoff, and a conversation still failing is dropped
  and counted (dropped_count, the report). An unreachable endpoint or rejected credentials
  fail the step; so does every conversation dropped.
- `template`: deterministic and offline, from the demo vocabulary.
- `auto` (the default): `llm` when LLM_BASE_URL is set, else `template`, and the outputs
  say which ran and why.

Writes one JSON line per conversation.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skit_components import cli, llm
from skit_components.outputs import output_path, write_json, write_parameter

from .conversation import conversation_record
from .llm_generator import Generated, LlmGenerator
from .prompts import prompt_template
from .situations import DB_ENV, read_situations
from .templates import GENERATOR as TEMPLATE
from .templates import template_conversation

logger = logging.getLogger(__name__)

GENERATORS = ("auto", "llm", "template")
MAX_PER_SITUATION = 20
MAX_TEMPERATURE = 2.0
NO_ENDPOINT = (
    "no LLM endpoint is configured (LLM_BASE_URL is unset): the deterministic template "
    "generator ran instead"
)


@dataclass(frozen=True)
class Options:
    situation_ids: tuple[int, ...]
    situation_limit: int = 10
    generator: str = "auto"
    prompt_template: str = ""
    conversations_per_situation: int = 2
    temperature: float = 0.7
    seed: int = 0
    llm_concurrency: int = 4
    llm_max_attempts: int = 4
    llm_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class Outcome:
    """The step's output parameters, and its report."""

    generated: int
    dropped: int
    generator: str
    report: dict[str, Any]


def generate(database_url: str, options: Options, out: Path) -> Outcome:
    """Writes the conversations as JSON lines to `out`.

    Raises:
        cli.BadInput: bad options, unknown or invalidated situations, none at all, or the
            LLM configuration missing or rejected.
        cli.ComponentError: the database or the endpoint is unusable, or every
            conversation was dropped.
    """
    o = options
    if o.generator not in GENERATORS:
        raise cli.BadInput(f"generator must be one of {', '.join(GENERATORS)}, got {o.generator!r}")
    if not 1 <= o.conversations_per_situation <= MAX_PER_SITUATION:
        raise cli.BadInput(
            f"conversations_per_situation must be 1 to {MAX_PER_SITUATION}, "
            f"got {o.conversations_per_situation}"
        )
    if not 0 <= o.temperature <= MAX_TEMPERATURE:
        raise cli.BadInput(f"temperature must be 0 to {MAX_TEMPERATURE}, got {o.temperature:g}")
    template = prompt_template(o.prompt_template)
    use_llm = o.generator == "llm" or (o.generator == "auto" and llm.endpoint_configured())
    config = (
        llm.llm_config(
            purpose="generator=llm",
            timeout_seconds=o.llm_timeout_seconds,
            max_attempts=o.llm_max_attempts,
            concurrency=o.llm_concurrency,
        )
        if use_llm
        else None
    )
    situations = read_situations(database_url, o.situation_ids, o.situation_limit)
    count = o.conversations_per_situation
    note = ""
    if config is None:
        note = NO_ENDPOINT if o.generator == "auto" else "generator=template was asked for"
        logger.info("%s", note)
        generated = Generated(
            [
                template_conversation(s, i, count, template, o.seed)
                for s in situations
                for i in range(count)
            ]
        )
        name = TEMPLATE
    else:
        logger.info(
            "asking %s (%s) for %d conversations of %d situations",
            config.endpoint,
            config.model,
            count * len(situations),
            len(situations),
        )
        generator = LlmGenerator(config, template, temperature=o.temperature)
        generated = generator.generate(situations, count)
        name = generator.name
    if not generated.conversations:
        first = generated.drops[0].reason if generated.drops else "none were generated"
        raise cli.ComponentError(
            f"all {len(generated.drops)} conversations were dropped; the first: {first}"
        )
    with output_path(out).open("w", encoding="utf-8") as f:
        for conversation in generated.conversations:
            f.write(json.dumps(conversation_record(conversation), ensure_ascii=False) + "\n")
    report = {
        "generator": name,
        "note": note,
        "situations": [s.id for s in situations],
        "conversations_per_situation": count,
        "requested": count * len(situations),
        "generated": len(generated.conversations),
        "dropped": len(generated.drops),
        "drops": [
            {"situation_id": d.situation_id, "index": d.index, "reason": d.reason}
            for d in generated.drops
        ],
        "dropped_by_reason": dict(Counter(_cause(d.reason) for d in generated.drops)),
        "retries": dict(generated.retries),
        "tokens": sum(c.tokens for c in generated.conversations),
        "temperature": o.temperature if config is not None else None,
    }
    logger.info(
        "%s generated %d conversations for %d situations; dropped %d; retried %d attempts",
        name,
        report["generated"],
        len(situations),
        report["dropped"],
        sum(generated.retries.values()),
    )
    return Outcome(len(generated.conversations), len(generated.drops), name, report)


def _cause(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (after")[0]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="generate_conversations", description=__doc__)
    parser.add_argument("--situation-ids", type=cli.json_list(int), default=[])
    parser.add_argument("--situation-limit", type=cli.integer, default=Options.situation_limit)
    parser.add_argument("--generator", default=Options.generator)
    parser.add_argument("--prompt-template", default="")
    parser.add_argument(
        "--conversations-per-situation",
        type=cli.integer,
        default=Options.conversations_per_situation,
    )
    parser.add_argument("--temperature", type=cli.number, default=Options.temperature)
    parser.add_argument("--seed", type=cli.integer, default=Options.seed)
    parser.add_argument("--llm-concurrency", type=cli.integer, default=Options.llm_concurrency)
    parser.add_argument("--llm-max-attempts", type=cli.integer, default=Options.llm_max_attempts)
    parser.add_argument(
        "--llm-timeout-seconds", type=cli.number, default=Options.llm_timeout_seconds
    )
    parser.add_argument("--conversations", type=Path, required=True, help="output: JSON lines")
    parser.add_argument("--generated-count", type=Path, required=True, help="output")
    parser.add_argument("--dropped-count", type=Path, required=True, help="output")
    parser.add_argument("--generator-used", type=Path, required=True, help="output")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, generates, writes the outputs; returns the exit code."""

    def body() -> None:
        args = _parse_args(argv)
        options = Options(
            situation_ids=tuple(int(i) for i in args.situation_ids),
            situation_limit=args.situation_limit,
            generator=args.generator.strip(),
            prompt_template=args.prompt_template,
            conversations_per_situation=args.conversations_per_situation,
            temperature=args.temperature,
            seed=args.seed,
            llm_concurrency=args.llm_concurrency,
            llm_max_attempts=args.llm_max_attempts,
            llm_timeout_seconds=args.llm_timeout_seconds,
        )
        database_url = cli.required_env(DB_ENV, "the metrics database URL")
        outcome = generate(database_url, options, args.conversations)
        write_parameter(args.generated_count, outcome.generated)
        write_parameter(args.dropped_count, outcome.dropped)
        write_parameter(args.generator_used, outcome.generator)
        write_json(args.report, outcome.report)

    return cli.run("generate_conversations", body)
