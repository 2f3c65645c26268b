from __future__ import annotations

import asyncio
import contextlib
import gc
import platform
import sys
import weakref
from collections.abc import AsyncIterator

import pytest

from skit_pipelines import memory as memory_module
from skit_pipelines.memory import MemoryReclaimer

QUIET = 0.05
BURST = 5_000
"""Tasks and async generators the registries grow to hold."""


@pytest.fixture(autouse=True)
def shrinking_is_recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    shrunk: list[str] = []
    monkeypatch.setattr(
        memory_module, "shrink_asyncio_registries", lambda loop: shrunk.append("shrink")
    )
    return shrunk


def reclaimer(burst: int, events: list[str]) -> MemoryReclaimer:
    return MemoryReclaimer(
        burst=burst,
        quiet_seconds=QUIET,
        collect=lambda: events.append("collect"),
        trim=lambda: events.append("trim"),
    )


async def test_a_burst_of_closes_is_reclaimed_once_closing_stops(
    shrinking_is_recorded: list[str],
) -> None:
    events: list[str] = []
    memory = reclaimer(3, events)
    for _ in range(3):
        memory.stream_closed()
    assert events == []
    await asyncio.sleep(QUIET * 3)
    assert events == ["collect", "trim"] and memory.reclaims == 1
    assert shrinking_is_recorded == ["shrink"]


async def test_a_burst_of_opens_is_collected_once_quiet_without_a_trim(
    shrinking_is_recorded: list[str],
) -> None:
    """The full collection a burst of new streams makes due runs in the quiet after it,
    not on their first delivery; nothing was freed, so nothing is trimmed."""
    events: list[str] = []
    memory = reclaimer(3, events)
    for _ in range(3):
        memory.stream_opened()
    await asyncio.sleep(QUIET * 3)
    assert events == ["collect"] and memory.reclaims == 1
    assert shrinking_is_recorded == []
    memory.stream_opened()
    memory.stream_closed()
    await asyncio.sleep(QUIET * 3)
    assert memory.reclaims == 1  # a handful is no burst


async def test_closes_below_the_burst_reclaim_nothing() -> None:
    events: list[str] = []
    memory = reclaimer(3, events)
    memory.stream_closed()
    memory.stream_closed()
    await asyncio.sleep(QUIET * 3)
    assert events == [] and memory.reclaims == 0


async def test_reclaiming_waits_while_streams_keep_closing() -> None:
    events: list[str] = []
    memory = reclaimer(1, events)
    for _ in range(6):
        memory.stream_closed()
        await asyncio.sleep(QUIET / 2)
    assert events == []
    await asyncio.sleep(QUIET * 3)
    # One reclaim for the whole burst, and the count starts again after it.
    assert memory.reclaims == 1
    memory.stream_closed()
    await asyncio.sleep(QUIET * 3)
    assert memory.reclaims == 2


def test_glibc_malloc_trim_is_found_among_the_loaded_symbols() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    trim = memory_module._glibc_trim()
    assert trim is not None
    trim()


def test_prepare_looks_up_the_trim_function_before_any_reclaim() -> None:
    memory = MemoryReclaimer()
    assert not memory.prepared
    memory.prepare()
    assert memory.prepared


async def _yields_then_waits() -> AsyncIterator[int]:
    yield 1
    await asyncio.Event().wait()


async def test_asyncios_registries_shrink_to_what_is_live_and_keep_tracking_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()  # the real function, not the fixture's recorder
    loop = asyncio.get_running_loop()
    tasks, generators = asyncio.tasks._all_tasks, loop._asyncgens  # type: ignore[attr-defined]
    burst = [asyncio.create_task(asyncio.sleep(0)) for _ in range(BURST)]
    for task in burst:
        await task
    started = [_yields_then_waits() for _ in range(BURST)]
    for generator in started:
        await anext(generator)
    for generator in started:
        await generator.aclose()
    del burst, task, started, generator
    gc.collect()
    grown = sys.getsizeof(tasks.data), sys.getsizeof(generators.data)
    live_task = asyncio.create_task(asyncio.Event().wait())
    live_generator = _yields_then_waits()
    await anext(live_generator)

    memory_module.shrink_asyncio_registries(loop)

    shrunk = sys.getsizeof(tasks.data), sys.getsizeof(generators.data)
    assert shrunk[0] * 10 < grown[0] and shrunk[1] * 10 < grown[1]
    assert live_task in asyncio.all_tasks() and live_generator in generators
    # Entries still leave as their objects go.
    task_gone, generator_gone = weakref.ref(live_task), weakref.ref(live_generator)
    tracked_generators = len(generators)
    live_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await live_task
    await live_generator.aclose()
    del live_task, live_generator
    await asyncio.sleep(0)  # the callback that woke this test held the task
    gc.collect()
    assert task_gone() is None and generator_gone() is None
    # The new sets' entries are removed by the same weak references' callbacks.
    assert all(ref() is not None for ref in tasks.data)
    assert len(generators) == tracked_generators - 1
