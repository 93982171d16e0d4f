"""The pieces a peer keeps in memory to serve, within its node's budget (LRU).

A pinned piece is kept as what :meth:`~raydf.cluster.peer.PeerActor.lend`
hands out: the ref of the peer's own object-store copy, or, for a piece of at
most :data:`~raydf.cluster.protocol.INLINE_PIECE_BYTES`, its bytes, which travel
inside the lend reply (no object, so no owner that must outlive the reader).
A piece let go is read from disk again when someone asks for it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from raydf.cluster.protocol import INLINE_PIECE_BYTES, Lent, LentBytes

__all__ = ["PinnedPieces", "lent", "payload_of"]

PieceId = tuple[str, int]


def payload_of(array: np.ndarray, put: Any) -> Any:
    """What to keep of a piece to lend it: its bytes when small, else ``put(array)``
    (a ref owned by this process)."""
    return array if len(array) <= INLINE_PIECE_BYTES else put(array)


def lent(payload: Any, crc: int) -> Lent | LentBytes:
    """The lend reply for a kept piece (see :func:`payload_of`)."""
    return LentBytes(payload, crc) if isinstance(payload, np.ndarray) else Lent(payload, crc)


class PinnedPieces:
    """Pieces kept to serve, oldest-used dropped first past ``budget`` bytes (one
    piece always stays). Not thread-safe: the peer's lock guards it."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self._pieces: OrderedDict[PieceId, tuple[Any, int, int]] = OrderedDict()
        self._by_task: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._pieces)

    def get(self, key: PieceId) -> tuple[Any, int, int] | None:
        """``(payload, crc, bytes)`` of a pinned piece (now the most recently used)."""
        pinned = self._pieces.get(key)
        if pinned is not None:
            self._pieces.move_to_end(key)
        return pinned

    def add(self, key: PieceId, payload: Any, crc: int, nbytes: int) -> None:
        self._pop(key)
        self._pieces[key] = (payload, crc, nbytes)
        self._by_task.setdefault(key[0], set()).add(key[1])
        self.bytes += nbytes
        while self.bytes > self.budget and len(self._pieces) > 1:
            self._pop(next(iter(self._pieces)))

    def drop_task(self, task_id: str) -> None:
        """Let go of every pinned piece of ``task_id``."""
        for index in list(self._by_task.get(task_id, ())):
            self._pop((task_id, index))

    def _pop(self, key: PieceId) -> None:
        old = self._pieces.pop(key, None)
        if old is None:
            return
        self.bytes -= old[2]
        indices = self._by_task[key[0]]
        indices.discard(key[1])
        if not indices:
            del self._by_task[key[0]]
