"""The scheduler's seeds before they serve a job.

The scheduler makes every seed (so seeds die with it) and keeps one started
in advance: a *standby* with no request and no token, handed to the next
caller, so a job does not wait about a CPU-second for a worker process. A
seed handed to a caller (who gives it the token by a direct call) that is
neither started nor added to a job within ``HANDED_SEED_TIMEOUT`` (its caller
died in between) is killed, its token with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raydf.cluster.handles import SeedHandle
from raydf.policy import Limits

__all__ = ["HANDED_SEED_TIMEOUT", "STANDBY_FETCHES", "SeedPool"]

STANDBY_FETCHES = Limits().origin_fetches  # origin reads at once of the standby seed
HANDED_SEED_TIMEOUT = 120.0


class SeedPool:
    """The standby seed and the seeds handed to callers, not yet in a job."""

    def __init__(self, spawn: Callable[[int], SeedHandle]) -> None:
        self._spawn = spawn  # a new seed for so many origin reads at once
        self._standby: SeedHandle | None = None
        self._handed: set[SeedHandle] = set()
        self.restock()

    def hand_out(self, fetches: int) -> SeedHandle:
        """A seed for a caller's job (``fetches`` origin reads at once): the standby
        if it allows as many, else a new one (call from the scheduler's loop)."""
        if self._standby is None or fetches > STANDBY_FETCHES:
            seed = self._spawn(fetches)
        else:
            seed, self._standby = self._standby, None
        self._handed.add(seed)
        asyncio.get_running_loop().call_later(HANDED_SEED_TIMEOUT, self._reclaim, seed)
        return seed

    def taken(self, seed: SeedHandle) -> None:
        """``seed`` came back with a job (started, or a replacement): it is the job's now."""
        self._handed.discard(seed)

    def _reclaim(self, seed: SeedHandle) -> None:
        if seed in self._handed:
            self._handed.discard(seed)
            seed.kill()

    @property
    def standby(self) -> SeedHandle | None:
        return self._standby

    def restock(self) -> None:
        """Start the next standby if there is none (when a job ends: its start-up
        then does not slow a job)."""
        if self._standby is None:
            self._standby = self._spawn(STANDBY_FETCHES)
