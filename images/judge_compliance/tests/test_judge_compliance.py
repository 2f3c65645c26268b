from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import skit_components.llm
from skit_components.loader import import_component
from skit_testing.fake_openai import FakeChatServer, Reply, Request, chat_reply, unreachable_url

FOLDER = Path(__file__).resolve().parents[1]
judge_compliance = import_component(FOLDER)

COLUMNS = (
    "call_uuid",
    "turn_index",
    "reftime",
    "bot_response",
    "primary_utterance",
    "audio_url",
    "call_url",
    "language",
    "template_id",
    "call_type",
    "flow_uuid",
    "client_uuid",
)
THREAT = "If you do not pay today we will send our recovery agents to your home."
GREETING = "Hello, this is an automated call from Kaveri Finance. Am I speaking with Ramesh?"
PURPOSE = "Your loan EMI of rupees 12,300 for the account ending 4821 is overdue."


def turn(index: int, bot: str, caller: str = "", reftime: str = "") -> dict[str, object]:
    return {
        "turn_index": index,
        "bot_response": bot,
        "primary_utterance": caller,
        "reftime": reftime or f"2026-10-05T05:30:0{index}.000+00:00",  # 11:00 IST
        "audio_url": f"https://audio.example/{index}.wav",
    }


def call(uuid: str, *turns: dict, template_id: int = 1, **extra: object) -> list[dict]:
    common = {
        "call_uuid": uuid,
        "call_url": f"https://studio.example/calls/{uuid}",
        "language": "en",
        "template_id": template_id,
        "call_type": "OUTBOUND",
        "flow_uuid": "flow",
        "client_uuid": "client",
        **extra,
    }
    return [{**common, **t} for t in turns]


def write_calls(path: Path, *calls: list[dict], columns: tuple[str, ...] = COLUMNS) -> Path:
    extra = sorted({k for c in calls for row in c for k in row} - set(columns))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, *extra])
        writer.writeheader()
        for rows in calls:
            writer.writerows(rows)
    return path


COMPLIANT = call("c-ok", turn(0, GREETING, "yes"), turn(1, PURPOSE, "i will pay tomorrow"))
THREATENING = call("c-threat", turn(0, GREETING, "yes"), turn(1, f"{PURPOSE} {THREAT}", "ok"))
LATE = call(
    "c-late",
    turn(0, GREETING, "yes", "2026-10-05T14:10:00.000+00:00"),  # 19:40 IST
    turn(1, PURPOSE, "no", "2026-10-05T14:10:09.000+00:00"),
)
SUPPORT = call("c-support", turn(0, "Welcome to Metro care.", "balance"), template_id=3)


@pytest.fixture
def run(tmp_path: Path):
    """Runs main(); returns (exit code, judgements by call, outputs)."""

    def _run(calls_csv: Path, *args: str) -> tuple[int, dict[str, dict], dict[str, str]]:
        out = tmp_path / "out"
        code = judge_compliance.main(
            [
                "--calls",
                str(calls_csv),
                *args,
                "--judgements",
                str(out / "judgements.jsonl"),
                "--judged-count",
                str(out / "judged"),
                "--failed-count",
                str(out / "failed"),
                "--policy-version",
                str(out / "version"),
            ]
        )
        if code != 0:
            assert not (out / "judgements.jsonl").exists()
            return code, {}, {}
        lines = (out / "judgements.jsonl").read_text().splitlines()
        records = {r["call_uuid"]: r for r in map(json.loads, lines)}
        outputs = {n: (out / n).read_text() for n in ("judged", "failed", "version")}
        return code, records, outputs

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def rules(record: dict) -> set[str]:
    return {f["rule"] for f in record["findings"]}


# --- the policy ----------------------------------------------------------------------------


def test_the_bundled_policy_is_valid_and_versioned():
    policy = judge_compliance.read_policy("")
    assert policy.version == "2026.11.0" and policy.source == "policy.yaml"
    assert {r.id for r in policy.rules} >= {"threat_of_recovery_visit", "threat_of_legal_action"}
    assert [h.id for h in policy.hours] == ["collection_calling_hours"]
    assert [d.id for d in policy.disclosures] == ["automated_call_disclosure"]


def test_the_bundled_policy_catches_every_demo_threat_and_no_demo_prompt():
    from skit_demo import vocabulary as v

    policy = judge_compliance.read_policy("")
    for language, phrases in v.COMPLIANCE_BREACH_PHRASES.items():
        for phrase in phrases:
            found = judge_compliance.check_phrases(policy, _one_turn(phrase, language))
            assert [f.rule for f in found if f.rule != "automated_call_disclosure"], phrase
    for template in v._BOT_TEMPLATES.values():
        for language, prompts in template.items():
            for prompt in prompts.values():
                found = judge_compliance.check_phrases(policy, _one_turn(prompt, language))
                assert [f.rule for f in found if f.rule != "automated_call_disclosure"] == []


def _one_turn(bot: str, language: str):
    return judge_compliance.Call(
        "c", (judge_compliance.Turn(0, None, bot, ""),), language=language, template_id=1
    )


MINIMAL = "version: '1'\nrules:\n  - id: r\n    description: d\n    phrases: [x]\n"
HOURS = "calling_hours:\n  - id: h\n    description: d\n    end: '19:00'\n"


def edit(old: str, new: str) -> str:
    return MINIMAL.replace(old, new)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("version: [", "policy_yaml is not valid YAML"),
        ("- a\n- b\n", "policy_yaml: expected a mapping, got list"),
        (edit("version: '1'\n", ""), "policy_yaml: version: is required"),
        (edit("'1'", "1.10"), "version: expected a non-empty string, got float 1.1 (quote it"),
        (MINIMAL + "owner: me\n", "policy_yaml: unknown field 'owner'"),
        (edit("phrases: [x]", "patterns: ['(']"), "rules[0]: patterns[0]: invalid regular exp"),
        (edit("phrases: [x]", "phrases: []"), "policy_yaml: rules[0]: needs phrases or patterns"),
        (edit("id: r", "id: Bad-Id"), "rules[0]: id: 'Bad-Id' must be lower_snake_case"),
        (edit("d\n", "d\n    severity: fatal\n"), "severity: expected one of low, medium, high"),
        (
            MINIMAL + "required_disclosures: [{id: r, description: d, phrases: [y]}]",
            "id 'r' is used",
        ),
        (MINIMAL + HOURS + "    start: 8:00\n", "start: expected a non-empty string, got int 480"),
        (MINIMAL + HOURS + "    start: 8am\n", "start: expected a time like 08:00, got '8am'"),
        (MINIMAL + "timezone: Mars/Olympus\n", "timezone: unknown timezone 'Mars/Olympus'"),
        ("version: '1'\n", "has no rules, required_disclosures or calling_hours"),
        (edit("[x]", "[x]\n    applies_to: {templates: [1]}"), "unknown field 'templates'"),
    ],
)
def test_a_malformed_policy_fails_naming_the_field(run, tmp_path, capsys, policy, message):
    code, _, _ = run(write_calls(tmp_path / "c.csv", COMPLIANT), "--policy-yaml", policy)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("judge_compliance: ") and message in line


# --- the rules judge -----------------------------------------------------------------------


def test_rules_judge_finds_threats_hours_and_missing_disclosures(run, tmp_path):
    no_disclosure = call("c-quiet", turn(0, "Hello from Kaveri Finance.", "yes"))
    calls = write_calls(tmp_path / "c.csv", COMPLIANT, THREATENING, LATE, SUPPORT, no_disclosure)
    code, records, outputs = run(calls)
    assert code == 0
    assert outputs == {"judged": "5", "failed": "0", "version": "2026.11.0"}
    assert not records["c-ok"]["is_breach"] and records["c-ok"]["findings"] == []
    (threat,) = records["c-threat"]["findings"]
    assert threat["rule"] == "threat_of_recovery_visit" and threat["severity"] == "high"
    assert threat["turn_index"] == 1 and threat["audio_url"] == "https://audio.example/1.wav"
    # The evidence is the words as said, around the match.
    assert "send our recovery agents to your home" in threat["evidence"]
    assert threat["evidence"].startswith("…account ending 4821 is overdue.")
    (late,) = records["c-late"]["findings"]
    assert late["rule"] == "collection_calling_hours"
    assert "19:40 Asia/Kolkata" in late["evidence"]
    assert rules(records["c-quiet"]) == {"automated_call_disclosure"}
    # Out of the collection rules' scope; a threat would still count everywhere.
    assert records["c-support"]["findings"] == []
    record = records["c-threat"]
    assert record["judge"] == "rules" and record["policy_version"] == "2026.11.0"
    assert record["status"] == "judged" and record["tokens"] == 0 and record["turns"] == 2
    assert record["reftime"] == "2026-10-05T05:30:00+00:00"


def test_speaker_scope_and_windows(tmp_path):
    policy = judge_compliance.load_policy(
        """
version: "2"
timezone: Asia/Kolkata
rules:
  - id: caller_abuse
    description: the caller is abusive
    speaker: caller
    phrases: [idiot]
  - id: loans_only
    description: x
    phrases: [loan]
    applies_to: {template_ids: [1], languages: [en], call_types: [outbound]}
calling_hours:
  - id: night_shift
    description: overnight window, weekdays only
    start: "22:00"
    end: "06:00"
    days: [mon, tue, wed, thu, fri]
""",
        "p",
    )
    said = call("c", turn(0, "you idiot, about your loan", "you idiot"), template_id=1)
    calls = judge_compliance.read_calls(write_calls(tmp_path / "c.csv", said))
    (found,) = judge_compliance.judge_with_rules(policy, calls)
    assert {f.rule: f.turn_index for f in found.findings} == {
        "caller_abuse": 0,
        "loans_only": 0,
        "night_shift": 0,  # 11:00 IST on a Monday
    }
    (rule,) = [r for r in policy.hours]
    zone = ZoneInfo("Asia/Kolkata")
    at = datetime
    assert rule.allows(at(2026, 10, 5, 23, 30, tzinfo=zone))
    assert rule.allows(at(2026, 10, 6, 5, 59, tzinfo=zone))
    assert not rule.allows(at(2026, 10, 6, 6, 0, tzinfo=zone))
    assert not rule.allows(at(2026, 10, 4, 23, 30, tzinfo=zone))  # a Sunday
    hindi = call("h", turn(0, "about your loan"), template_id=1, language="hi")
    (other,) = judge_compliance.judge_with_rules(
        policy, judge_compliance.read_calls(write_calls(tmp_path / "h.csv", hindi))
    )
    assert "loans_only" not in {f.rule for f in other.findings}


def test_the_calls_own_timezone_and_start_time_win(tmp_path):
    policy = judge_compliance.read_policy("")
    # 13:30 UTC is 19:00 in Kolkata (outside) but 09:30 in New York (inside).
    late_here = call("a", turn(0, GREETING, "", "2026-10-05T13:30:01+00:00"))
    fine_there = call(
        "b", turn(0, GREETING, "", "2026-10-05T13:30:01+00:00"), timezone="America/New_York"
    )
    # Placed at 18:59:59, its first words a second or two later.
    placed_in_time = call(
        "c",
        turn(0, GREETING, "", "2026-10-05T13:30:01+00:00"),
        call_started_at="2026-10-05T13:29:59+00:00",
    )
    calls = judge_compliance.read_calls(
        write_calls(tmp_path / "c.csv", late_here, fine_there, placed_in_time)
    )
    judged = judge_compliance.judge_with_rules(policy, calls)
    found = {j.call.uuid: {f.rule for f in j.findings} for j in judged}
    assert found == {"a": {"collection_calling_hours"}, "b": set(), "c": set()}


HEADER = "call_uuid,turn_index,reftime,bot_response,primary_utterance\n"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("call_uuid,bot_response\nx,hi\n", "has no turn_index, reftime, primary_utterance column"),
        (",".join(COLUMNS) + "\n", "the calls CSV has no turns"),
        (HEADER + "a,0,,x,y\nb,0,,x,y\na,1,,x,y\n", "does not keep each call's turns together"),
        (HEADER + "a,0,yesterday,x,y\n", "column reftime: expected an ISO 8601 time, got 'yes"),
    ],
)
def test_bad_calls_csv_fails_with_exit_2(run, tmp_path, capsys, rows, message):
    path = tmp_path / "c.csv"
    path.write_text(rows)
    code, _, _ = run(path)
    assert code == 2
    assert message in one_line(capsys.readouterr().err)


def test_unknown_judge_is_bad_input(run, tmp_path, capsys):
    code, _, _ = run(write_calls(tmp_path / "c.csv", COMPLIANT), "--judge", "oracle")
    assert code == 2
    assert "judge must be one of rules, llm, got 'oracle'" in capsys.readouterr().err


# --- redaction -----------------------------------------------------------------------------


def test_redaction_removes_numbers_contacts_and_names():
    redact = judge_compliance.Redactor(["Ramesh", "रमेश", "Priya Shah"])
    text = (
        "Ramesh, call +91 98765 43210 or write to ramesh.k@mail.example, see "
        "https://pay.example/x?id=7; EMI of rupees 12,300 ending 4821 due 15 November. "
        "रमेश जी खाता ४५६७. Priya Shah said Rameshwaram is far."
    )
    assert redact(text) == (
        "[NAME], call [PHONE] or write to [EMAIL], see [URL] EMI of rupees [NUMBER] ending "
        "[NUMBER] due [NUMBER] November. [NAME] जी खाता [NUMBER]. [NAME] said Rameshwaram is far."
    )
    assert judge_compliance.Redactor()("no numbers here") == "no numbers here"


# --- the LLM judge -------------------------------------------------------------------------


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch):
    """Points the judge at a fake endpoint; retries back off for milliseconds, not seconds."""
    monkeypatch.setattr(skit_components.llm, "BACKOFF_INITIAL_SECONDS", 0.01)
    monkeypatch.setattr(skit_components.llm, "BACKOFF_MAX_SECONDS", 0.05)

    def _point(url: str, key: str = "secret-key") -> None:
        monkeypatch.setenv("LLM_BASE_URL", url)
        monkeypatch.setenv("LLM_MODEL", "judge-model")
        monkeypatch.setenv("LLM_API_KEY", key)

    return _point


def threat_judge(request: Request) -> Reply:
    user = request.messages[1]["content"]
    if "recovery agents" in user:
        return chat_reply(
            json.dumps(
                {
                    "breaches": [
                        {"rule": "threat_of_recovery_visit", "turn": 1, "evidence": "agents"}
                    ]
                }
            ),
            total_tokens=100,
        )
    return chat_reply('```json\n{"breaches": []}\n```', total_tokens=50)


def llm_args(*extra: str) -> tuple[str, ...]:
    return ("--judge", "llm", "--llm-max-attempts", "3", "--llm-timeout-seconds", "2", *extra)


def test_llm_judge_redacts_judges_concurrently_and_counts_tokens(run, tmp_path, llm_env):
    many = [
        call(f"c{i}", turn(0, GREETING, "yes"), turn(1, PURPOSE, "call 9876543210"))
        for i in range(12)
    ]
    calls = write_calls(tmp_path / "c.csv", THREATENING, LATE, SUPPORT, *many)
    gate = threading.Barrier(3, timeout=5)

    def slow_start(request: Request) -> Reply:
        # The first three requests wait for each other: proof they were in flight at once.
        if len(server.requests) <= 3:
            gate.wait()
        return threat_judge(request)

    with FakeChatServer(slow_start) as server:
        llm_env(server.url)
        code, records, outputs = run(calls, *llm_args("--llm-concurrency", "3"))
    assert code == 0, records
    assert outputs["judged"] == "15" and outputs["failed"] == "0"
    assert server.max_in_flight == 3
    assert rules(records["c-threat"]) == {"threat_of_recovery_visit"}
    (finding,) = records["c-threat"]["findings"]
    assert finding["turn_index"] == 1 and finding["audio_url"] == "https://audio.example/1.wav"
    assert finding["severity"] == "high"
    # Calling hours stay a deterministic check, with or without the model.
    assert rules(records["c-late"]) == {"collection_calling_hours"}
    assert records["c-threat"]["tokens"] == 100 and records["c0"]["tokens"] == 50
    assert records["c0"]["judge"] == "llm:judge-model"
    # Only calls some content rule applies to are sent: the support call has the
    # all-template threat and abuse rules, so it is sent too.
    assert len(server.requests) == 15
    for request in server.requests:
        assert request.headers["Authorization"] == "Bearer secret-key"
        assert request.body["model"] == "judge-model" and request.body["temperature"] == 0
        assert request.body["response_format"] == {"type": "json_object"}
        user = request.messages[1]["content"]
        spoken = re.sub(r"^turn \d+ ", "", user, flags=re.MULTILINE)
        assert not re.search(r"\d", spoken) and "Ramesh" not in user
    system = server.requests[0].messages[0]["content"]
    assert "threat_of_recovery_visit" in system and "2026.11.0" in system


def test_transient_errors_are_retried_with_backoff(run, tmp_path, llm_env):
    attempts: dict[str, int] = {}

    def flaky(request: Request) -> Reply:
        uuid_turn = request.messages[1]["content"]
        attempts[uuid_turn] = attempts.get(uuid_turn, 0) + 1
        if attempts[uuid_turn] == 1:
            return Reply(503, {"error": "overloaded"})
        if attempts[uuid_turn] == 2:
            return Reply(429, {"error": "slow down"}, headers={"Retry-After": "0.02"})
        return threat_judge(request)

    calls = write_calls(tmp_path / "c.csv", THREATENING, COMPLIANT)
    with FakeChatServer(flaky) as server:
        llm_env(server.url)
        code, records, outputs = run(calls, *llm_args())
    assert code == 0
    assert outputs["failed"] == "0" and len(server.requests) == 6
    assert rules(records["c-threat"]) == {"threat_of_recovery_visit"}


def test_calls_that_keep_failing_are_reported_not_dropped(run, tmp_path, llm_env):
    broken = call("c-500", turn(0, GREETING, "server error please"))
    slow = call("c-slow", turn(0, GREETING, "take your time"))
    babble = call("c-babble", turn(0, GREETING, "say something odd"))
    invented = call("c-invented", turn(0, GREETING, "invent a rule"))

    def respond(request: Request) -> Reply:
        user = request.messages[1]["content"]
        if "server error" in user:
            return Reply(500, {"error": "boom"})
        if "take your time" in user:
            return Reply(delay_seconds=1.0, body={})
        if "something odd" in user:
            return chat_reply("I think this call is fine.")
        if "invent a rule" in user:
            return chat_reply('{"breaches": [{"rule": "rudeness", "turn": 0}]}')
        return threat_judge(request)

    calls = write_calls(tmp_path / "c.csv", broken, slow, babble, invented, THREATENING)
    with FakeChatServer(respond) as server:
        llm_env(server.url)
        code, records, outputs = run(
            calls, "--judge", "llm", "--llm-max-attempts", "2", "--llm-timeout-seconds", "0.3"
        )
    assert code == 0
    assert outputs == {"judged": "1", "failed": "4", "version": "2026.11.0"}
    failed = {u: r["error"] for u, r in records.items() if r["status"] == "failed"}
    assert failed == {
        "c-500": "HTTP 500 (after 2 attempts)",
        "c-slow": "timed out after 0.3s (after 2 attempts)",
        "c-babble": 'the model did not answer {"breaches": [...]} (after 2 attempts)',
        "c-invented": failed["c-invented"],
    }
    assert failed["c-invented"].startswith("the model named an unknown rule")
    assert records["c-threat"]["status"] == "judged"
    assert all(not records[u]["is_breach"] for u in failed)
    assert len(server.requests) == 9


def test_a_request_the_endpoint_refuses_fails_that_call_only(run, tmp_path, llm_env):
    def respond(request: Request) -> Reply:
        if "too long" in request.messages[1]["content"]:
            return Reply(400, {"error": "context length exceeded"})
        return threat_judge(request)

    long_call = call("c-long", turn(0, GREETING, "too long"))
    with FakeChatServer(respond) as server:
        llm_env(server.url)
        code, records, _ = run(write_calls(tmp_path / "c.csv", long_call, COMPLIANT), *llm_args())
    assert code == 0
    assert records["c-long"]["error"] == "the endpoint refused the request: HTTP 400"
    assert len(server.requests) == 2  # a 400 is not retried


def test_an_unreachable_endpoint_fails_the_step(run, tmp_path, llm_env, capsys):
    llm_env(unreachable_url())
    calls = write_calls(tmp_path / "c.csv", COMPLIANT, THREATENING, LATE)
    code, _, _ = run(calls, *llm_args())
    assert code == 13
    line = one_line(capsys.readouterr().err)
    assert re.search(
        r"LLM endpoint http://127\.0\.0\.1:\d+/v1/chat/completions is unreachable after 3 attempts",
        line,
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "rejected the credentials (HTTP 401)"), (404, "answered HTTP 404")],
)
def test_a_rejected_configuration_fails_the_step_without_retrying(
    run, tmp_path, llm_env, capsys, status, message
):
    with FakeChatServer(lambda request: Reply(status, {"error": "no"})) as server:
        llm_env(server.url, key="wrong")
        many = [call(f"c{i}", turn(0, GREETING)) for i in range(20)]
        calls = write_calls(tmp_path / "c.csv", *many)
        code, _, _ = run(calls, *llm_args("--llm-concurrency", "2"))
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert message in line and "wrong" not in line
    # The first refusal stops the others: no call is tried again, most are never sent.
    assert len(server.requests) < 10


def test_every_call_failing_fails_the_step(run, tmp_path, llm_env, capsys):
    with FakeChatServer(lambda request: Reply(502, {})) as server:
        llm_env(server.url)
        code, _, _ = run(write_calls(tmp_path / "c.csv", COMPLIANT, THREATENING), *llm_args())
    assert code == 13
    assert "all 2 calls failed to be judged; the first: HTTP 502" in capsys.readouterr().err
    assert len(server.requests) == 6


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LLM_MODEL": "m"}, "LLM_BASE_URL is not set"),
        ({"LLM_BASE_URL": "http://127.0.0.1:9/v1"}, "LLM_MODEL is not set"),
        ({"LLM_BASE_URL": "ftp://x", "LLM_MODEL": "m"}, "LLM_BASE_URL must be an http(s) URL"),
    ],
)
def test_missing_llm_configuration_is_bad_input(run, tmp_path, monkeypatch, capsys, env, message):
    for name in judge_compliance.LLM_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, _ = run(write_calls(tmp_path / "c.csv", COMPLIANT), "--judge", "llm")
    assert code == 2
    assert message in one_line(capsys.readouterr().err)


def test_the_api_key_is_not_in_the_config_repr(monkeypatch):
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LLM_MODEL", "m")
    monkeypatch.setenv("LLM_API_KEY", "sk-very-secret")
    config = judge_compliance.llm_config(timeout_seconds=1, max_attempts=1, concurrency=1)
    assert "sk-very-secret" not in repr(config)


def test_runs_as_a_module_in_its_image_folder(tmp_path):
    calls = write_calls(tmp_path / "c.csv", COMPLIANT, THREATENING)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "judge_compliance",
            "--calls",
            str(calls),
            "--judgements",
            str(tmp_path / "j.jsonl"),
            "--judged-count",
            str(tmp_path / "n"),
            "--failed-count",
            str(tmp_path / "f"),
            "--policy-version",
            str(tmp_path / "v"),
        ],
        cwd=FOLDER,
        env={k: v for k, v in os.environ.items() if not k.startswith("LLM_")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (tmp_path / "n").read_text() == "2"
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 2
