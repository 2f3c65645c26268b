"""WatchRuns for clients: the messages as values, and what resuming a stream keeps."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skit.pipelines.v1 import pipeline_service_pb2
from skit_pipelines_client.resources import Run

if TYPE_CHECKING:
    from skit_pipelines_client.client import ResumePolicy, RPCError

logger = logging.getLogger(__name__)

_Kind = pipeline_service_pb2.WatchRunsResponse


class ChangeKind(enum.IntEnum):
    """What a WatchRuns message is (WatchRunsResponse.Kind, see the proto comments)."""

    CHANGE = _Kind.KIND_CHANGE
    """A run was created or changed."""
    DELETED = _Kind.KIND_DELETED
    """A run was deleted; `run` is its last snapshot."""
    SNAPSHOT = _Kind.KIND_SNAPSHOT
    """One run of the initial snapshot (no cursor)."""
    SNAPSHOT_COMPLETE = _Kind.KIND_SNAPSHOT_COMPLETE
    """The initial snapshot is complete; changes follow."""
    RELIST = _Kind.KIND_RELIST
    """The cursor was too old to replay: changes were lost, list the runs again."""
    HEARTBEAT = _Kind.KIND_HEARTBEAT
    """Nothing matching happened for a while; the cursor still advanced."""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class RunChange:
    """One WatchRuns message."""

    kind: ChangeKind
    cursor: str
    """Pass as after_cursor to resume right after this message (empty on SNAPSHOT)."""
    run: Run | None = None
    """The run's snapshot (CHANGE, DELETED, SNAPSHOT)."""


class FeedResumption:
    """A resuming WatchRuns: the request to (re)connect with, advanced by each message
    received, and the failures in a row."""

    def __init__(
        self, request: pipeline_service_pb2.WatchRunsRequest, policy: ResumePolicy
    ) -> None:
        self.request = request
        self._policy = policy
        self._failures = 0

    def received(self, message: pipeline_service_pb2.WatchRunsResponse) -> None:
        """Moves the resume point past `message`. A stream dropped during its initial
        snapshot (no cursor yet) starts the snapshot again."""
        self._failures = 0
        if message.cursor:
            self.request.after_cursor = message.cursor
            self.request.initial_snapshot = False

    def pause_after(self, error: RPCError) -> float:
        """Seconds to wait before reconnecting; re-raises `error` when it is not worth it."""
        if not error.retryable or self._failures >= self._policy.attempts:
            raise error
        delay = self._policy.delay(self._failures)
        self._failures += 1
        logger.info(
            "lost the WatchRuns stream (%s); resuming after cursor %r in %.1fs",
            error.code.name,
            self.request.after_cursor,
            delay,
        )
        return delay
