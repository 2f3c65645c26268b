from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import skit_components.llm
from skit_components.db import connect, sqlite_url
from skit_components.loader import import_component
from skit_demo import generate as generate_demo
from skit_demo import vocabulary as v
from skit_testing.fake_openai import FakeChatServer, Reply, Request, chat_reply, unreachable_url

pytest_plugins = ["skit_testing.postgres"]

FOLDER = Path(__file__).resolve().parents[1]
generate_conversations = import_component(FOLDER)

GOOD = {
    "turns": [
        {"role": "bot", "text": "Hello, this is Kaveri Finance. Am I speaking with Ramesh?"},
        {"role": "user", "text": "yes, who is this"},
        {"role": "bot", "text": "Your EMI is overdue. When will you pay?"},
        {"role": "user", "text": "i will pay next friday"},
    ]
}
OUTPUTS = ("conversations", "generated_count", "dropped_count", "generator_used", "report")


@pytest.fixture(scope="module")
def demo_metrics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo(sqlite_url(root / "calls.db"), sqlite_url(root / "metrics.db"), seed=2, calls=0)
    return root / "metrics.db"


@pytest.fixture
def metrics_db(demo_metrics: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = sqlite_url(demo_metrics)
    monkeypatch.setenv("METRICS_DB_URL", url)
    for name in skit_components.llm.LLM_ENV:
        monkeypatch.delenv(name, raising=False)
    return url


def valid_and_invalid(url: str) -> tuple[list[int], list[int]]:
    with connect(url) as db:
        rows = db.fetchall("SELECT id, is_valid FROM situation_scenario_mapper ORDER BY id")
    return [r[0] for r in rows if r[1]], [r[0] for r in rows if not r[1]]


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch):
    """Points the step at a fake endpoint; retries back off for milliseconds, not seconds."""
    monkeypatch.setattr(skit_components.llm, "BACKOFF_INITIAL_SECONDS", 0.01)
    monkeypatch.setattr(skit_components.llm, "BACKOFF_MAX_SECONDS", 0.05)

    def _point(url: str, key: str = "secret-key") -> None:
        monkeypatch.setenv("LLM_BASE_URL", url)
        monkeypatch.setenv("LLM_MODEL", "writer-model")
        monkeypatch.setenv("LLM_API_KEY", key)

    return _point


@pytest.fixture
def run(tmp_path: Path):
    """Runs main(); returns (exit code, conversations, output parameters, report)."""

    runs = iter(range(1_000))

    def _run(*args: str) -> tuple[int, list[dict], dict[str, str], dict]:
        out = tmp_path / f"out{next(runs)}"
        paths = {name: out / name for name in OUTPUTS}
        argv = [*args, *(f"--{name.replace('_', '-')}={path}" for name, path in paths.items())]
        code = generate_conversations.main(argv)
        if code != 0:
            assert not paths["conversations"].exists()
            return code, [], {}, {}
        lines = paths["conversations"].read_text(encoding="utf-8").splitlines()
        params = {n: paths[n].read_text() for n in OUTPUTS if n not in ("conversations", "report")}
        report = json.loads(paths["report"].read_text())
        return code, [json.loads(line) for line in lines], params, report

    return _run


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- the template generator -------------------------------------------------------------


def test_without_an_endpoint_the_template_generator_runs_and_says_so(run, metrics_db):
    valid, _ = valid_and_invalid(metrics_db)
    code, conversations, params, report = run("--situation-limit=3")
    assert code == 0
    assert params == {"generated_count": "6", "dropped_count": "0", "generator_used": "template"}
    assert report["generator"] == "template" and "LLM_BASE_URL is unset" in report["note"]
    assert report["situations"] == valid[:3]
    assert [(c["situation_id"], c["index"]) for c in conversations] == [
        (i, n) for i in valid[:3] for n in (0, 1)
    ]
    for c in conversations:
        assert c["generator"] == "template"
        assert c["turns"][0]["role"] == "bot"
        assert {t["role"] for t in c["turns"]} == {"bot", "user"}
        assert c["situation"] in c["prompt"] and c["scenario"] in c["prompt"]


def test_the_template_generator_is_deterministic_and_seeded(run, metrics_db):
    first = run("--situation-limit=5", "--seed=3")[1]
    assert run("--situation-limit=5", "--seed=3")[1] == first
    assert run("--situation-limit=5", "--seed=4")[1] != first


def test_template_phrases_are_the_demo_vocabulary():
    """The image cannot import skit_demo; its copy of the demo phrases must stay in step."""
    says = v.CALLER_SAYS["en"]
    intents = {
        "promise to pay": "promise_to_pay",
        "already paid": "already_paid",
        "dispute": "dispute",
        "callback": "request_callback",
        "wrong number": "wrong_number",
        "renewal": "_confirm_",
        "objection": "too_expensive",
        "network issue": "report_issue",
        "billing": "billing_query",
    }
    assert {s for _, s, _ in v.SITUATION_SCENARIOS} == set(generate_conversations.CALLER_SAYS)
    for scenario, phrases in generate_conversations.CALLER_SAYS.items():
        assert set(phrases) <= set(says[intents[scenario]]), scenario
    assert set(generate_conversations.CONFIRM) <= set(says["_confirm_"])


def test_situation_ids_and_invalidated_ones(run, metrics_db, capsys):
    valid, invalid = valid_and_invalid(metrics_db)
    code, conversations, params, _ = run(
        f"--situation-ids={json.dumps([valid[5], valid[2]])}", "--conversations-per-situation=1"
    )
    assert code == 0 and params["generated_count"] == "2"
    assert [c["situation_id"] for c in conversations] == sorted([valid[5], valid[2]])
    assert run(f"--situation-ids=[{invalid[0]}, {valid[0]}]")[0] == 2
    assert f"situations [{invalid[0]}] are invalidated" in one_line(capsys.readouterr().err)
    assert run("--situation-ids=[99999]")[0] == 2
    assert "unknown situation ids [99999]" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--generator=gpt"], "generator must be one of auto, llm, template"),
        (["--conversations-per-situation=0"], "conversations_per_situation must be 1 to 20"),
        (["--temperature=2.5"], "temperature must be 0 to 2"),
        (["--situation-limit=-1"], "situation_limit must be >= 0"),
        (["--prompt-template=Write about {customer}"], "unknown placeholders ['customer']"),
        (["--prompt-template=Write {situation"], "prompt_template:"),
        (["--prompt-template=Write a call"], "must contain {situation}"),
        (["--generator=llm"], "LLM_BASE_URL is not set"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, metrics_db, capsys, args, message):
    assert run(*args)[0] == 2
    assert message in one_line(capsys.readouterr().err)


def test_no_valid_situations_fails(run, tmp_path, monkeypatch, capsys):
    url = sqlite_url(tmp_path / "metrics.db")
    generate_demo(sqlite_url(tmp_path / "calls.db"), url, seed=2, calls=0)
    with connect(url) as db, db.transaction():
        db.execute("UPDATE situation_scenario_mapper SET is_valid = FALSE")
    monkeypatch.setenv("METRICS_DB_URL", url)
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    assert run()[0] == 2
    assert "no valid situations" in one_line(capsys.readouterr().err)


def test_a_missing_database_fails(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METRICS_DB_URL", sqlite_url(tmp_path / "missing.db"))
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    assert run()[0] == 13
    assert "metrics database" in one_line(capsys.readouterr().err)


@pytest.mark.postgres
def test_postgresql_situations(run, postgres_dsn, tmp_path, monkeypatch, capsys):
    generate_demo(sqlite_url(tmp_path / "calls.db"), postgres_dsn, seed=2, calls=0)
    monkeypatch.setenv("METRICS_DB_URL", postgres_dsn)
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    valid, invalid = valid_and_invalid(postgres_dsn)
    code, conversations, params, report = run("--situation-limit=0")
    assert code == 0
    assert report["situations"] == valid and params["generated_count"] == str(2 * len(valid))
    code, conversations, _, _ = run(f"--situation-ids={json.dumps(valid[-2:])}")
    assert code == 0 and sorted({c["situation_id"] for c in conversations}) == valid[-2:]
    assert run(f"--situation-ids=[{invalid[-1]}]")[0] == 2
    assert f"[{invalid[-1]}] are invalidated" in one_line(capsys.readouterr().err)


# --- the LLM generator, against the OpenAI-compatible stand-in ---------------------------


def test_llm_success_with_structured_output(run, metrics_db, llm_env):
    with FakeChatServer(lambda request: chat_reply(json.dumps(GOOD))) as server:
        llm_env(server.url)
        code, conversations, params, report = run(
            "--situation-limit=3", "--temperature=0.3", "--llm-concurrency=2"
        )
    assert code == 0
    assert params == {
        "generated_count": "6",
        "dropped_count": "0",
        "generator_used": "llm:writer-model",
    }
    assert report["note"] == "" and report["tokens"] == 6 * 42 and report["retries"] == {}
    assert len(server.requests) == 6 and server.max_in_flight <= 2
    body = server.requests[0].body
    assert body["model"] == "writer-model" and body["temperature"] == 0.3
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == (
        generate_conversations.CONVERSATION_SCHEMA
    )
    assert {r.headers["Authorization"] for r in server.requests} == {"Bearer secret-key"}
    situations = {c["situation"] for c in conversations}
    assert all(any(s in r.text for s in situations) for r in server.requests)
    assert all(c["turns"] == GOOD["turns"] for c in conversations)
    assert {c["generator"] for c in conversations} == {"llm:writer-model"}


def test_a_429_then_success_is_retried_and_counted(run, metrics_db, llm_env):
    lock, seen = threading.Lock(), set()

    def respond(request: Request) -> Reply:
        # The first attempt of every prompt is rate limited.
        with lock:
            first = request.messages[1]["content"] not in seen
            seen.add(request.messages[1]["content"])
        if first:
            return Reply(429, {"error": {"message": "rate limited"}}, headers={"Retry-After": "0"})
        return chat_reply(json.dumps(GOOD))

    with FakeChatServer(respond) as server:
        llm_env(server.url)
        code, conversations, params, report = run("--situation-limit=2")
    assert code == 0 and len(conversations) == 4
    assert params["dropped_count"] == "0"
    assert report["retries"] == {"HTTP 429": 4}
    assert len(server.requests) == 8


def test_server_errors_and_timeouts_are_retried(run, metrics_db, llm_env):
    replies = iter([Reply(503, {"error": "busy"}), Reply(delay_seconds=1.0)])

    def respond(request: Request) -> Reply:
        return next(replies, chat_reply(json.dumps(GOOD)))

    with FakeChatServer(respond) as server:
        llm_env(server.url)
        code, _, params, report = run(
            "--situation-limit=1", "--llm-concurrency=1", "--llm-timeout-seconds=0.2"
        )
    assert code == 0 and params["generated_count"] == "2" and params["dropped_count"] == "0"
    assert report["retries"] == {"HTTP 503": 1, "timed out after 0.2s": 1}


def test_malformed_output_is_retried_then_dropped_and_counted(run, metrics_db, llm_env):
    valid, _ = valid_and_invalid(metrics_db)
    bad_situation = valid[1]

    def respond(request: Request) -> Reply:
        if f"Situation: {_situation_text(metrics_db, bad_situation)}\n" in request.text:
            return chat_reply('{"turns": [{"role": "narrator", "text": "once upon a time"}]}')
        # Fenced JSON, as some models answer, is accepted.
        return chat_reply(f"```json\n{json.dumps(GOOD)}\n```")

    with FakeChatServer(respond) as server:
        llm_env(server.url)
        code, conversations, params, report = run("--situation-limit=3", "--llm-max-attempts=2")
    assert code == 0
    assert params["generated_count"] == "4" and params["dropped_count"] == "2"
    assert bad_situation not in {c["situation_id"] for c in conversations}
    assert [(d["situation_id"], d["index"]) for d in report["drops"]] == [
        (bad_situation, 0),
        (bad_situation, 1),
    ]
    assert all("malformed output" in d["reason"] for d in report["drops"])
    assert report["dropped_by_reason"] == {"malformed output": 2}
    assert report["retries"] == {"malformed output": 2}
    assert len(server.requests) == 4 + 2 * 2


def test_every_conversation_dropped_fails_without_an_artifact(run, metrics_db, llm_env, capsys):
    with FakeChatServer(lambda request: chat_reply("Sure! Here is a conversation.")) as server:
        llm_env(server.url)
        code = run("--situation-limit=1", "--llm-max-attempts=2")[0]
    assert code == 13
    line = one_line(capsys.readouterr().err)
    assert "all 2 conversations were dropped" in line and "not JSON" in line


def test_a_wrong_key_fails_clearly(run, metrics_db, llm_env, capsys):
    def respond(request: Request) -> Reply:
        return Reply(401, {"error": {"message": "Incorrect API key provided"}})

    with FakeChatServer(respond) as server:
        llm_env(server.url, key="wrong")
        code = run("--situation-limit=4")[0]
    assert code == 2
    assert "rejected the credentials (HTTP 401): check LLM_API_KEY" in one_line(
        capsys.readouterr().err
    )
    # The first rejection stops the rest: no request per conversation.
    assert len(server.requests) < 8


def test_an_unreachable_endpoint_fails_clearly(run, metrics_db, llm_env, capsys):
    llm_env(unreachable_url())
    code = run("--situation-limit=1", "--llm-max-attempts=2")[0]
    assert code == 13
    assert "is unreachable after 2 attempts" in one_line(capsys.readouterr().err)


def _situation_text(url: str, situation_id: int) -> str:
    with connect(url) as db:
        (row,) = db.fetchall(
            "SELECT situation FROM situation_scenario_mapper WHERE id = ?", (situation_id,)
        )
    return str(row[0])


def test_runs_as_a_module_with_one_line_on_failure(tmp_path, metrics_db):
    """As the image runs it: `python3 -m generate_conversations` in the folder."""
    out = tmp_path / "out"
    args = [f"--{n.replace('_', '-')}={out / n}" for n in OUTPUTS]
    env = {"METRICS_DB_URL": metrics_db, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "generate_conversations", "--situation-limit=1", *args],
        cwd=FOLDER,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "template generator ran instead" in done.stdout
    assert (out / "generated_count").read_text() == "2"
    failed = subprocess.run(
        [sys.executable, "-m", "generate_conversations", "--generator=nope", *args],
        cwd=FOLDER,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        "generate_conversations: generator must be one of auto, llm, template, got 'nope'"
    ]
