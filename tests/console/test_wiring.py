"""How the console is switched on: `serve --console-port`, SKIT_CONSOLE_PORT, and its
life with the service's (off unless asked)."""

from __future__ import annotations

import pytest

from skit_pipelines.config import ServerConfig
from skit_pipelines_cli.parser import build_parser
from skit_testing.console import ConsoleClient

pytestmark = pytest.mark.xdist_group("console")


def test_the_console_is_off_unless_a_port_is_given() -> None:
    assert ServerConfig().console_port is None
    assert ServerConfig.from_env({"SKIT_CONSOLE_PORT": "8080"}).console_port == 8080
    args = build_parser({}).parse_args(["serve", "--console-port", "0"])
    assert args.console_port == 0
    assert build_parser({}).parse_args(["serve"]).console_port is None


async def test_no_console_without_a_port(start_service) -> None:
    app = await start_service(console_port=None)
    assert app.console is None


async def test_the_console_stops_with_the_service_ending_its_event_streams(
    start_service,
) -> None:
    app = await start_service()
    assert app.console is not None
    client = ConsoleClient(app.console.url)
    try:
        await client.sign_in()
        status, run = await client.post(
            "/api/runs",
            {"pipeline": "pipelines/console-demo", "parameters": {"hold_seconds": 600}},
        )
        assert status == 201
        async with client.http.get(f"/api/runs/{run['id']}/events") as response:
            assert response.status == 200
            await response.content.readline()  # the stream is open
            await app.stop(0)
            # The watch ends at shutdown (clients resume elsewhere), not at the grace's end.
            rest = await response.content.read()
        assert b"event: error" in rest or b"event: end" in rest or rest == b""
    finally:
        await client.close()
