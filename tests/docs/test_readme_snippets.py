"""README.md's Python client snippets run as pasted: each is run by a fresh interpreter
against the whole service built in process (the embedded default on demo data, on a free
port), with only the address the snippet names replaced by the server's."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skit.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc, run_pb2
from skit_demo import ensure_demo_data
from skit_pipelines.config import INHERITED_ENV, ServerConfig
from skit_pipelines.server import Application, build_application

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CLIENT_HEADING = "## Python client"
README_ADDRESS = "127.0.0.1:50051"
"""The address the snippets name: `make run`'s."""
SNIPPET_TIMEOUT_SECONDS = 90
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def client_snippets() -> list[str]:
    """The Python blocks of README.md's client section, as written."""
    text = README.read_text(encoding="utf-8")
    assert CLIENT_HEADING in text, f"README.md lost {CLIENT_HEADING!r}"
    start = text.index(CLIENT_HEADING) + len(CLIENT_HEADING)
    end = text.find("\n## ", start)
    return _PYTHON_BLOCK.findall(text[start : end if end >= 0 else None])


SNIPPETS = client_snippets()


def test_the_client_section_has_a_sync_and_an_async_snippet() -> None:
    assert any("PipelinesClient(" in s and "AsyncPipelinesClient" not in s for s in SNIPPETS)
    assert any("AsyncPipelinesClient(" in s for s in SNIPPETS)


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo databases, generated once and copied into each server's home."""
    root = tmp_path_factory.mktemp("demo") / "demo"
    ensure_demo_data(root)
    return root


@pytest.fixture
async def app(tmp_path: Path, demo_template: Path) -> AsyncIterator[Application]:
    home = tmp_path / "home"
    shutil.copytree(demo_template, home / "demo")
    config = ServerConfig(
        port=0,
        home=home,
        inherited_env={name: os.environ[name] for name in INHERITED_ENV if name in os.environ},
    )
    application = await build_application(config)
    await application.start()
    try:
        yield application
    finally:
        await application.stop(0)


async def runs_on(app: Application) -> list[run_pb2.Run]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pipeline_service_pb2_grpc.PipelineServiceStub(channel)
        response = await stub.ListRuns(pipeline_service_pb2.ListRunsRequest(), timeout=10)
    return list(response.runs)


@pytest.mark.parametrize(
    "snippet", SNIPPETS, ids=lambda s: "async" if "AsyncPipelinesClient" in s else "sync"
)
async def test_a_client_snippet_runs_as_pasted(snippet: str, app: Application, tmp_path: Path):
    assert snippet.count(README_ADDRESS) == 1, "the snippet names the server once"
    code = snippet.replace(README_ADDRESS, f"127.0.0.1:{app.port}")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), SNIPPET_TIMEOUT_SECONDS)
    assert process.returncode == 0, err.decode()

    # One line per snapshot: its revision, then its state by name, to the run's end.
    lines = [line.split() for line in out.decode().splitlines()]
    assert lines and all(len(words) == 2 for words in lines), out.decode()
    revisions = [int(revision) for revision, _ in lines]
    assert revisions == sorted(set(revisions)), revisions
    states = [state for _, state in lines]
    assert not any(state.isdigit() for state in states), f"states print as numbers: {states}"
    assert states[-1].endswith("SUCCEEDED"), states

    (run,) = await runs_on(app)
    assert run.pipeline == "pipelines/random-sample-calls"
    assert run.state == run_pb2.RUN_STATE_SUCCEEDED
    assert run.parameters["call_quantity"] == 20
    assert run.revision == revisions[-1]
