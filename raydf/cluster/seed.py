"""SeedActor: the only code that talks to the origin.

The scheduler starts seeds before they are needed (a *standby* seed, with
no request and no token, waits for the next job). A caller gives one its
request and token with :meth:`SeedActor.take`, a direct actor call, so the
token is never in an actor's creation spec, the GCS or the object store; a
seed serves that one job and is killed when it ends. It resolves and lists
once, fetches each piece it is asked for with one ranged GET, puts it in the
object store as an ``np.uint8`` array (zero-copy for readers on the same
node) and lends its ref to peers until the scheduler releases it; a small
piece it keeps as bytes and lends inside the reply (see
:data:`~raydf.cluster.protocol.INLINE_PIECE_BYTES`). Several
fetches run at once (a threaded actor), so peers take piece *k* while piece
*k+1* is still arriving.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np
import ray

from raydf.backends import backend_class
from raydf.backends.base import Authorizing, Backend, Secret, hub_requests
from raydf.cache import InOrderDigests, check_digests, file_digests
from raydf.cluster.lending import array_of, lend_each, lent, payload_of
from raydf.cluster.metrics import log_event, metrics
from raydf.cluster.protocol import Fetched, Lent, LentBytes, NotLent, SeedStats
from raydf.cluster.spec import TaskSpec
from raydf.errors import IntegrityError
from raydf.options import Request
from raydf.pieces import piece_crc
from raydf.plan import RepoPlan

__all__ = ["SeedActor"]

PieceId = tuple[str, int]
HEAL_READS = 2  # whole-file reads from the origin after a file failed its digest


class SeedActor:
    """Plain class; made remote where it is spawned (``ray.remote(SeedActor)``)."""

    def __init__(self) -> None:
        self._request_given: Request | None = None
        self._backend: Backend | None = None
        self._plan: RepoPlan | None = None
        self._tasks: dict[str, TaskSpec] = {}
        self._held: dict[PieceId, tuple[Any, int]] = {}  # (a ref, or small bytes; CRC-32)
        self._lock = threading.Lock()
        self.origin_bytes = 0
        # The whole-file digest of each file, fed as its pieces arrive (see fetch).
        self._digests: dict[str, InOrderDigests] = {}
        self._ahead: dict[PieceId, Any] = {}  # refs of pieces fetched before their turn
        self._crcs: dict[PieceId, int] = {}  # as first fetched: what peers may hold
        self._checked: set[str] = set()  # tasks whose digest was judged
        self._bad: dict[str, str] = {}  # task -> why the origin's bytes stay corrupt

    def __repr__(self) -> str:
        if self._request_given is None:
            return "<Seed standby>"
        return (f"<Seed {self._request_given.url} | {len(self._held)} pieces held, "
                f"{self.origin_bytes} origin bytes>")

    @property
    def _request(self) -> Request:
        if self._request_given is None:
            raise RuntimeError("this seed has no request yet: call take() first")
        return self._request_given

    def node_id(self) -> str:
        """The node this seed runs on (its zone is where origin bytes enter)."""
        return str(ray.get_runtime_context().get_node_id())

    def take(self, request: Request, token: Secret | None) -> None:
        """Serve ``request`` (sent without its token) with ``token`` (kept in this
        process only). Once only: a seed never serves a second job."""
        if self._request_given is not None:
            raise RuntimeError(f"this seed already serves {self._request_given.url}")
        options = dataclasses.replace(request.backend_options, token=token)
        self._request_given = dataclasses.replace(request, backend_options=options)
        # An object store's credentials are the caller's, never this node's.
        adopt = getattr(backend_class(request.source.scheme), "adopt_caller_credentials", None)
        if adopt is not None:
            adopt(token)

    def _open(self) -> Backend:
        if self._backend is None:
            self._backend = self._request.open_backend()
        return self._backend

    def plan(self) -> RepoPlan:
        """Resolve the revision and list the files (once per seed), and make the hub
        judge this caller's credential before any byte is placed for it: peers may
        hold every piece already (caches, other jobs), so access is checked here."""
        if self._plan is None:
            backend = self._open()
            plan = self._request.make_plan(backend)
            if isinstance(backend, Authorizing):
                backend.authorize(plan.commit, plan.files)
            # Whether the hub said anyone may read it (raydf.usage warms only
            # such repos without the warming caller's own token).
            self._plan = dataclasses.replace(plan, public=getattr(backend, "public", False) is True)
        return self._plan

    def add_tasks(self, tasks: list[TaskSpec]) -> None:
        for task in tasks:
            self._tasks[task.task_id] = task

    def adopt(self, plan: RepoPlan, tasks: list[TaskSpec]) -> None:
        """Take over a running job's plan (a replacement seed lists nothing again)."""
        self._plan = plan
        self.add_tasks(tasks)

    def fetch(self, task_id: str, index: int) -> Fetched:
        """Fetch one piece from the origin and hold it.

        Returns its CRC-32, the origin bytes read, the origin requests so far
        (also by kind) and ``healed``. The seed
        reads every byte of a file, so it checks the whole-file digest as pieces
        arrive: when the piece that completes a file makes it fail, the file is
        read again from the origin (at most ``HEAL_READS`` times) and ``healed``
        maps the index of each piece whose bytes changed to its new CRC-32 (the
        seed holds those pieces now; peers must take them again). A file that
        stays corrupt raises IntegrityError naming it and the reads.
        """
        task = self._tasks[task_id]
        if task_id in self._bad:
            raise IntegrityError(self._bad[task_id])
        piece = task.piece(index)
        buffer = np.empty(piece.length, dtype=np.uint8)
        assert self._plan is not None
        self._open().read_into(self._plan.commit, task.file.repo_path, piece.start, buffer.data)
        crc = piece_crc(buffer.data)
        ref = payload_of(buffer, ray.put)
        if piece.length:  # an empty file is one piece of 0 bytes; counters take only > 0
            metrics().origin_bytes.inc(piece.length)
        with self._lock:
            self._held[(task_id, index)] = (ref, crc)
            self._crcs[(task_id, index)] = crc
            self.origin_bytes += piece.length
        healed, extra = self._check_in_order(task, index, buffer.data, ref)
        return Fetched(healed.get(index, crc) if healed else crc, piece.length + extra,
                       self._open().requests, hub_requests(self._open()), healed)

    def _check_in_order(
        self, task: TaskSpec, index: int, data: memoryview, ref: Any,
    ) -> tuple[dict[int, int] | None, int]:
        """Feed piece ``index`` to its file's digest; heal the file if it completes
        it and fails. Returns ``(healed, origin bytes read to heal)``."""
        if task.file.digest is None:
            return None, 0
        task_id = task.task_id
        with self._lock:
            digests = self._digests.setdefault(task_id,
                                               InOrderDigests(task.file, task.num_pieces))
            self._ahead[(task_id, index)] = ref
        digests.add(index, data, lambda i: memoryview(array_of(self._ahead[(task_id, i)])))
        found = digests.result()
        with self._lock:
            for key in [k for k in self._ahead if k[0] == task_id and k[1] < digests.hashed]:
                del self._ahead[key]
            if found is None or task_id in self._checked:
                return None, 0
            self._checked.add(task_id)
        try:
            check_digests(task.file, found)
            return None, 0
        except IntegrityError:
            return self._heal(task)

    def _heal(self, task: TaskSpec) -> tuple[dict[int, int], int]:
        """Read the whole file again until it passes its digest (``HEAL_READS`` at
        most); hold the pieces whose bytes differ from the first read."""
        assert self._plan is not None
        spent = 0
        for read in range(2, 2 + HEAL_READS):
            digests = file_digests(task.file)
            changed: dict[int, Any] = {}
            for piece in task.pieces:
                buffer = np.empty(piece.length, dtype=np.uint8)
                self._open().read_into(self._plan.commit, task.file.repo_path, piece.start,
                                       buffer.data)
                spent += piece.length
                for digest in digests.values():
                    digest.update(buffer.data)
                if piece_crc(buffer.data) != self._crcs.get((task.task_id, piece.index)):
                    changed[piece.index] = buffer
            metrics().origin_bytes.inc(task.size)
            try:
                check_digests(task.file, {a: d.hexdigest() for a, d in digests.items()})
            except IntegrityError:
                continue
            healed = {}
            with self._lock:
                self.origin_bytes += spent
                for i, buffer in changed.items():
                    crc = piece_crc(buffer.data)
                    self._held[(task.task_id, i)] = (payload_of(buffer, ray.put), crc)
                    self._crcs[(task.task_id, i)] = healed[i] = crc
            log_event("file_healed", file=task.paths[0], task=task.task_id, reads=read,
                      pieces=len(healed))
            return healed, spent
        with self._lock:
            self.origin_bytes += spent
        algorithm = task.file.digest[0] if task.file.digest else "digest"
        why = (f"{task.paths[0]}: the origin sent bytes that fail its {algorithm} in "
               f"{1 + HEAL_READS} whole reads; it was placed on no node (the other files "
               "were). Retry later, and report the file to the hub if it persists")
        with self._lock:
            self._bad[task.task_id] = why
        log_event("file_corrupt_at_origin", file=task.paths[0], task=task.task_id,
                  reads=1 + HEAL_READS)
        raise IntegrityError(why)

    def lend(self, task_id: str, index: int) -> Lent | LentBytes:
        """A held piece's ref (it stays owned by this seed), or a small piece's
        bytes, and its CRC-32."""
        with self._lock:
            payload, crc = self._held[(task_id, index)]
        return lent(payload, crc)

    def lend_many(self, pieces: list[PieceId]) -> list[Lent | LentBytes | NotLent]:
        """:meth:`lend` each of ``pieces`` (small ones), in one call."""
        return lend_each(self.lend, pieces)

    def release(self, pieces: list[PieceId]) -> None:
        """Drop pieces enough peers hold, so the seed's memory stays bounded."""
        with self._lock:
            for piece in pieces:
                self._held.pop(piece, None)

    def stats(self) -> dict[str, Any]:
        """:meth:`counts` as plain data (``raydf status``, tests)."""
        return dataclasses.asdict(self.counts())

    def counts(self) -> SeedStats:
        """What this seed read and holds (the scheduler's report takes its requests)."""
        with self._lock:
            return SeedStats(
                standby=self._request_given is None,
                origin_bytes=self.origin_bytes,
                origin_requests=self._backend.requests if self._backend else 0,
                hub_requests=hub_requests(self._backend) if self._backend else {},
                held=len(self._held),
            )

    def close(self) -> None:
        with self._lock:
            self._held.clear()
        if self._backend is not None:
            self._backend.close()
