"""publish-compliance-breaches end to end on the demo data: the run controller, the local
backend and the local executor in process, running the real components (fetch_calls,
judge_compliance, publish_breaches), with the rules judge and with the LLM judge against a
local OpenAI-compatible server."""

# No `from __future__ import annotations`: kfp reads the pipeline signatures' real types.

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo

from skit_components.db import connect
from skit_demo import vocabulary as v
from skit_pipelines.domain import Run, RunState, StepState
from skit_testing.fake_openai import FakeChatServer, Request, chat_reply, unreachable_url

PIPELINE = "publish_compliance_breaches"
WRITES_DEMO_DATA = True
IST = ZoneInfo("Asia/Kolkata")
THREAT_RULES = {"threat_of_recovery_visit", "threat_of_legal_action", "disclosure_to_third_parties"}


def artifact_path(run: Run, name: str) -> Path:
    (artifact,) = [a for a in run.outputs if a.name == name]
    return Path(unquote(urlparse(artifact.uri).path))


def output_csv(run: Run, name: str) -> list[dict]:
    with artifact_path(run, name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def stored(env: dict[str, str]) -> list[tuple]:
    """(call_uuid, policy_version, judge, is_breach, compliance_output) of every row."""
    with connect(env["METRICS_DB_URL"]) as db:
        rows = db.fetchall(
            "SELECT call_uuid, policy_version, judge, is_breach, compliance_output "
            "FROM compliance_breaches ORDER BY call_uuid, judge"
        )
    return [(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]


def expected_breaches(env: dict[str, str]) -> tuple[set[str], set[str]]:
    """(calls with a threat, collection calls placed off hours), from the calls database."""
    phrases = [p for language in v.COMPLIANCE_BREACH_PHRASES.values() for p in language]
    threats, off_hours = set(), set()
    with connect(env["CALLS_DB_URL"]) as db:
        for uuid, bot in db.fetchall(
            "SELECT c.uuid, t.bot_response FROM turns t JOIN calls c ON c.id = t.call_id"
        ):
            if any(p in bot for p in phrases):
                threats.add(uuid)
        for uuid, reftime in db.fetchall(
            "SELECT c.uuid, t.reftime FROM turns t JOIN calls c ON c.id = t.call_id "
            "WHERE t.turn_index = 0 AND c.template_id = ?",
            (v.DEBT_COLLECTION,),
        ):
            # The judge knows a call's start from its first turn (the turns CSV has no
            # call start time): one or two seconds after the call was placed.
            local = db.dialect.to_datetime(reftime).astimezone(IST)
            low, high = v.COLLECTION_HOURS_IST
            if not low <= local.hour < high:
                off_hours.add(uuid)
    return threats, off_hours


async def test_defaults_judge_a_sample_and_store_every_judgement(run_pipeline, demo_env):
    run = await run_pipeline()
    assert run.state is RunState.SUCCEEDED, run.error
    assert [s.state for s in run.steps] == [StepState.SUCCEEDED] * 3
    rows = stored(demo_env)
    assert len(rows) == 1000  # call_quantity's default; the demo has 2000 calls
    assert {(r[1], r[2]) for r in rows} == {("2026.11.0", "rules")}
    breached = {r[0] for r in rows if r[3]}
    assert run.output_parameters["breach_count"] == len(breached) > 20
    assert run.output_parameters["failed_count"] == 0

    report = json.loads(artifact_path(run, "report").read_text())
    assert report["breached_calls"] == len(breached)
    assert report["judged_calls"] == 1000 and report["failed"] == []
    assert report["rows_inserted"] == 1000 and report["rows_updated"] == 0
    assert report["table"] == "compliance_breaches"
    assert {b["call_uuid"] for b in report["breached"]} == breached
    # Where each breach is: the call's Studio link, the turn and its audio, the words.
    csv_rows = output_csv(run, "breaches")
    assert {r["call_uuid"] for r in csv_rows} == breached
    assert sum(report["breaches_by_rule"].values()) == len(csv_rows)
    for row in csv_rows:
        assert row["status"] == "breach" and row["call_url"].startswith("https://studio.")
        assert row["audio_url"].endswith(".wav") and row["evidence"]


async def test_all_demo_calls_find_exactly_the_generated_breaches(run_pipeline, demo_env):
    run = await run_pipeline(call_quantity=100_000)
    assert run.state is RunState.SUCCEEDED, run.error
    by_rule: dict[str, set[str]] = {}
    for row in output_csv(run, "breaches"):
        by_rule.setdefault(row["rule"], set()).add(row["call_uuid"])
    threats, off_hours = expected_breaches(demo_env)
    assert set().union(*(by_rule.get(rule, set()) for rule in THREAT_RULES)) == threats
    assert by_rule["collection_calling_hours"] == off_hours
    # Every demo collection bot says it is an automated call, and none is abusive.
    assert set(by_rule) <= THREAT_RULES | {"collection_calling_hours"}
    assert run.output_parameters["breach_count"] == len(threats | off_hours)
    assert len(threats) >= 20 and len(off_hours) >= 40


async def test_running_again_updates_the_same_rows(run_pipeline, demo_env):
    first = await run_pipeline(call_quantity=300, seed=7)
    assert first.state is RunState.SUCCEEDED, first.error
    before = stored(demo_env)
    second = await run_pipeline(call_quantity=300, seed=7)
    assert second.state is RunState.SUCCEEDED, second.error
    assert stored(demo_env) == before
    report = json.loads(artifact_path(second, "report").read_text())
    assert (report["rows_inserted"], report["rows_updated"]) == (0, 300)
    # Another sample adds only the calls not judged before under this policy version.
    third = await run_pipeline(call_quantity=300, seed=8)
    report = json.loads(artifact_path(third, "report").read_text())
    assert report["rows_inserted"] + report["rows_updated"] == 300
    assert 0 < report["rows_updated"] < 300  # the two samples overlap
    assert len(stored(demo_env)) == len(before) + report["rows_inserted"]


async def test_a_malformed_policy_fails_the_judge_and_writes_nothing(run_pipeline, demo_env):
    policy = "version: '1'\nrules:\n  - id: bad\n    description: x\n    patterns: ['(']\n"
    run = await run_pipeline(call_quantity=50, policy_yaml=policy)
    assert run.state is RunState.FAILED
    assert "policy_yaml: rules[0]: patterns[0]: invalid regular expression" in run.error.message
    states = {s.name: s.state for s in run.steps}
    assert states["publish-breaches"] is StepState.SKIPPED
    assert stored(demo_env) == []


def _keyword_judge(request: Request):
    """A stand-in for the model: a rule is broken when one of the example phrases the
    prompt lists for it occurs in the transcript."""
    system, user = (m["content"] for m in request.messages)
    breaches = []
    for rule, examples in re.findall(r"^- (\w+): .*?e\.g\. (.*)\)$", system, re.MULTILINE):
        for phrase in re.findall(r'"([^"]+)"', examples):
            for line in user.splitlines():
                if phrase.lower() in line.lower():
                    turn = int(line.split()[1]) if line.startswith("turn ") else None
                    breaches.append({"rule": rule, "turn": turn, "evidence": phrase})
                    break
    # A little thinking time, so that concurrent requests overlap.
    return replace(chat_reply(json.dumps({"breaches": breaches})), delay_seconds=0.05)


async def test_the_llm_judge_through_a_local_endpoint(run_pipeline, demo_env):
    with FakeChatServer(_keyword_judge) as server:
        run = await run_pipeline(
            extra_env={"LLM_BASE_URL": server.url, "LLM_MODEL": "fake-model", "LLM_API_KEY": "k"},
            call_quantity=60,
            template_id=v.DEBT_COLLECTION,
            judge="llm",
            llm_concurrency=3,
        )
    assert run.state is RunState.SUCCEEDED, run.error
    rows = stored(demo_env)
    assert len(rows) == 60 and {r[2] for r in rows} == {"llm:fake-model"}
    assert len(server.requests) == 60 and 1 < server.max_in_flight <= 3
    spoken = [
        re.sub(r"^turn \d+ ", "", request.messages[1]["content"], flags=re.MULTILINE)
        for request in server.requests
    ]
    # Amounts, account digits and dates never left the machine (only turn numbers did).
    assert not any(re.search(r"\d", text) for text in spoken)
    assert sum("[NUMBER]" in text for text in spoken) > 30
    assert {r.headers["Authorization"] for r in server.requests} == {"Bearer k"}
    report = json.loads(artifact_path(run, "report").read_text())
    assert report["tokens"] == 60 * 42


async def test_an_unreachable_llm_endpoint_fails_the_run_and_writes_nothing(run_pipeline, demo_env):
    run = await run_pipeline(
        extra_env={"LLM_BASE_URL": unreachable_url(), "LLM_MODEL": "m"},
        call_quantity=20,
        template_id=v.DEBT_COLLECTION,
        judge="llm",
    )
    assert run.state is RunState.FAILED
    assert "unreachable" in run.error.message
    assert stored(demo_env) == []
