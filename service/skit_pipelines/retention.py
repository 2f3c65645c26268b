"""Retention: finished runs older than `retention_days` are deleted in the background.

Off unless configured (SKIT_RETENTION_DAYS, `serve --retention-days`). A sweep deletes
what DeleteRun would (the run, its events, step logs and artifacts) for every SUCCEEDED,
FAILED or CANCELLED run that ended before the cutoff; runs that reused its steps keep
their own copies. Replicas sharing PostgreSQL sweep one at a time (`RunStore.exclusive`):
the others skip that round.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from skit_pipelines.runs import RunController
from skit_pipelines.store.base import RunStore

logger = logging.getLogger(__name__)

RETENTION_TASK = "retention"
"""The name of the sweep among the store's exclusive tasks."""
DEFAULT_SWEEP_SECONDS = 3600.0
"""How often a replica tries to sweep: retention is counted in days, an hour is precise
enough and costs one ListRuns-like query per page of old runs."""


class RetentionSweeper:
    """Sweeps at start and then every `sweep_seconds` until stopped."""

    def __init__(
        self,
        controller: RunController,
        store: RunStore,
        retention: timedelta,
        *,
        sweep_seconds: float = DEFAULT_SWEEP_SECONDS,
    ) -> None:
        self._controller = controller
        self._store = store
        self._retention = retention
        self._sweep_seconds = sweep_seconds
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> int | None:
        """One sweep: how many runs it deleted, or None when another replica is sweeping."""
        async with self._store.exclusive(RETENTION_TASK) as held:
            if not held:
                return None
            deleted = await self._controller.delete_expired_runs(self._retention)
        if deleted:
            logger.info(
                "retention: deleted %s runs that ended over %s ago", deleted, self._retention
            )
        return deleted

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._sweep_forever(), name="retention"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                # The store may be away; the next round tries again.
                logger.exception("retention sweep failed; retrying in %ss", self._sweep_seconds)
            await asyncio.sleep(self._sweep_seconds)
