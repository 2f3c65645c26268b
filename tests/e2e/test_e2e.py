"""The running service driven from outside: `buf curl` (through server reflection) and the CLI."""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from google.rpc import error_details_pb2

pytestmark = pytest.mark.e2e

SERVICE = "skit.pipelines.v1.PipelineService"


def buf_curl(buf: Path, server, path: str, body: dict | None = None) -> list[dict]:
    """Calls one method with buf curl; returns the response messages (several for streams)."""
    command = [
        str(buf),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        f"http://{server.address}/{path}",
    ]
    if body is not None:
        command += ["-d", json.dumps(body)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(doc) for doc in _split_json_documents(result.stdout)]


def _split_json_documents(text: str) -> list[str]:
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        _, end = decoder.raw_decode(text, index)
        documents.append(text[index:end])
        index = end
    return documents


def _unbase64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(unquote(parsed.path))


def test_buf_lists_services_through_reflection(buf: Path, server) -> None:
    result = subprocess.run(
        [
            str(buf),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-services",
            f"http://{server.address}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {SERVICE, "grpc.health.v1.Health"} <= services
    health = buf_curl(buf, server, "grpc.health.v1.Health/Check", {"service": SERVICE})
    assert health == [{"status": "SERVING"}]


def test_random_sample_calls_end_to_end_with_buf_curl(buf: Path, server) -> None:
    (listing,) = buf_curl(buf, server, f"{SERVICE}/ListPipelines", {})
    names = {p["name"] for p in listing["pipelines"]}
    assert {"pipelines/random-sample-calls", "pipelines/invalidate-llm-situations"} <= names

    body = {
        "run": {"pipeline": "pipelines/random-sample-calls", "parameters": {"call_quantity": 7}},
        "requestId": "e2e-sample-1",
    }
    (created,) = buf_curl(buf, server, f"{SERVICE}/CreateRun", body)
    assert created["state"] == "RUN_STATE_QUEUED"
    (replayed,) = buf_curl(buf, server, f"{SERVICE}/CreateRun", body)
    assert replayed["name"] == created["name"]

    events = buf_curl(buf, server, f"{SERVICE}/WatchRun", {"name": created["name"]})
    revisions = [int(e["run"]["revision"]) for e in events]
    assert revisions == sorted(set(revisions)), revisions
    final = events[-1]["run"]
    assert final["state"] == "RUN_STATE_SUCCEEDED", final
    assert [s["state"] for s in final["steps"]] == ["STEP_STATE_SUCCEEDED"]

    (output,) = final["outputs"]
    assert output["name"] == "calls" and output["step"] == "fetch-calls"
    assert final["outputParameters"] == {"call_count": 7}
    rows = list(csv.DictReader(local_path(output["uri"]).open()))
    assert len({row["call_id"] for row in rows}) == 7
    assert len(rows) > 7, "one row per turn: calls have several turns"

    (again,) = buf_curl(buf, server, f"{SERVICE}/GetRun", {"name": created["name"]})
    assert again["revision"] == final["revision"]


def test_bad_parameter_is_invalid_argument_over_the_wire(buf: Path, server) -> None:
    command = [
        str(buf),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        f"http://{server.address}/{SERVICE}/CreateRun",
        "-d",
        json.dumps(
            {
                "run": {
                    "pipeline": "pipelines/random-sample-calls",
                    "parameters": {"call_quantity": "many"},
                }
            }
        ),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    error = json.loads(result.stderr)
    assert error["code"] == "invalid_argument"
    # buf prints details it cannot describe as base64 of the serialized message.
    violations = [
        v.field
        for detail in error["details"]
        if detail["type"] == "google.rpc.BadRequest"
        for v in error_details_pb2.BadRequest.FromString(
            _unbase64(detail["value"])
        ).field_violations
    ]
    assert violations == ["run.parameters.call_quantity"]


def test_cli_tour_runs_both_pipelines(server) -> None:
    listing = server.cli("pipelines", "list").stdout
    assert "random-sample-calls" in listing and "invalidate-llm-situations" in listing
    created = server.cli(
        "runs",
        "create",
        "random-sample-calls",
        "--param",
        "call_quantity=3",
        "--label",
        "team=e2e",
        "--watch",
    )
    assert "SUCCEEDED" in created.stdout
    runs = server.cli("--output", "json", "runs", "list", "--label", "team=e2e").stdout
    assert "random-sample-calls" in runs

    invalidated = server.cli(
        "runs",
        "create",
        "invalidate-llm-situations",
        "--param",
        "situation_ids=[3, 4]",
        "--watch",
    )
    assert "SUCCEEDED" in invalidated.stdout
    assert "invalidated_count=2" in invalidated.stdout
    unknown = server.cli(
        "runs",
        "create",
        "invalidate-llm-situations",
        "--param",
        "situation_ids=[999999]",
        "--watch",
        check=False,
    )
    assert unknown.returncode == 1
    assert "999999" in unknown.stdout + unknown.stderr


def test_sigterm_drains_and_exits_zero(server_control, tmp_path: Path) -> None:
    start, stop = server_control
    running = start(tmp_path / "home")
    assert stop(running, timeout=30) == 0
    log = running.log.read_text()
    assert "shutting down" in log


def test_authenticated_server_through_the_cli(server_control, tmp_path: Path) -> None:
    start, stop = server_control
    tokens = tmp_path / "tokens.json"
    home = tmp_path / "home"
    home.mkdir()
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "skit_pipelines_cli",
            "tokens",
            "add",
            "ci-bot",
            "--role",
            "runner",
            "--tokens-file",
            str(tokens),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = created.stdout.strip()
    assert token.startswith("skp_") and token not in tokens.read_text()
    running = start(home, "--tokens-file", str(tokens))
    try:
        refused = running.cli("pipelines", "list", check=False)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        run = running.cli(
            "--token",
            token,
            "runs",
            "create",
            "random-sample-calls",
            "--param",
            "call_quantity=2",
            "--watch",
        )
        assert "SUCCEEDED" in run.stdout
    finally:
        assert stop(running) == 0


def test_refuses_to_expose_an_unauthenticated_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "skit_pipelines_cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--home",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--tokens-file" in result.stdout + result.stderr
