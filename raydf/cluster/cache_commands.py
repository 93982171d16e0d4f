"""The ``raydf cache`` commands, and the destination check, a node's peer answers.

A mixin of :class:`~raydf.cluster.peer.PeerActor`, kept apart from moving
pieces: it reads the peer's node cache and assemblies under the peer's lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import ray

from raydf.cache_roots import NodeCaches
from raydf.cluster.assembly import Assembly
from raydf.cluster.destination import destination_problem_here
from raydf.cluster.placement import NAMESPACE, SCHEDULER_NAME
from raydf.errors import StorageError

__all__ = ["CacheCommands"]


class CacheCommands:
    """``cache ls | rm | gc`` and ``-O`` checks on this node (see PeerActor)."""

    cache: NodeCaches  # every cache of the node, one per file system
    _lock: threading.Lock
    _tasks: dict[str, Assembly]

    if TYPE_CHECKING:  # the peer's own
        def _retire(self, asm: Assembly) -> None: ...
        def _drop_parked(self, keep: int) -> None: ...
        def forget_jobs_except(self, epoch: str) -> list[str]: ...

    def cache_entries(self) -> list[dict[str, object]]:
        return self.cache.entries()

    def _forget_orphaned_jobs(self) -> None:
        """Finish the jobs of a scheduler that died (nobody else will), so their
        files are not "busy" for ever; kept if the scheduler cannot be asked."""
        try:
            sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
            epoch = ray.get(sched.current_epoch.remote(), timeout=10)
        except ValueError:
            epoch = "none"  # no scheduler at all: every job here is orphaned
        except Exception:  # busy or restarting: cannot tell, so keep them
            return
        self.forget_jobs_except(epoch)

    def destination_problem(self, dest: str, recursive: bool) -> StorageError | None:
        """Why ``-O`` cannot be written on this node, if it cannot (callers ask first)."""
        return destination_problem_here(dest, recursive)

    def cache_remove(self, key: str) -> int:
        self._forget_orphaned_jobs()
        with self._lock:
            if any(a.spec.task_id == key and a.jobs for a in self._tasks.values()):
                return 0  # in use by a running job
            for asm in [a for a in self._tasks.values() if a.spec.task_id == key]:
                self._retire(asm)
            return self.cache.remove(key)

    def cache_gc(self) -> dict[str, int]:
        self._forget_orphaned_jobs()
        with self._lock:
            self._drop_parked(0)  # kept pieces of ended jobs go too
            for asm in [a for a in self._tasks.values() if not a.jobs]:
                self._retire(asm)
            busy = {a.spec.task_id for a in self._tasks.values()}
            if busy:
                return {"partials": 0, "blobs": 0, "bytes": 0, "skipped_busy": len(busy)}
            return self.cache.gc()
