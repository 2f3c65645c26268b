"""`skit-pipelines serve` processes to break: killed with SIGKILL, restarted on the same
home, or left without their PostgreSQL database (skit_testing.serve starts them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from skit_testing.serve import ServeProcess, launch

FAULTS_PROJECT = Path(__file__).resolve().parent / "project"
"""The `steps` pipeline: three steps that print to their logs and ignore SIGTERM."""

Server = ServeProcess


StartServers = Callable[..., list[Server]]


@pytest.fixture
def start_servers(tmp_path: Path) -> Iterator[StartServers]:
    """start_servers(homes, *serve_flags, project=..., env={...}) -> [Server]: one
    process per home, started together; a home used before is started again."""
    started: list[Server] = []

    def start(
        homes: list[Path],
        *flags: str,
        project: Path = FAULTS_PROJECT,
        env: Mapping[str, str] | None = None,
    ) -> list[Server]:
        common = {"SKIT_PROJECT_ROOT": str(project), "SKIT_DEMO_DATA": "0", **(env or {})}
        launched = [launch(home, *flags, env=common) for home in homes]
        servers = [one.serving() for one in launched]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        if server.stop() != 0:
            print(server.log.read_text())
