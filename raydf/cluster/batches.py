"""How a node's peer takes one :class:`~raydf.cluster.protocol.PullBatch`: every
pull at once on the peer's pull threads, small pieces of one holder in one
``lend_many`` call, one outcome per pull, in order.

A mixin of :class:`~raydf.cluster.peer.PeerActor`: the peer's own ``pull``
moves each piece.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import ray

from raydf.cluster.assembly import Assembly
from raydf.cluster.job import describe
from raydf.cluster.lending import LEND_TIMEOUT, SharedLend
from raydf.cluster.protocol import (
    INLINE_PIECE_BYTES,
    FileUnplaced,
    Lent,
    LentBytes,
    Pull,
    PullBatch,
    PullFailed,
    PullOutcome,
)
from raydf.cluster.trust import fault_of
from raydf.errors import StorageError

__all__ = ["PullBatches"]


class PullBatches:
    """``pull_batch`` on this node (see PeerActor)."""

    _lock: threading.Lock
    _tasks: dict[str, Assembly]
    _pullers: ThreadPoolExecutor
    _lenders: dict[tuple[str, str], Any]  # (job, holder id) -> its handle

    if TYPE_CHECKING:  # the peer's own
        def pull(self, job_id: str, task_id: str, index: int, crc: int | None,
                 lend: Callable[[], Lent | LentBytes]) -> PullOutcome: ...

    def pull_batch(self, batch: PullBatch) -> list[PullOutcome]:
        """Take every piece of ``batch`` (at once, each from its source); one
        outcome per pull, in order. Only a dead receiver fails the whole call.
        Small pieces from one holder are asked for in one ``lend_many`` call and
        taken one after the other by one thread (fewer threads wait on the GIL)."""
        small: dict[str, list[int]] = {}  # holder -> positions of its small pieces
        with self._lock:
            for holder, handle in batch.lenders.items():
                self._lenders[(batch.job_id, holder)] = handle
            for i, p in enumerate(batch.pulls):
                asm = self._tasks.get(p.task_id)
                if asm is not None and asm.spec.piece(p.index).length <= INLINE_PIECE_BYTES:
                    small.setdefault(p.source, []).append(i)
        groups = [g for g in small.values() if len(g) > 1]
        grouped = {i for g in groups for i in g}
        futures = [(g, self._pullers.submit(self._pull_group, batch.job_id,
                                            [batch.pulls[i] for i in g])) for g in groups]
        futures += [([i], self._pullers.submit(self._pull_group, batch.job_id, [p]))
                    for i, p in enumerate(batch.pulls) if i not in grouped]
        outcomes: dict[int, PullOutcome] = {}
        for positions, future in futures:
            outcomes.update(zip(positions, future.result(), strict=True))
        return [outcomes[i] for i in range(len(batch.pulls))]

    def _pull_group(self, job_id: str, pulls: list[Pull]) -> list[PullOutcome]:
        """Take ``pulls`` in turn: one alone, or small pieces of one holder that
        answers them all in one ``lend_many`` call."""
        if len(pulls) == 1:
            return [self._pull_one(job_id, pulls[0], None)]
        try:
            with self._lock:
                lender = self._lenders[(job_id, pulls[0].source)]
            call = SharedLend(lender, [(p.task_id, p.index) for p in pulls])
        except Exception as exc:  # as each pull's own lend would have failed
            return [PullFailed(fault_of(exc), describe(exc)) for _ in pulls]
        return [self._pull_one(job_id, p, (call, k)) for k, p in enumerate(pulls)]

    def _pull_one(self, job_id: str, pull: Pull, shared: tuple[SharedLend, int] | None
                  ) -> PullOutcome:
        try:
            if shared is not None:
                call, position = shared
                return self.pull(job_id, pull.task_id, pull.index, pull.crc,
                                 lambda: call.reply(position))
            with self._lock:
                source = self._lenders[(job_id, pull.source)]
            return self.pull(job_id, pull.task_id, pull.index, pull.crc, lambda: ray.get(
                source.lend(pull.task_id, pull.index), timeout=LEND_TIMEOUT))
        except StorageError as err:  # the partial could not be made (a full disk): exit 5
            return FileUnplaced(str(err))
        except Exception as exc:  # the transfer failed; whose fault it is goes to blame
            return PullFailed(fault_of(exc), describe(exc))
