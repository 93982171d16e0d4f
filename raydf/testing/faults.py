"""Faults that need a real actor to misbehave, for tests: holders that lie or stall.

:class:`CorruptingPeer` is a real :class:`~raydf.cluster.peer.PeerActor` (it
joins jobs, holds files in its node's cache and is offered to receivers like
any other) except that every piece it lends has one byte flipped after its
CRC-32 was taken: a holder that always sends bad bytes, as a node with bad
memory would. :func:`install_corrupting_peer` puts one in place of a node's
peer, under the name receivers look up. :class:`StalledLender` is a holder
whose lends do not answer until it is opened: pulls from it hold their
receiver's threads, as pulls waiting on each other do with many jobs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np
import ray

from raydf.cluster.peer import SERVE_GROUP, PeerActor
from raydf.cluster.placement import NAMESPACE
from raydf.cluster.protocol import Lent, LentBytes

__all__ = ["CorruptingPeer", "StalledLender", "install_corrupting_peer"]


class CorruptingPeer(PeerActor):
    """A PeerActor whose lends carry the right CRC-32 and the wrong bytes."""

    def __init__(self, node_id: str, memory_budget: int | None = None) -> None:
        super().__init__(node_id, memory_budget)
        self._bad: dict[tuple[str, int], Any] = {}  # keeps the lent refs alive
        self.corrupted_lends = 0

    @ray.method(concurrency_group=SERVE_GROUP)
    def lend(self, task_id: str, index: int) -> Lent | LentBytes:  # type: ignore[override]
        lent: Lent | LentBytes = super().lend(task_id, index)  # type: ignore[operator]
        good = lent.data if isinstance(lent, LentBytes) else ray.get(lent.ref)
        bad = np.array(good, dtype=np.uint8, copy=True)
        if len(bad):
            bad[len(bad) // 2] ^= 0xFF
        self.corrupted_lends += 1
        if isinstance(lent, LentBytes):
            return LentBytes(bad, lent.crc)
        bad_ref = ray.put(bad)
        self._bad[(task_id, index)] = bad_ref
        return Lent(bad_ref, lent.crc)

    def corrupted(self) -> int:
        """How many pieces it lent with a flipped byte."""
        return self.corrupted_lends


def install_corrupting_peer(node_id: str) -> Any:
    """Replace ``node_id``'s peer actor by a :class:`CorruptingPeer` (its cache stays)."""
    from raydf.cluster.service import peer_for
    from raydf.testing.cluster import wait_until

    name = f"raydf-peer-{node_id}"
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))

    def name_free() -> bool:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return True
        return False

    wait_until(f"{name} to be gone", name_free)
    peer = peer_for(node_id, CorruptingPeer)
    ray.get(peer.snapshot.remote())  # started
    return peer


@ray.remote(num_cpus=0)
class StalledLender:
    """A holder that lends at once a piece whose bytes never arrive until
    :meth:`open` (then they are the wrong bytes): a receiver's pull of it waits
    out its whole PULL_TIMEOUT, holding its threads. An async actor: it counts
    and answers however many lends come."""

    def __init__(self) -> None:
        self._opened = asyncio.Event()
        self._pending: Any = None
        self.asked = 0

    async def lend(self, task_id: str, index: int) -> Lent:
        self.asked += 1
        if self._pending is None:
            self._pending = ray.get_runtime_context().current_actor.bytes_when_opened.remote()
        return Lent(self._pending, 0)

    async def bytes_when_opened(self) -> bytes:
        await self._opened.wait()
        return b"not the piece"

    async def waiting(self) -> int:
        """How many lends it was asked for."""
        return self.asked

    async def open(self) -> None:
        self._opened.set()
