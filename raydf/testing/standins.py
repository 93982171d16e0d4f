"""Stand-in nodes and seed for ``benchmarks/control_plane.py``: the real scheduler
drives them, and they move no bytes.

:class:`StandinPeers` (a Ray actor) answers the :class:`~raydf.cluster.peer.PeerActor`
calls of many simulated nodes at once, the node's id first; a
:class:`StandinNode` is what the scheduler holds for one of them (a
:class:`~raydf.cluster.handles.PeerHandle` look-alike). :class:`StandinSeed`
answers a job's seed calls with a CRC and byte counts, and leaves its call
counts in a ledger file (the scheduler kills its seed when the job ends).
They live here, not in the benchmark script, so that Ray pickles them by
reference (a class of a script goes by value, about 150 us a handle).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from raydf.cluster.protocol import (
    Fetched,
    Holdings,
    PeerJoin,
    PullBatch,
    PullOutcome,
    Received,
    SeedStats,
)
from raydf.cluster.spec import TaskSpec

__all__ = ["StandinNode", "StandinPeers", "StandinSeed", "crc_of"]


def crc_of(task_id: str, index: int) -> int:
    """The CRC-32 the stand-ins claim for a piece."""
    return zlib.crc32(f"{task_id}/{index}".encode())


class StandinPeers:
    """Answers the peer calls of many simulated nodes (the node comes first)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.deliveries = 0
        self._sizes: dict[str, tuple[int, int, int]] = {}  # task -> size, piece length, pieces
        self._got: dict[tuple[str, str, str], int] = {}  # (job, node, task) -> pieces received

    async def prepare(self, node: str, join: PeerJoin) -> Holdings:
        self.calls["prepare"] += 1
        for t in join.tasks:
            self._sizes[t.task_id] = (t.size, t.piece_length, t.num_pieces)
        return Holdings({t.task_id: () for t in join.tasks})  # nothing cached

    async def offer(self, node: str, join: PeerJoin) -> Holdings:
        self.calls["offer"] += 1
        return Holdings()

    async def pull_batch(self, node: str, batch: PullBatch) -> list[PullOutcome]:
        self.calls["pull_batch"] += 1
        out: list[PullOutcome] = []
        for pull in batch.pulls:
            self.deliveries += 1
            size, length, count = self._sizes[pull.task_id]
            key = (batch.job_id, node, pull.task_id)
            got = self._got[key] = self._got.get(key, 0) + 1
            crc = pull.crc if pull.crc is not None else crc_of(pull.task_id, pull.index)
            out.append(Received(min(length, size - pull.index * length), 0.0, crc, got == count))
        return out

    async def finish_job(self, node: str, job_id: str, discard: list[str] | None = None) -> None:
        self.calls["finish_job"] += 1

    async def cache_only(self, node: str, job_id: str) -> None:
        self.calls["cache_only"] += 1

    async def retake(self, node: str, job_id: str, task_id: str, fixed: dict[int, int]) -> None:
        self.calls["retake"] += 1

    def counts(self) -> tuple[int, dict[str, int]]:
        return self.deliveries, dict(self.calls)


class StandinNode:
    """What the scheduler holds for one simulated node: its calls go to the
    node's :class:`StandinPeers` actor, with the node's id first."""

    def __init__(self, group: Any, node: str) -> None:
        self.group, self.node = group, node

    def prepare(self, join: PeerJoin) -> Any:
        return self.group.prepare.remote(self.node, join)

    def offer(self, join: PeerJoin) -> Any:
        return self.group.offer.remote(self.node, join)

    def pull_batch(self, batch: PullBatch) -> Any:
        return self.group.pull_batch.remote(self.node, batch)

    def finish_job(self, job_id: str, discard: list[str] | None = None) -> Any:
        return self.group.finish_job.remote(self.node, job_id, discard)

    def cache_only(self, job_id: str) -> Any:
        return self.group.cache_only.remote(self.node, job_id)

    def retake(self, job_id: str, task_id: str, fixed: dict[int, int]) -> Any:
        return self.group.retake.remote(self.node, job_id, task_id, fixed)


class StandinSeed:
    """Answers the seed calls of one job at once: a CRC and byte counts."""

    def __init__(self, tasks: list[TaskSpec], ledger: str) -> None:
        self._tasks = {t.task_id: t for t in tasks}
        self._ledger = ledger
        self.calls: Counter[str] = Counter()
        self.origin_bytes = 0

    async def fetch(self, task_id: str, index: int) -> Fetched:
        self.calls["fetch"] += 1
        nbytes = self._tasks[task_id].piece(index).length
        self.origin_bytes += nbytes
        requests = self.calls["fetch"]  # one ranged GET per piece
        return Fetched(crc_of(task_id, index), nbytes, requests, {"content": requests})

    async def lend(self, task_id: str, index: int) -> Any:
        self.calls["lend"] += 1
        raise NotImplementedError("stand-in peers take no bytes")

    async def release(self, pieces: list[tuple[str, int]]) -> None:
        self.calls["release"] += 1

    async def counts(self) -> SeedStats:
        """The scheduler's last call to its seed: the ledger gets the call counts."""
        self.calls["counts"] += 1
        Path(self._ledger).write_text(json.dumps(dict(self.calls)))
        fetches = self.calls["fetch"]
        return SeedStats(False, self.origin_bytes, fetches, {"content": fetches}, 0)
