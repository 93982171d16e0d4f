"""Lending pieces: what a holder keeps to serve, what it replies, how a receiver asks.

A holder (a peer, or a seed) keeps each piece as what ``lend`` hands out: the
ref of its own object-store copy, or, for a piece of at most
:data:`~raydf.cluster.protocol.INLINE_PIECE_BYTES`, its bytes, which travel
inside the lend reply (no object, so no owner that must outlive the reader).
A peer keeps a piece it received as :class:`HeldCopy`, the array its
``ray.get`` returned (a view into this node's copy, readable even once the
sender is gone, because it is held), and puts its own copy only when it first
lends the piece (:meth:`PinnedPieces.own`): a piece nobody asks for is never
copied again, and a held copy is in use, so Ray never spills it.
A peer keeps them within its node's budget (:class:`PinnedPieces`, LRU); a
piece let go is read from disk again when someone asks for it. A receiver
asks for the small pieces one decision round gives it from one holder in one
``lend_many`` call (:class:`SharedLend`), for the others one ``lend`` each.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from raydf.cluster.protocol import INLINE_PIECE_BYTES, Lent, LentBytes, NotLent

__all__ = [
    "LEND_TIMEOUT",
    "HeldCopy",
    "PinnedPieces",
    "SharedLend",
    "array_of",
    "default_budget",
    "lend_each",
    "lent",
    "payload_of",
]

LEND_TIMEOUT = 60.0  # s for a holder to answer a lend: past it, the holder is blamed
DEFAULT_BUDGET_FRACTION = 0.3  # of the node's object store, when no budget is given
Reply = Lent | LentBytes

PieceId = tuple[str, int]


@dataclass(frozen=True)
class HeldCopy:
    """A piece as a peer received it, kept until it is first lent (then put)."""

    array: np.ndarray


def payload_of(array: np.ndarray, put: Any) -> Any:
    """What to keep of a piece to lend it: its bytes when small, else ``put(array)``
    (a ref owned by this process)."""
    return array if len(array) <= INLINE_PIECE_BYTES else put(array)


def array_of(payload: Any) -> Any:
    """A kept piece's bytes, an ``np.uint8`` array (see :func:`payload_of`), fetched
    if it is a ref."""
    return payload if isinstance(payload, np.ndarray) else ray.get(payload)


def lent(payload: Any, crc: int) -> Reply:
    """The lend reply for a kept piece (see :func:`payload_of`)."""
    return LentBytes(payload, crc) if isinstance(payload, np.ndarray) else Lent(payload, crc)


def lend_each(lend: Callable[[str, int], Reply], pieces: Iterable[tuple[str, int]]
              ) -> list[Reply | NotLent]:
    """A holder's ``lend_many``: ``lend`` each piece; one it cannot lend is named, so
    the other pieces of the call still go out."""
    out: list[Reply | NotLent] = []
    for task_id, index in pieces:
        try:
            out.append(lend(task_id, index))
        except Exception as exc:
            out.append(NotLent(f"{type(exc).__name__}: {exc}"))
    return out


class SharedLend:
    """One ``lend_many`` call for several pulls from one holder, asked at once and
    read once; each pull takes its own piece's reply (:meth:`reply`), and a call
    that failed fails each of them the way its own ``lend`` would have."""

    def __init__(self, source: Any, pieces: list[tuple[str, int]]) -> None:
        self._call = source.lend_many(pieces)
        self._lock = threading.Lock()
        self._replies: list[Reply | NotLent] | None = None

    def reply(self, position: int) -> Reply:
        with self._lock:
            if self._replies is None:
                self._replies = ray.get(self._call, timeout=LEND_TIMEOUT)
            answer = self._replies[position]
        if isinstance(answer, NotLent):
            raise LookupError(answer.reason)
        return answer


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

    def peek(self, key: PieceId) -> tuple[Any, int, int] | None:
        """:meth:`get` without making it the most recently used."""
        return self._pieces.get(key)

    def own(self, key: PieceId, put: Callable[[np.ndarray], Any], lock: threading.Lock
            ) -> tuple[Any, int, int] | None:
        """:meth:`get`, with a :class:`HeldCopy` piece's own copy put first (``put``
        runs outside ``lock``, which guards this; two lends at once keep the first
        copy)."""
        with lock:
            pinned = self.get(key)
        if pinned is None or not isinstance(pinned[0], HeldCopy):
            return pinned
        ref = put(pinned[0].array)
        with lock:
            now = self._pieces.get(key)
            if now is not None and isinstance(now[0], HeldCopy):
                self._pieces[key] = now = (ref, now[1], now[2])
        return now if now is not None else (ref, pinned[1], pinned[2])

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


def default_budget(node_id: str) -> int:
    """Bytes a peer on ``node_id`` keeps pinned when the job gives no budget."""
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            store = node.get("Resources", {}).get("object_store_memory", 0)
            if store:
                return int(store * DEFAULT_BUDGET_FRACTION)
    return 2 * 2**30
