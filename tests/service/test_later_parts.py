"""What the server builds after SERVING (server.LaterPart): the schedules' controller and
scheduler, the subscriptions' controller and delivery worker. They are built at their
first call or right after SERVING, whichever comes first, and their loops start then."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from skit_pipelines.backends.deferred import DeferredBackend
from skit_pipelines.config import ServerConfig
from skit_pipelines.server import Application, build_application

SMALL_PROJECT = Path(__file__).resolve().parents[1] / "scaleout" / "project"
"""One quick pipeline (ticker), so the in-process server starts fast."""
WAIT_SECONDS = 10.0


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not condition():
            await asyncio.sleep(0.01)


async def _application(home: Path) -> Application:
    return await build_application(
        ServerConfig(home=home, port=0, demo_data=False, project_root=SMALL_PROJECT)
    )


async def test_schedules_and_notifications_are_built_and_run_after_serving(
    tmp_path: Path,
) -> None:
    app = await _application(tmp_path)
    assert app.scheduling is not None and app.notifications is not None
    assert app.scheduling.built is None and app.notifications.built is None
    await app.start()
    try:
        scheduling, notifications = app.scheduling, app.notifications
        await _until(lambda: scheduling.built is not None and notifications.built is not None)
        _, scheduler = scheduling()
        _, worker = notifications()
        await _until(lambda: scheduler.passes > 0 and worker.passes > 0)
    finally:
        await app.stop(grace=0)


async def test_later_parts_end_once_the_backend_too_is_built(tmp_path: Path) -> None:
    """`serve` freezes what they loaded out of the collector's sight when they end."""
    app = await _application(tmp_path)
    await app.start()
    try:
        later = app.later_parts
        assert later is not None
        await asyncio.wait_for(asyncio.shield(later), WAIT_SECONDS)
        assert isinstance(app.backend, DeferredBackend)
        assert app.backend.load().done() and app.backend.load().exception() is None
    finally:
        await app.stop(grace=0)


async def test_the_memory_reclaimer_looks_up_malloc_trim_after_serving(tmp_path: Path) -> None:
    """Not at the first reclaim: what the lookup allocates would pin the burst's arenas."""
    app = await _application(tmp_path)
    assert app.reclaimer is not None and not app.reclaimer.prepared
    await app.start()
    try:
        later = app.later_parts
        assert later is not None
        await asyncio.wait_for(asyncio.shield(later), WAIT_SECONDS)
        assert app.reclaimer.prepared
    finally:
        await app.stop(grace=0)


async def test_parts_a_call_built_before_serving_are_the_ones_that_run(tmp_path: Path) -> None:
    app = await _application(tmp_path)
    assert app.scheduling is not None and app.notifications is not None
    # As a Schedule or Subscription RPC does when it comes before the parts are built.
    scheduling, notifications = app.scheduling(), app.notifications()
    await app.start()
    try:
        await _until(lambda: scheduling[1].passes > 0 and notifications[1].passes > 0)
        assert app.scheduling() == scheduling
        assert app.notifications() == notifications
    finally:
        await app.stop(grace=0)


async def test_a_stop_right_after_the_start_leaves_no_loop_running(tmp_path: Path) -> None:
    app = await _application(tmp_path)
    await app.start()
    await app.stop(grace=0)
    running = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
    assert not running & {"later-parts", "scheduler", "delivery-worker"}
