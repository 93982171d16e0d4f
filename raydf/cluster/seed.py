"""SeedActor: the only code that talks to the origin.

The scheduler starts seeds before they are needed (a *standby* seed, with
no request and no token, waits for the next job). A caller gives one its
request and token with :meth:`SeedActor.take`, a direct actor call, so the
token is never in an actor's creation spec, the GCS or the object store; a
seed serves that one job and is killed when it ends. It resolves and lists
once, fetches each piece it is asked for with one ranged GET, puts it in the
object store as an ``np.uint8`` array (zero-copy for readers on the same
node) and lends its ref to peers until the scheduler releases it. Several
fetches run at once (a threaded actor), so peers take piece *k* while piece
*k+1* is still arriving.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np
import ray

from raydf.backends.base import Authorizing, Backend, Secret
from raydf.cluster.metrics import metrics
from raydf.cluster.spec import TaskSpec
from raydf.options import Request
from raydf.pieces import piece_crc
from raydf.plan import RepoPlan

__all__ = ["SeedActor"]

PieceId = tuple[str, int]


class SeedActor:
    """Plain class; made remote where it is spawned (``ray.remote(SeedActor)``)."""

    def __init__(self) -> None:
        self._request_given: Request | None = None
        self._backend: Backend | None = None
        self._plan: RepoPlan | None = None
        self._tasks: dict[str, TaskSpec] = {}
        self._held: dict[PieceId, tuple[Any, int]] = {}
        self._lock = threading.Lock()
        self.origin_bytes = 0

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

    def take(self, request: Request, token: Secret | None) -> None:
        """Serve ``request`` (sent without its token) with ``token`` (kept in this
        process only). Once only: a seed never serves a second job."""
        if self._request_given is not None:
            raise RuntimeError(f"this seed already serves {self._request_given.url}")
        options = dataclasses.replace(request.backend_options, token=token)
        self._request_given = dataclasses.replace(request, backend_options=options)

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
            self._plan = plan
        return self._plan

    def add_tasks(self, tasks: list[TaskSpec]) -> None:
        for task in tasks:
            self._tasks[task.task_id] = task

    def adopt(self, plan: RepoPlan, tasks: list[TaskSpec]) -> None:
        """Take over a running job's plan (a replacement seed lists nothing again)."""
        self._plan = plan
        self.add_tasks(tasks)

    def fetch(self, task_id: str, index: int) -> tuple[int, int, int]:
        """Fetch one piece from the origin and hold it.

        Returns ``(crc, length, origin requests so far)``.
        """
        task = self._tasks[task_id]
        piece = task.piece(index)
        buffer = np.empty(piece.length, dtype=np.uint8)
        assert self._plan is not None
        self._open().read_into(self._plan.commit, task.file.repo_path, piece.start, buffer.data)
        crc = piece_crc(buffer.data)
        ref = ray.put(buffer)
        metrics().origin_bytes.inc(piece.length)
        with self._lock:
            self._held[(task_id, index)] = (ref, crc)
            self.origin_bytes += piece.length
        return crc, piece.length, self._open().requests

    def lend(self, task_id: str, index: int) -> list[Any]:
        """``[ref, crc]`` of a held piece; the ref stays owned by this seed."""
        with self._lock:
            ref, crc = self._held[(task_id, index)]
        return [ref, crc]

    def release(self, pieces: list[PieceId]) -> None:
        """Drop pieces enough peers hold, so the seed's memory stays bounded."""
        with self._lock:
            for piece in pieces:
                self._held.pop(piece, None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "standby": self._request_given is None,
                "origin_bytes": self.origin_bytes,
                "origin_requests": self._backend.requests if self._backend else 0,
                "held": len(self._held),
            }

    def close(self) -> None:
        with self._lock:
            self._held.clear()
        if self._backend is not None:
            self._backend.close()
