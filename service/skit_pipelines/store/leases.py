"""Run leases: which replica looks after a run that executes elsewhere (e.g. on Kubeflow).

The store owns them: every RunStore hands out `RunLeases` (`RunStore.leases`), kept where
its runs are, so that all the processes sharing the store agree on them.

A lease is held by one owner until it expires; the owner renews it while the run is
active, releases it when the run ends, and hands it over (expires it early) on shutdown.
A replica that dies simply stops renewing, and another one claims the expired lease.
So each active run has exactly one poller across all replicas, whatever the number of
watchers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import MutableMapping, Sequence


class RunLeases(ABC):
    """Leases on runs, shared by every replica of the service."""

    owner: str
    """This process's identity."""

    @abstractmethod
    async def acquire(self, run_id: str) -> bool:
        """Takes the lease if it is free, expired or already ours (then renews it)."""

    @abstractmethod
    async def renew(self, run_ids: Sequence[str]) -> set[str]:
        """Extends our leases on `run_ids`; returns the ones we still hold."""

    @abstractmethod
    async def release(self, run_id: str) -> None:
        """Drops our lease for good: the run has ended."""

    @abstractmethod
    async def hand_over(self, run_ids: Sequence[str]) -> None:
        """Expires our leases now, so another replica claims them without waiting."""

    @abstractmethod
    async def claim_expired(self, limit: int) -> list[str]:
        """Takes over up to `limit` leases whose owner stopped renewing them."""


LeaseTable = MutableMapping[str, tuple[str, float]]
"""Run id -> (owner, time.monotonic() at which the lease expires)."""


class LocalRunLeases(RunLeases):
    """Leases in this process's memory, for a single replica (the SQLite store).

    Args:
        table: Shared by every owner's LocalRunLeases of one store; a new one by default.
    """

    def __init__(self, owner: str, ttl_seconds: float, table: LeaseTable | None = None) -> None:
        self.owner = owner
        self._ttl = ttl_seconds
        self._leases: LeaseTable = {} if table is None else table

    async def acquire(self, run_id: str) -> bool:
        held = self._leases.get(run_id)
        if held is not None and held[0] != self.owner and held[1] > time.monotonic():
            return False
        self._leases[run_id] = (self.owner, time.monotonic() + self._ttl)
        return True

    async def renew(self, run_ids: Sequence[str]) -> set[str]:
        kept = {r for r in run_ids if self._leases.get(r, ("", 0.0))[0] == self.owner}
        for run_id in kept:
            self._leases[run_id] = (self.owner, time.monotonic() + self._ttl)
        return kept

    async def release(self, run_id: str) -> None:
        if self._leases.get(run_id, ("", 0.0))[0] == self.owner:
            del self._leases[run_id]

    async def hand_over(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            if self._leases.get(run_id, ("", 0.0))[0] == self.owner:
                self._leases[run_id] = (self.owner, 0.0)

    async def claim_expired(self, limit: int) -> list[str]:
        now = time.monotonic()
        expired = sorted(r for r, (_, until) in self._leases.items() if until <= now)[:limit]
        for run_id in expired:
            self._leases[run_id] = (self.owner, now + self._ttl)
        return expired
