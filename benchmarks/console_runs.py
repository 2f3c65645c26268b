"""The web console's runs page at scale: server time of GET /api/runs (the page's one
call) over a SQLite store of a million runs, filled as benchmarks/listruns.py fills it.

`python -m benchmarks.console_runs [RUNS]`: prints p50/p99 of the first page unfiltered,
filtered by a 1% state and by a 0.1% label, and of a later page; the server
time is measured inside the console (a middleware around the handler), apart from HTTP.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks.listruns import DEFAULT_RUNS, DataSet, fill_sqlite
from benchmarks.report import percentile
from skit_pipelines.backends.base import Backend
from skit_pipelines.catalog import Catalog
from skit_pipelines.console.app import Console
from skit_pipelines.console.sessions import COOKIE, Sessions
from skit_pipelines.domain import Pipeline, Run
from skit_pipelines.runs import RunController
from skit_pipelines.store.sqlite import SqliteRunStore

TARGET_MS = 300.0
SAMPLES = 30


class _Idle(Backend):
    """The list needs no backend."""

    name = "idle"

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        raise NotImplementedError

    async def cancel(self, run_id: str) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        return None


async def _measure(runs: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.db"
        started = time.perf_counter()
        await fill_sqlite(path, DataSet.generate(runs))
        lines = [f"filled {runs} runs in {time.perf_counter() - started:.0f}s"]
        store = SqliteRunStore(path)
        controller = RunController(store, Catalog({}), _Idle())
        sessions = Sessions(None)
        session = sessions.anonymous()
        console = Console(controller, sessions, None)
        app = console.application()
        server_ms: list[float] = []

        @web.middleware
        async def timed(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            begun = time.perf_counter()
            response = await handler(request)
            server_ms.append((time.perf_counter() - begun) * 1000)
            return response

        app.middlewares.insert(0, timed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        cases: dict[str, dict[str, Any]] = {
            "first page": {},
            "state=FAILED (1%)": {"state": "FAILED"},
            "label experiment=exp-1 (0.1%)": {"label": "experiment=exp-1"},
        }
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{port}", cookie_jar=jar, cookies={COOKIE: session.id}
        ) as http:
            for name, params in cases.items():
                server_ms.clear()
                token = ""
                for _ in range(SAMPLES):
                    async with http.get("/api/runs", params={**params, "page_size": 50}) as r:
                        body = await r.json()
                        assert r.status == 200, body
                        token = body["next_page_token"]
                lines.append(_line(name, server_ms))
                if name == "first page":
                    server_ms.clear()
                    for _ in range(SAMPLES):
                        async with http.get(
                            "/api/runs", params={"page_size": 50, "page_token": token}
                        ) as r:
                            assert r.status == 200
                    lines.append(_line("second page", server_ms))
        await runner.cleanup()
        await store.close()
        return lines


def _line(name: str, samples: list[float]) -> str:
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    verdict = "ok" if p99 < TARGET_MS else "TARGET MISSED"
    return f"{name:32} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  ({verdict}, < {TARGET_MS:g} ms)"


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else DEFAULT_RUNS
    for line in asyncio.run(_measure(runs)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
