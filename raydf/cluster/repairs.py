"""What a node's peer does when the trust rules find a bad copy (see
:mod:`raydf.cluster.trust`): assemble a file anew around pieces the origin
re-sent, hash its verified copy again, or begin a file afresh.

A mixin of :class:`~raydf.cluster.peer.PeerActor`, kept apart from moving
pieces: it works on the peer's assemblies under the peer's lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from raydf.cache import InOrderDigests, NodeCache
from raydf.cache_roots import NodeCaches
from raydf.cluster.assembly import Assembly, read_piece
from raydf.cluster.lending import PinnedPieces
from raydf.cluster.metrics import log_event
from raydf.cluster.spec import TaskSpec

__all__ = ["CopyRepairs"]


class CopyRepairs:
    """``retake``, ``check_copy`` and ``renew`` on this node (see PeerActor)."""

    node_id: str
    cache: NodeCaches
    _lock: threading.Lock
    _tasks: dict[str, Assembly]
    _pinned: PinnedPieces
    _jobs: dict[str, tuple[Path | None, list[str]]]

    if TYPE_CHECKING:  # the peer's own
        def _retire(self, asm: Assembly) -> None: ...
        def _open(self, task: TaskSpec, home: NodeCache | None = None, *,
                  receive: bool = True) -> Assembly | None: ...

    def retake(self, job_id: str, task_id: str, fixed: dict[int, int]) -> None:
        """The origin's first bytes of pieces ``fixed`` were bad, and the seed read
        the file again (see SeedActor.fetch): assemble it anew in a fresh partial,
        with the pieces this node had but those, so that a pull still writing the
        bad bytes writes them into the old partial, which is dropped."""
        with self._lock:
            old = self._tasks.get(task_id)
            if old is None or old.complete or old.retired:
                return
            old.busy += 1
            # In the same cache as the old one: the file system of its destinations.
            fresh = Assembly(old.spec, self.cache.owner(old.path).partial_path(old.spec.file), -1,
                             InOrderDigests(old.spec.file, old.spec.num_pieces),
                              jobs=set(old.jobs), reported=set(old.reported), fixed=dict(fixed))
            self._tasks[task_id] = fresh
            self._pinned.drop_task(task_id)
            keep = sorted(old.have - set(fixed))
        try:
            digests = fresh.digests
            assert digests is not None
            for index in keep:
                data = read_piece(old, index)
                os.pwrite(fresh.writable_fd(self.cache), data, old.spec.piece(index).start)
                digests.add(index, data, lambda i: read_piece(fresh, i))
                with self._lock:
                    fresh.have.add(index)
        finally:
            with self._lock:
                old.busy -= 1
                self._retire(old)
        log_event("file_retaken", node=self.node_id[:8], job=job_id, file=old.spec.paths[0],
                  pieces=len(fixed))

    def check_copy(self, job_id: str, task: TaskSpec) -> str:
        """A receiver's copy of ``task`` failed its digest, and every piece of it came
        from peers' verified copies: hash this node's verified copy again. Returns
        ``"good"``, ``"none"`` (no verified copy here), or ``"bad"``: it failed too
        (corrupted below the file system, where no stamp sees it), so it is dropped
        and this job's placements of it taken back."""
        with self._lock:
            asm = self._tasks.get(task.task_id)
            if asm is None or not asm.complete:
                return "none"
            asm.busy += 1
        try:
            inode = os.fstat(asm.fd).st_ino
            if self.cache.recheck(asm.path, task.file):
                return "good"
        finally:
            with self._lock:
                asm.busy -= 1
        log_event("copy_corrupt", node=self.node_id[:8], file=task.paths[0])
        with self._lock:
            self._pinned.drop_task(task.task_id)
            self._retire(asm)
            dest_dir = self._jobs.get(job_id, (None, []))[0]
        for target in [dest_dir / rel for rel in task.paths] if dest_dir is not None else []:
            with contextlib.suppress(FileNotFoundError):
                if target.stat().st_ino == inode:
                    target.unlink()  # never a corrupt file at a final path
        return "bad"

    def renew(self, task: TaskSpec) -> None:
        """Begin ``task`` anew in a fresh partial for every job of this node that
        wants it: what it was assembling may hold a bad copy's bytes. A verified
        copy stays."""
        with self._lock:
            old = self._tasks.get(task.task_id)
            if old is not None and old.complete:
                return
            if old is not None:
                self._pinned.drop_task(task.task_id)
                self._retire(old)
            jobs = {j for j, (_, tasks) in self._jobs.items() if task.task_id in tasks}
            dests = [d for j in sorted(jobs) if (d := self._jobs[j][0]) is not None]
            home = self.cache.for_path(dests[0]) if dests else None  # known: the job made it
            fresh = self._open(task, home, receive=bool(dests))
            if fresh is not None:
                fresh.jobs = jobs
