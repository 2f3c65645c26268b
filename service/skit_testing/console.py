"""Web console tests: a small project whose runs have a report with plots, and the
browser (Debian's chromium driven by Playwright).

The browser tests skip when chromium or Playwright is missing, except in CI: with
env CI=true or SKIT_TEST_REQUIRE_CHROMIUM=1 a missing browser fails them (as
SKIT_TEST_REQUIRE_POSTGRES does for PostgreSQL), so they cannot pass unnoticed as skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from skit_pipelines.domain import Run
from skit_pipelines.server import Application

ENV_REQUIRE = "SKIT_TEST_REQUIRE_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

IMAGE = "skit-pipelines/c-console:0.1.0"

PREPARE = """
import os, sys
rows, out = int(sys.argv[1]), sys.argv[2]
if rows == 13:
    print("13 rows is unlucky", file=sys.stderr)
    sys.exit(2)
print(f"preparing {rows} rows", flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    f.write("intent,count\\n")
    for n in range(rows):
        f.write(f"intent_{n},{n * 10}\\n")
print("prepared", flush=True)
"""

# A real PNG (one colour, 40x20) written with zlib: the report's plot.
REPORT = """
import base64, os, struct, sys, zlib
data, title, out = sys.argv[1:4]

def png(width, height, rgb):
    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc
    raw = b"".join(b"\\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

os.makedirs(out, exist_ok=True)
plot = png(40, 20, (47, 95, 208))
open(os.path.join(out, "plot.png"), "wb").write(plot)
rows = open(data).read().splitlines()
print(f"report over {len(rows) - 1} rows", flush=True)
open(os.path.join(out, "report.md"), "w").write(
    f"# {title}\\n\\n{len(rows) - 1} intents.\\n\\n![the plot](plot.png)\\n\\n"
    "<script>alert('not run')</script>\\n"
)
inline = base64.b64encode(plot).decode()
open(os.path.join(out, "report.html"), "w").write(
    f"<html><body><h1>{title}</h1><img alt='inline plot' src='data:image/png;base64,{inline}'>"
    "<script>parent.document.title = 'escaped'</script></body></html>"
)
"""

HOLD = """
import sys, time
seconds, out = float(sys.argv[1]), sys.argv[2]
print(f"holding {seconds}s", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    time.sleep(0.05)
open(out, "w").write("held")
"""

PIPELINE = '''
from kfp import dsl

from skit_pipelines.rules import Range

IMAGE = "skit-pipelines/c-console:0.1.0"

rules = {"rows": Range(minimum=1, maximum=100, integer=True)}


@dsl.container_component
def prepare(rows: int, data: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=["python", "prepare.py"], args=[rows, data.path])


@dsl.container_component
def report(data: dsl.Input[dsl.Dataset], title: str, report: dsl.Output[dsl.Artifact]):
    return dsl.ContainerSpec(
        image=IMAGE, command=["python", "report.py"], args=[data.path, title, report.path]
    )


@dsl.container_component
def hold(seconds: float, done: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=IMAGE, command=["python", "hold.py"], args=[seconds, done])


@dsl.pipeline(name="console-demo", description="Prepares rows, reports on them, and holds.")
def pipeline(rows: int = 5, title: str = "Intents", hold_seconds: float = 0.0):
    """Console demo.

    Args:
        rows: How many rows to prepare.
        title: The report's title.
        hold_seconds: How long the hold step runs.
    """
    prepared = prepare(rows=rows)
    prepared.set_caching_options(False)
    made = report(data=prepared.outputs["data"], title=title)
    made.set_caching_options(False)
    held = hold(seconds=hold_seconds).after(prepared)
    held.set_caching_options(False)
'''


WIDE_STEPS = 200

WIDE_PIPELINE = f'''
from kfp import dsl

IMAGE = "skit-pipelines/c-console:0.1.0"


@dsl.container_component
def prepare(rows: int, data: dsl.Output[dsl.Dataset]):
    return dsl.ContainerSpec(image=IMAGE, command=["python", "prepare.py"], args=[rows, data.path])


@dsl.pipeline(name="wide", description="{WIDE_STEPS} steps in chains of ten.")
def pipeline():
    previous = None
    for i in range({WIDE_STEPS}):
        task = prepare(rows=1)
        task.set_display_name(f"s{{i:03d}}")
        if i % 10:
            task.after(previous)
        previous = task
'''


def write_console_project(root: Path) -> Path:
    """One image folder (c_console) and two pipelines: console-demo (prepare -> report,
    prepare -> hold; the report is a directory with report.md, report.html and a PNG;
    13 rows make prepare fail) and
    wide (WIDE_STEPS steps, for the page's behaviour under many updates)."""
    image = root / "images" / "c_console"
    image.mkdir(parents=True)
    (image / "VERSION").write_text("0.1.0\n")
    (image / "component.yaml").write_text(
        "name: Console\nimplementation:\n  container:\n"
        f"    image: {IMAGE}\n    command: [python, prepare.py]\n"
    )
    (image / "prepare.py").write_text(PREPARE)
    (image / "report.py").write_text(REPORT)
    (image / "hold.py").write_text(HOLD)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "console_demo.py").write_text(PIPELINE)
    (root / "pipelines" / "wide.py").write_text(WIDE_PIPELINE)
    return root


def chromium_or_skip() -> str:
    """The chromium executable and that Playwright is importable; else a skip (a failure
    in CI)."""
    path = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    path = path or shutil.which("chromium")
    problem = ""
    if path is None:
        problem = "chromium is not installed (apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        problem = "Playwright for Python is not installed"
    if problem:
        if os.environ.get(ENV_REQUIRE) == "1" or os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need a browser: {problem}")
        pytest.skip(problem)
    assert path is not None
    return path


class ConsoleClient:
    """A browser's view of the console's API: its cookie jar and CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        # unsafe: the console listens on 127.0.0.1, and aiohttp's jar keeps no cookie of
        # an IP address otherwise (a browser does).
        self.http = aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def sign_in(self, token: str = "") -> dict[str, Any]:
        if token:
            status, body = await self.post("/api/session", {"token": token}, csrf=False)
        else:
            status, body = await self.get("/api/session")
        assert status == 200, body
        self.csrf = body["csrf"]
        return dict(body)

    async def get(self, url: str, **params: Any) -> tuple[int, Any]:
        async with self.http.get(url, params=params or None) as response:
            return response.status, await response.json()

    async def post(self, url: str, body: Any, *, csrf: bool = True) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        async with self.http.post(url, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def events(self, path: str, *, until: str = "end", **headers: str) -> list[Any]:
        """The events of a server-sent event stream up to an `until` event (included)."""
        found: list[Any] = []
        async with self.http.get(path, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            event: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "event" in event:
                        item = (event["event"], event.get("id", ""), json.loads(event["data"]))
                        found.append(item)
                        if event["event"] in (until, "error"):
                            return found
                    event = {}
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                event[key] = value
        return found


async def wait_for_state(app: Application, run_id: str, *states: str) -> Run:
    """The run once it reaches one of `states` (by its watch, not by polling)."""
    async for run in app.controller.watch_run(f"runs/{run_id}"):
        if run.state.name in states:
            return run
    raise AssertionError(f"runs/{run_id} ended without reaching {states}")


async def wait_step_running(app: Application, run_id: str, step: str) -> None:
    async for run in app.controller.watch_run(f"runs/{run_id}"):
        if any(s.name == step and s.state.name == "RUNNING" for s in run.steps):
            return
    raise AssertionError(f"{step} of runs/{run_id} never ran")
