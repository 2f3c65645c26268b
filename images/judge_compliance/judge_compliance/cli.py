"""judge_compliance: judge every call of a turns CSV against a versioned compliance policy.

Two judges share the policy (policy.yaml in this folder, or the YAML given as input):

- `rules` (the default, offline, deterministic): phrase and regular-expression rules on
  what the bot or the caller said, required disclosures in the first bot turns, and the
  allowed calling hours in the call's local time.
- `llm`: the same calling-hours check, and an OpenAI-compatible chat endpoint (LLM_BASE_URL,
  LLM_MODEL, LLM_API_KEY) judging the whole call against the phrase rules and disclosures.
  Numbers, phone numbers, e-mail addresses, URLs and the policy's personal names are
  redacted before any text leaves the machine. Calls are judged concurrently (bounded),
  each request retried with exponential backoff; a call whose judgement still fails is
  written out as failed, never dropped. An unreachable endpoint or rejected credentials
  fail the step.

Writes one JSON line per call; the publish_breaches step stores them.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skit_components import cli
from skit_components.outputs import output_path, write_parameter

from .calls import read_calls
from .judgements import FAILED, judgement_record
from .llm_client import LlmConfig, llm_config
from .llm_judge import LlmJudge
from .policy import read_policy
from .rules import judge_with_rules

logger = logging.getLogger(__name__)

JUDGES = ("rules", "llm")
DEFAULT_LLM_CONCURRENCY = 4
DEFAULT_LLM_MAX_ATTEMPTS = 4
DEFAULT_LLM_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Outcome:
    """What a step judged: the step's output parameters."""

    judged: int
    """Calls judged."""
    failed: int
    """Calls whose judgement failed (written out with their error)."""
    policy_version: str


def judge_calls(
    calls_csv: Path,
    *,
    judge: str,
    policy_yaml: str,
    out: Path,
    llm: Callable[[], LlmConfig] | None = None,
) -> Outcome:
    """Judges every call of `calls_csv`; writes JSON lines to `out`.

    Raises:
        cli.BadInput: bad policy, judge or calls CSV (checked before any call is judged).
        LlmEndpointError: the LLM endpoint is unusable.
        cli.ComponentError: every call failed to be judged.
    """
    if judge not in JUDGES:
        raise cli.BadInput(f"judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    policy = read_policy(policy_yaml)
    config = llm() if judge == "llm" and llm is not None else None
    if judge == "llm" and config is None:
        raise cli.BadInput("judge=llm needs the LLM configuration")
    calls = read_calls(calls_csv)
    logger.info(
        "judging %d calls against policy %s (version %s) with the %s judge",
        len(calls),
        policy.source,
        policy.version,
        judge,
    )
    if config is None:
        judgements, name = judge_with_rules(policy, calls), "rules"
    else:
        judgements, name = LlmJudge(config, policy).judge(calls), config.label
    failed = [j for j in judgements if j.status == FAILED]
    if failed and len(failed) == len(judgements):
        raise cli.ComponentError(
            f"all {len(failed)} calls failed to be judged; the first: {failed[0].error}"
        )
    with output_path(out).open("w", encoding="utf-8") as f:
        for judgement in judgements:
            record = judgement_record(judgement, policy, name)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    breaches = sum(1 for j in judgements if j.is_breach)
    logger.info(
        "judged %d calls: %d in breach, %d failed",
        len(judgements) - len(failed),
        breaches,
        len(failed),
    )
    return Outcome(len(judgements) - len(failed), len(failed), policy.version)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="judge_compliance", description=__doc__)
    parser.add_argument("--calls", type=Path, required=True, help="input: the turns CSV")
    parser.add_argument("--judge", default="rules")
    parser.add_argument("--policy-yaml", default="")
    parser.add_argument("--llm-concurrency", type=cli.integer, default=DEFAULT_LLM_CONCURRENCY)
    parser.add_argument("--llm-max-attempts", type=cli.integer, default=DEFAULT_LLM_MAX_ATTEMPTS)
    parser.add_argument(
        "--llm-timeout-seconds", type=cli.number, default=DEFAULT_LLM_TIMEOUT_SECONDS
    )
    parser.add_argument("--judgements", type=Path, required=True, help="output: JSON lines")
    parser.add_argument("--judged-count", type=Path, required=True, help="output")
    parser.add_argument("--failed-count", type=Path, required=True, help="output")
    parser.add_argument("--policy-version", type=Path, required=True, help="output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The step: parses `argv`, judges, writes the outputs; returns the exit code."""

    def body() -> None:
        args = _parse_args(argv)
        outcome = judge_calls(
            args.calls,
            judge=args.judge.strip(),
            policy_yaml=args.policy_yaml,
            out=args.judgements,
            llm=lambda: llm_config(
                timeout_seconds=args.llm_timeout_seconds,
                max_attempts=args.llm_max_attempts,
                concurrency=args.llm_concurrency,
            ),
        )
        write_parameter(args.judged_count, outcome.judged)
        write_parameter(args.failed_count, outcome.failed)
        write_parameter(args.policy_version, outcome.policy_version)

    return cli.run("judge_compliance", body)
