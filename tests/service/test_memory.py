from __future__ import annotations

import asyncio
import platform

import pytest

from skit_pipelines import memory as memory_module
from skit_pipelines.memory import MemoryReclaimer

QUIET = 0.05


def reclaimer(burst: int, events: list[str]) -> MemoryReclaimer:
    return MemoryReclaimer(
        burst=burst,
        quiet_seconds=QUIET,
        collect=lambda: events.append("collect"),
        trim=lambda: events.append("trim"),
    )


async def test_a_burst_of_closes_is_reclaimed_once_closing_stops() -> None:
    events: list[str] = []
    memory = reclaimer(3, events)
    for _ in range(3):
        memory.stream_closed()
    assert events == []
    await asyncio.sleep(QUIET * 3)
    assert events == ["collect", "trim"] and memory.reclaims == 1


async def test_a_burst_of_opens_is_collected_once_quiet_without_a_trim() -> None:
    """The full collection a burst of new streams makes due runs in the quiet after it,
    not on their first delivery; nothing was freed, so nothing is trimmed."""
    events: list[str] = []
    memory = reclaimer(3, events)
    for _ in range(3):
        memory.stream_opened()
    await asyncio.sleep(QUIET * 3)
    assert events == ["collect"] and memory.reclaims == 1
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
