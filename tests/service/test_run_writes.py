"""RunWrites: a stored change reaches the run's watchers before its reporter goes on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from skit_pipelines.domain import Run, RunState
from skit_pipelines.run_writes import Change, RunWrites
from skit_pipelines.store.sqlite import SqliteRunStore
from skit_testing.waiting import until


def _run() -> Run:
    now = datetime.now(UTC)
    return Run(
        id="r1",
        pipeline="p",
        pipeline_version="v",
        parameters={},
        labels={},
        state=RunState.RUNNING,
        create_time=now,
        update_time=now,
        revision=1,
    )


@dataclass
class _Watched:
    writes: RunWrites
    seen: list[int]
    """The revisions the run's one watcher has been sent, in order."""


@contextlib.asynccontextmanager
async def _watched_run(tmp_path: Path) -> AsyncIterator[_Watched]:
    """A stored run with one watcher that has its first snapshot, and RunWrites over it."""
    store = SqliteRunStore(tmp_path / "runs.db")
    await store.create_run(_run())
    seen: list[int] = []

    async def watch() -> None:
        async for run in store.watch("r1"):
            seen.append(run.revision)

    watcher = asyncio.create_task(watch())
    try:
        await until(lambda: seen == [1], what="the first snapshot")
        yield _Watched(RunWrites(store), seen)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await store.close()


async def test_watchers_are_sent_a_stored_revision_before_the_reporter_goes_on(
    tmp_path: Path,
) -> None:
    async with _watched_run(tmp_path) as watched:
        # The executor reports, then goes straight on to its next (blocking) work: by
        # then the watcher must have had its turn with the new revision.
        await watched.writes.write(
            "r1", Change(lambda r: replace(r, labels={"a": "1"}), lambda _: None)
        )
        assert watched.seen == [1, 2]
        await watched.writes.write(
            "r1", Change(lambda r: replace(r, labels={"a": "2"}), lambda _: None)
        )
        assert watched.seen == [1, 2, 3]


async def test_a_change_is_logged_and_observed_after_its_watchers_are_sent_it(
    tmp_path: Path,
) -> None:
    seen_when_stored: list[list[int]] = []
    async with _watched_run(tmp_path) as watched:
        await watched.writes.write(
            "r1",
            Change(
                lambda r: replace(r, labels={"a": "1"}),
                lambda _: seen_when_stored.append(list(watched.seen)),
            ),
        )
        # The log line and the observer (a file write, spans) are not on the watchers' path.
        assert seen_when_stored == [[1, 2]]
