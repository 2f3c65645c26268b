"""A backend built after the service answers: the local executor imports kfp, which takes
longer than everything else the start does, and health, reads and watches need none of it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from skit_pipelines.backends.base import Backend
from skit_pipelines.domain import LogLine, Pipeline, Run

logger = logging.getLogger(__name__)


class DeferredBackend(Backend):
    """Stands for the backend `build` returns, built by `load` (the server calls it once
    health is SERVING) or on first use, whichever comes first. Calls that need it wait
    for it.

    Args:
        name: The built backend's name (stored with every run as it is created).
        build: Builds the backend, on the event loop; quick once `imports` are imported.
        imports: Modules `build` needs, imported in a thread so the event loop goes on
            answering meanwhile.
        prepare: Work `build` needs done first, run in a thread after the imports (the
            demo databases, which a first start generates).
        check: The built backend's `check_runnable`, light enough to run before it is
            built (the local backend's LocalRunChecks.check).
    """

    def __init__(
        self,
        name: str,
        build: Callable[[], Backend],
        *,
        imports: Sequence[str] = (),
        prepare: Callable[[], object] | None = None,
        check: Callable[[Pipeline, Mapping[str, Any] | None], None] | None = None,
    ) -> None:
        self.name = name
        self._build = build
        self._imports = tuple(imports)
        self._prepare = prepare
        self._check = check
        self._loading: asyncio.Task[Backend] | None = None

    def load(self) -> asyncio.Future[Backend]:
        """Starts building the backend, once; the task ends with it (or the build's error)."""
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load(), name="backend")
            self._loading.add_done_callback(_log_failure)
        return self._loading

    async def _load(self) -> Backend:
        for module in self._imports:
            await asyncio.to_thread(importlib.import_module, module)
        if self._prepare is not None:
            await asyncio.to_thread(self._prepare)
        backend = self._build()
        backend.start(self.sink)
        return backend

    async def _backend(self) -> Backend:
        return await asyncio.shield(self.load())

    def active_runs(self) -> int:
        loading = self._loading
        if loading is None or not loading.done() or loading.exception() is not None:
            return 0
        return loading.result().active_runs()

    def check_runnable(
        self, pipeline: Pipeline, parameters: Mapping[str, Any] | None = None
    ) -> None:
        # Synchronous, so it cannot wait for the backend: `check` stands in until it is built.
        loading = self._loading
        if loading is not None and loading.done() and loading.exception() is None:
            loading.result().check_runnable(pipeline, parameters)
        elif self._check is not None:
            self._check(pipeline, parameters)

    async def resume_cancelling(self, run: Run, pipeline: Pipeline | None) -> None:
        await (await self._backend()).resume_cancelling(run, pipeline)

    async def submit(self, run: Run, pipeline: Pipeline) -> None:
        await (await self._backend()).submit(run, pipeline)

    async def cancel(self, run_id: str) -> None:
        await (await self._backend()).cancel(run_id)

    async def abandon(self, run_id: str) -> None:
        await (await self._backend()).abandon(run_id)

    async def delete_run(self, run: Run) -> None:
        await (await self._backend()).delete_run(run)

    async def read_logs(
        self, run: Run, step: str, attempt: int, still_writing: Callable[[], bool]
    ) -> AsyncIterator[LogLine]:
        backend = await self._backend()
        async for line in backend.read_logs(run, step, attempt, still_writing):
            yield line

    async def shutdown(self) -> None:
        if self._loading is None:
            return
        try:
            backend = await self._loading
        except Exception:  # already logged; nothing was built to shut down
            return
        await backend.shutdown()


def _log_failure(loading: asyncio.Future[Backend]) -> None:
    if not loading.cancelled() and loading.exception() is not None:
        logger.error("cannot build the backend", exc_info=loading.exception())
