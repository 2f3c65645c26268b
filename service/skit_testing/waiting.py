"""Waiting for a condition in tests, instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_INTERVAL_SECONDS = 0.02
"""How often a condition is checked again; short, as checks are cheap reads."""


async def until(
    check: Callable[[], object | Awaitable[object]],
    timeout: float = 10.0,
    *,
    what: str = "condition",
) -> object:
    """Returns the first truthy result of `check` (sync or async); fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
