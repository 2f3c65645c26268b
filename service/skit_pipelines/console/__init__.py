"""The web console: pages over the same RunController, store, artifacts and tokens as the
gRPC API, served by `serve --console-port` on its own HTTP port."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from skit_pipelines.artifacts.base import ArtifactStore
from skit_pipelines.auth import TokenFile
from skit_pipelines.console.app import Console
from skit_pipelines.console.previews import ArtifactReader
from skit_pipelines.console.sessions import Sessions
from skit_pipelines.runs import RunController

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 2.0
"""Open pages' event streams end at shutdown (the store's watches close first); what
is still open after this is cut."""


@dataclass
class ConsoleServer:
    runner: web.AppRunner
    reader: ArtifactReader | None
    host: str
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, requested_port: int) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, requested_port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through its server
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else requested_port
        logger.info("serving the web console on %s", self.url)

    async def stop(self) -> None:
        await self.runner.cleanup()
        if self.reader is not None:
            self.reader.close()


def create_console(
    controller: RunController,
    *,
    host: str,
    tokens_file: Path | None,
    artifacts: ArtifactStore | None,
) -> ConsoleServer:
    """The console for `controller` (not started): signs in with the tokens of
    `tokens_file` (None: authentication off, everyone an admin, as in the API)."""
    tokens = TokenFile.load(tokens_file) if tokens_file is not None else None
    reader = (
        ArtifactReader(artifacts, Path(tempfile.mkdtemp(prefix="skit-console-")))
        if artifacts is not None
        else None
    )
    console = Console(controller, Sessions(tokens), reader)
    runner = web.AppRunner(
        console.application(), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
    )
    return ConsoleServer(runner, reader, host)
