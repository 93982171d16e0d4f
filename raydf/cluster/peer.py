"""PeerActor: one per target node; pulls pieces, writes them, serves them on.

For each piece the scheduler assigns, the peer asks the holder to lend its
ref, ``ray.get``s it (Ray moves it into this node's object store), checks its
CRC-32, writes it at its offset into a partial file in the node cache, and
keeps the array it got: held, it stays readable once the seed and every other
holder are gone (see the Ray facts in DESIGN.md). It puts a copy of its own,
which it can lend, when another peer first asks for the piece
(:class:`~raydf.cluster.lending.HeldCopy`). A small piece (at most
``INLINE_PIECE_BYTES``) comes inside the lend reply instead and is kept as
bytes: no object, no owner. Kept pieces stay pinned within a memory budget
(LRU, :mod:`raydf.cluster.lending`); a piece let go is re-read from disk when
someone asks for it. The whole-file digest is computed as pieces land, in order, and
checked when the last one lands (no second read of the file); only then is
the file moved into the cache and placed at every destination.

A task is one file content, so jobs running at once (two repos with a file in
common) share its assembly on a node: a piece one job already brought is not
fetched again for the other, the file is verified and placed once, for every
job that wants it, and each job is told once that it is done.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import ray

from raydf.cache import InOrderDigests, NodeCache, node_path
from raydf.cache_roots import NodeCaches
from raydf.cluster.assembly import Assembly, read_piece, symlink_atomically, write_atomically
from raydf.cluster.batches import PullBatches
from raydf.cluster.cache_commands import CacheCommands
from raydf.cluster.lending import (
    HeldCopy,
    PinnedPieces,
    default_budget,
    lend_each,
    lent,
    payload_of,
)
from raydf.cluster.metrics import log_event, metrics
from raydf.cluster.protocol import (
    FileCorrupt,
    FileUnplaced,
    Holdings,
    Lent,
    LentBytes,
    NotLent,
    PeerJoin,
    PullOutcome,
    Received,
    SourceLost,
    Stale,
)
from raydf.cluster.repairs import CopyRepairs
from raydf.cluster.spec import TaskSpec
from raydf.errors import IntegrityError, SenderFailed, StorageError
from raydf.pieces import piece_crc

__all__ = ["PeerActor"]

# Lending has threads of its own (a concurrency group), so pulls waiting on
# other peers' lends can never take every thread of every peer (a deadlock
# with many jobs at once).
SERVE_GROUP = "serve"
SERVE_THREADS = 16
CALL_THREADS = 32  # every other call at once: joins, pull batches, cache commands
# Incomplete files of jobs that ended (Ctrl-C, a failure) are kept, pieces and
# all, for the next job that wants them; beyond this many the oldest go.
MAX_PARKED = 256
PULL_TIMEOUT = 120.0  # s for a piece (<= 64 MiB) to arrive once lent
PULL_THREADS = 32  # pulls at once, over every batch of every job (4 per job by default)


class PeerActor(PullBatches, CacheCommands, CopyRepairs):
    """Plain class; made remote, pinned to its node, where it is spawned."""

    def __init__(self, node_id: str, memory_budget: int | None = None) -> None:
        self.node_id = node_id
        self.cache = NodeCaches()  # one per file system of its destinations
        self.cache.sweep_orphans()  # left by a peer that died on this node
        self._pinned = PinnedPieces(memory_budget or default_budget(node_id))
        self._lock = threading.Lock()
        self._tasks: dict[str, Assembly] = {}
        # job -> (dest dir, or None where this node only serves; task ids)
        self._jobs: dict[str, tuple[Path | None, list[str]]] = {}
        self._job_epochs: dict[str, str] = {}  # job -> the scheduler incarnation that runs it
        self.received_bytes = 0
        self.served_bytes = 0
        self._pullers = ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="raydf-pull")
        self._lenders: dict[tuple[str, str], Any] = {}  # (job, holder id) -> its handle

    def __repr__(self) -> str:
        done = sum(a.complete for a in self._tasks.values())
        return (f"<Peer {self.node_id[:8]} {done}/{len(self._tasks)} files, "
                f"{len(self._pinned)} pinned ({self._pinned.bytes >> 20} MiB of "
                f"{self._pinned.budget >> 20}) | {len(self._jobs)} jobs>")

    # -- joining a job ---------------------------------------------------

    def prepare(self, join: PeerJoin) -> Holdings:
        """Join a job: place what the cache has, open partials for the rest.

        ``join.dest`` is the destination folder as the caller gave it (this
        node's ``RAYDF_NODE_ROOT`` applies), or ``""`` to fill the cache only.
        ``aux``: small ``(path, text)`` files of the layout (e.g. Hugging Face
        ``refs``). ``epoch``: the scheduler incarnation running the job; jobs of
        an earlier one (a scheduler that died) are dropped here, pieces kept.

        Returns, per task, the piece indices this node already holds.
        """
        job_id, tasks, dest, memory_budget, aux, epoch = (
            join.job_id, join.tasks, join.dest, join.memory_budget, join.aux, join.epoch)
        if memory_budget:
            self._pinned.budget = memory_budget
        if epoch:
            self.forget_jobs_except(epoch)
            self._job_epochs[job_id] = epoch
        dest_dir = node_path(dest) if dest else None  # "" = into the cache only (warm)
        # Files are assembled in the cache on the destination's file system, so
        # placing them is a hard link, never a copy (StorageError if none).
        home = self.cache.for_path(dest_dir)
        if dest_dir is not None:
            for rel, text in aux or ():
                write_atomically(dest_dir / rel, text)
        have: dict[str, tuple[int, ...]] = {}
        whole: list[Assembly] = []  # every piece in, not yet verified (another job's)
        cached: list[Assembly] = []  # verified already: to place
        fresh: list[Assembly] = []  # to receive from scratch
        with self._lock:
            self._jobs[job_id] = (dest_dir, [t.task_id for t in tasks])
            for task in tasks:
                asm = self._tasks.get(task.task_id)
                if asm is not None and not asm.jobs and not asm.path.exists():
                    self._retire(asm)  # its file was deleted (the cache folder removed)
                    asm = None
                if asm is None:
                    asm = self._open(task, home)
                    assert asm is not None
                    if not asm.complete:
                        fresh.append(asm)
                asm.jobs.add(job_id)
                if asm.complete and dest_dir is not None:
                    cached.append(asm)
                elif not asm.complete and len(asm.have) == task.num_pieces:
                    whole.append(asm)
                have[task.task_id] = tuple(sorted(asm.have))
            try:
                home.check_room(sum(a.spec.size for a in fresh))
            except StorageError:
                for asm in fresh:
                    self._retire(asm)
                raise
        for asm in cached:
            self._place_for(asm, job_id, dest_dir)  # type: ignore[arg-type]
        for asm in whole:
            self._complete(asm)  # placed for this job too; IntegrityError fails the node
        unplaced = [a.unplaced[job_id] for a in (*cached, *whole) if job_id in a.unplaced]
        if unplaced:
            more = f" (and {len(unplaced) - 1} more files)" if len(unplaced) > 1 else ""
            raise StorageError(unplaced[0] + more)
        return Holdings(have)

    def offer(self, join: PeerJoin) -> Holdings:
        """Serve a job this node is not a target of, from what it already has.

        Opens no partial file and places nothing; returns, per task, the piece
        indices this node can serve (whole files from its cache).
        """
        job_id, epoch = join.job_id, join.epoch
        have: dict[str, tuple[int, ...]] = {}
        with self._lock:
            for task in join.tasks:
                asm = self._tasks.get(task.task_id) or self._open(task, receive=False)
                if asm is None:
                    continue
                asm.jobs.add(job_id)
                have[task.task_id] = tuple(sorted(asm.have))
            # A node that joined as a receiver meanwhile keeps its destination.
            self._jobs.setdefault(job_id, (None, list(have)))
            if epoch:
                self._job_epochs.setdefault(job_id, epoch)
        return Holdings(have)

    def _open(self, task: TaskSpec, home: NodeCache | None = None, *,
              receive: bool = True) -> Assembly | None:
        """``home``: the cache to assemble it in (the configured one if None)."""
        blob = self.cache.blob(task.file, home)
        if blob is not None:
            fd = os.open(blob, os.O_RDONLY)
            asm = Assembly(task, blob, fd, have=set(range(task.num_pieces)), complete=True)
        elif receive:
            asm = Assembly(task, (home or self.cache.main).partial_path(task.file), -1,
                           InOrderDigests(task.file, task.num_pieces))
        else:
            return None
        self._tasks[task.task_id] = asm
        return asm

    def _place(self, asm: Assembly, dest_dir: Path) -> None:
        for rel in asm.spec.paths:
            target = dest_dir / rel
            if not (target.exists() and os.path.samefile(target, asm.path)):
                self.cache.place(asm.path, target)
        for link, pointee in asm.spec.links:
            symlink_atomically(dest_dir / link, pointee)

    # -- receiving -------------------------------------------------------

    def pull(
        self, job_id: str, task_id: str, index: int, crc: int | None,
        lend: Callable[[], Lent | LentBytes],
    ) -> PullOutcome:
        """Take one piece for ``job_id``; ``lend()`` asks its holder (a peer or seed).

        Returns :class:`Received` (``bytes`` 0 when another job already brought
        the piece; ``file_done`` once per job, when the file is verified and
        placed), :class:`FileCorrupt` when the file failed verification,
        :class:`FileUnplaced` when it could not be put at its path,
        :class:`SourceLost` when the holder is gone, :class:`Stale` when a heal
        replaced the assembly meanwhile. A failed transfer raises.
        """
        started = time.monotonic()
        with self._using(task_id) as asm:
            with self._lock:
                fetched = index in asm.have or asm.complete
                digests = asm.digests
            nbytes = 0
            if not fetched:
                assert digests is not None  # set until the file is complete
                outcome = self._fetch(asm, digests, index, crc, lend)
                if isinstance(outcome, SourceLost):
                    return outcome
                nbytes, crc = outcome
                with self._lock:
                    replaced = self._tasks.get(task_id) is not asm
                if replaced:  # a heal began the file anew meanwhile (see retake)
                    return Stale()
            file_done = False
            with self._lock:
                whole = len(asm.have) == asm.spec.num_pieces
            if whole:
                try:
                    self._complete(asm)
                except IntegrityError as err:
                    # The origin sent bytes that do not match its own digest: every
                    # copy of this file is suspect, so this node stops serving it.
                    return FileCorrupt(str(err))
                with self._lock:
                    if job_id in asm.unplaced:
                        # Verified, but not at its path for this job: the node failed.
                        return FileUnplaced(asm.unplaced[job_id])
                    file_done = job_id not in asm.reported
                    asm.reported.add(job_id)
            return Received(nbytes, time.monotonic() - started, crc, file_done)

    def _fetch(
        self, asm: Assembly, digests: InOrderDigests, index: int, crc: int | None,
        lend: Callable[[], Lent | LentBytes],
    ) -> tuple[int, int] | SourceLost:
        """Bring piece ``index`` from its holder, write, hash and pin it.

        Returns ``(bytes, crc)``, or the pull's result when the source is lost.
        Another job's pull of the same piece at the same time writes the same
        bytes; only the first to finish counts them.
        """
        started = time.monotonic()
        task_id = asm.spec.task_id
        piece = asm.spec.piece(index)
        try:
            reply = lend()
            lender_crc = reply.crc
            array = (reply.data if isinstance(reply, LentBytes)
                     else ray.get(reply.ref, timeout=PULL_TIMEOUT))
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError) as exc:
            # A passing hiccup or a stalled holder, not a dead node: retried elsewhere.
            raise SenderFailed(
                f"piece {index} of {asm.spec.paths[0]}: its holder did not deliver it to node "
                f"{self.node_id[:8]} ({type(exc).__name__}); it will be taken again"
            ) from None
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError,
                ray.exceptions.OwnerDiedError) as exc:
            return SourceLost(type(exc).__name__)
        expected = asm.fixed.get(index, lender_crc if crc is None else crc)
        view = memoryview(array)
        if len(view) != piece.length or piece_crc(view) != expected:
            raise IntegrityError(
                f"piece {index} of {asm.spec.paths[0]} failed its CRC-32 on node "
                f"{self.node_id[:8]}; it will be taken from another holder"
            )
        os.pwrite(asm.writable_fd(self.cache), view, piece.start)
        digests.add(index, view, lambda i: self._piece_view(asm, i))
        # Held, it stays readable if the lender dies; put (our own copy) when first lent.
        own = payload_of(array, HeldCopy)
        del view, array, reply
        with self._lock:
            if index in asm.have:
                return 0, expected  # another job's pull of it finished first
            self._pinned.add((task_id, index), own, expected, piece.length)
            asm.have.add(index)
            self.received_bytes += piece.length
        tags = {"node": self.node_id[:8]}
        if piece.length:  # an empty file is one piece of 0 bytes; counters take only > 0
            metrics().p2p_bytes.inc(piece.length, tags=tags)
        metrics().pieces.inc(1, tags=tags)
        metrics().piece_seconds.observe(time.monotonic() - started, tags=tags)
        return piece.length, expected

    def _piece_view(self, asm: Assembly, index: int) -> memoryview:
        """Piece ``index``'s bytes for the in-order digest: the copy still held as
        received, else read from disk."""
        with self._lock:
            pinned = self._pinned.peek((asm.spec.task_id, index))
        if pinned is not None and isinstance(pinned[0], HeldCopy | np.ndarray):
            array = pinned[0].array if isinstance(pinned[0], HeldCopy) else pinned[0]
            return cast(memoryview, array.data)
        return read_piece(asm, index)

    def _complete(self, asm: Assembly) -> None:
        """Verify and place a file whose pieces are all in, once, whoever asks first;
        raise IntegrityError (again, for every caller) if it failed."""
        with asm.finishing:
            if asm.corrupt is not None:
                raise IntegrityError(asm.corrupt)
            if not asm.complete:
                self._finish(asm)

    def _finish(self, asm: Assembly) -> None:
        """Verify the whole file, move it into the cache, place it for every job."""
        assert asm.digests is not None
        try:
            blob = self.cache.commit(asm.path, asm.spec.file, asm.digests.result(), stamp=False)
        except IntegrityError as err:
            log_event("file_corrupt", node=self.node_id[:8], file=asm.spec.paths[0],
                      task=asm.spec.task_id, error=str(err).replace(" ", "_")[:120])
            with self._lock:
                asm.corrupt = str(err)
                self._pinned.drop_task(asm.spec.task_id)
                self._retire(asm)
            raise
        log_event("file_verified", node=self.node_id[:8], jobs=",".join(sorted(asm.jobs)),
                  file=asm.spec.paths[0], task=asm.spec.task_id, bytes=asm.spec.size)
        with self._lock:
            asm.path, asm.complete, asm.digests = blob, True, None
            dests = {j: self._jobs[j][0] for j in asm.jobs if j in self._jobs}
        for job_id, dest_dir in dests.items():
            if dest_dir is not None:
                self._place_for(asm, job_id, dest_dir)
        if self.cache.is_blob(blob):  # after its links: one stamp, not one per link
            self.cache.stamp(blob)

    def _place_for(self, asm: Assembly, job_id: str, dest_dir: Path) -> None:
        """Place a verified file for one job; a failure is that job's, on this node."""
        try:
            self._place(asm, dest_dir)
        except StorageError as err:
            log_event("file_unplaced", node=self.node_id[:8], job=job_id,
                      file=asm.spec.paths[0], error=str(err).replace(" ", "_")[:120])
            with self._lock:
                asm.unplaced[job_id] = str(err)

    # -- serving ---------------------------------------------------------

    @ray.method(concurrency_group=SERVE_GROUP)
    def lend(self, task_id: str, index: int) -> Lent | LentBytes:
        """The ref (owned by this peer) and CRC-32 of a piece this node has, or a
        small piece's bytes; re-read from disk if unpinned."""
        key = (task_id, index)
        pinned = self._pinned.own(key, ray.put, self._lock)
        if pinned is not None:
            with self._lock:
                self.served_bytes += pinned[2]
            return lent(pinned[0], pinned[1])
        with self._using(task_id) as asm:
            data = read_piece(asm, index)
            crc = piece_crc(data)
            payload = payload_of(np.asarray(data), ray.put)
            with self._lock:
                self._pinned.add(key, payload, crc, len(data))
                self.served_bytes += len(data)
            return lent(payload, crc)

    @ray.method(concurrency_group=SERVE_GROUP)
    def lend_many(self, pieces: list[tuple[str, int]]) -> list[Lent | LentBytes | NotLent]:
        """:meth:`lend` each of ``pieces`` (small ones), in one call."""
        # Through lend itself (a subclass may change it); ray.method leaves it plain here.
        return lend_each(cast("Callable[[str, int], Lent | LentBytes]", self.lend), pieces)

    @contextmanager
    def _using(self, task_id: str) -> Iterator[Assembly]:
        """Hold a task's file open while a pull or lend uses it."""
        with self._lock:
            asm = self._tasks.get(task_id)
            if asm is None or asm.retired:
                raise KeyError(f"node {self.node_id[:8]} no longer has {task_id}")
            asm.busy += 1
        try:
            yield asm
        finally:
            with self._lock:
                asm.busy -= 1
                if asm.retired and asm.busy == 0:
                    self._close(asm)

    def _retire(self, asm: Assembly) -> None:
        """Forget a task (lock held); its file closes when the last user is done."""
        asm.retired = True
        if self._tasks.get(asm.spec.task_id) is asm:
            del self._tasks[asm.spec.task_id]
        if asm.busy == 0:
            self._close(asm)

    def _close(self, asm: Assembly) -> None:
        if asm.fd >= 0:
            os.close(asm.fd)
        if not asm.complete:
            self.cache.discard(asm.path)

    # -- leaving a job ---------------------------------------------------

    def finish_job(self, job_id: str, discard: list[str] | None = None) -> None:
        """Forget a job: unpin its pieces; an incomplete file nobody else wants is
        kept with the pieces it has (verified one by one), so the next job for it
        (a re-run after Ctrl-C or a failure) does not fetch them again, except the
        tasks in ``discard`` (files the origin kept corrupting: nothing of them
        is worth keeping)."""
        with self._lock:
            _, task_ids = self._jobs.pop(job_id, (None, []))
            self._job_epochs.pop(job_id, None)
            for key in [k for k in self._lenders if k[0] == job_id]:
                del self._lenders[key]
            for task_id in task_ids:
                asm = self._tasks.get(task_id)
                if asm is None:
                    continue
                asm.jobs.discard(job_id)
                asm.reported.discard(job_id)
                asm.unplaced.pop(job_id, None)
                if asm.jobs:
                    continue
                self._pinned.drop_task(task_id)
                if (asm.complete or not asm.have or asm.corrupt is not None
                        or task_id in (discard or ())):
                    self._retire(asm)
            self._drop_parked(MAX_PARKED)

    def cache_only(self, job_id: str) -> None:
        """The job was cancelled: what it still completes goes into the cache, and
        nothing more is placed at its destination."""
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id] = (None, self._jobs[job_id][1])

    def forget_jobs_except(self, epoch: str) -> list[str]:
        """Finish every job run by another scheduler incarnation than ``epoch`` (the
        scheduler that ran it died: nobody will finish it). Returns their ids."""
        with self._lock:
            stale = [j for j in self._jobs if self._job_epochs.get(j, epoch) != epoch]
        for job_id in stale:
            self.finish_job(job_id)
        return stale

    def _drop_parked(self, keep: int) -> None:
        """Keep at most ``keep`` incomplete files of ended jobs, the newest (lock held)."""
        parked = [a for a in self._tasks.values() if not a.jobs and not a.complete]
        for asm in parked[: max(len(parked) - keep, 0)]:
            self._retire(asm)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cache_bytes": self.cache.usage(),
                "cache_root": str(self.cache.root),
                "cache_roots": [str(c.root) for c in self.cache.caches],
                "node_id": self.node_id,
                "files_complete": sum(a.complete for a in self._tasks.values()),
                "files": len(self._tasks),
                "pinned_pieces": len(self._pinned),
                "pinned_bytes": self._pinned.bytes,
                "budget": self._pinned.budget,
                "received_bytes": self.received_bytes,
                "served_bytes": self.served_bytes,
                "jobs": sorted(self._jobs),
            }
