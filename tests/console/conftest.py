"""The whole service (build_application: catalog, SQLite store, local executor, console)
on a small project, and an HTTP client of its console."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from skit_pipelines.auth import add_token
from skit_pipelines.config import ServerConfig
from skit_pipelines.server import Application, build_application
from skit_testing.console import ConsoleClient, write_console_project


@pytest.fixture(scope="session")
def console_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_console_project(tmp_path_factory.mktemp("console-project"))


@pytest.fixture(scope="session")
def console_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the tests for the compiled-catalog cache; each has its own store."""
    return tmp_path_factory.mktemp("console-home")


@dataclass
class Tokens:
    file: Path
    viewer: str
    runner: str
    other_runner: str
    admin: str


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    path = tmp_path / "tokens.json"
    return Tokens(
        file=path,
        viewer=add_token(path, "vera", "viewer"),
        runner=add_token(path, "rita", "runner"),
        other_runner=add_token(path, "otto", "runner"),
        admin=add_token(path, "ada", "admin"),
    )


Start = Callable[..., Awaitable[Application]]


@pytest.fixture
async def start_service(
    tmp_path: Path, console_project: Path, console_home: Path
) -> AsyncIterator[Start]:
    """Starts the service with its console on a free port; stopped at the end."""
    started: list[Application] = []

    async def start(**overrides: Any) -> Application:
        config = ServerConfig(
            port=0,
            home=console_home,
            project_root=console_project,
            demo_data=False,
            console_port=0,
            store_url=f"sqlite:///{tmp_path / 'runs.db'}",
            artifacts_url=f"file://{tmp_path / 'artifacts'}",
        )
        config = replace(config, **overrides)
        app = await build_application(config)
        await app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop(0)


@pytest.fixture
async def app(start_service: Start) -> Application:
    """Authentication off (the embedded default): everyone is an admin."""
    return await start_service()


@pytest.fixture
async def client(app: Application) -> AsyncIterator[ConsoleClient]:
    assert app.console is not None
    console = ConsoleClient(app.console.url)
    try:
        yield console
    finally:
        await console.close()
