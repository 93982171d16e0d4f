"""Typed handles around raydf's actors, as ``ray.util.Queue`` wraps its actor.

Each method issues one actor call and returns its ``ObjectRef`` typed with the
:mod:`raydf.cluster.protocol` message it resolves to, so mypy checks both ends
of the contract; ``await`` it in an asyncio actor, ``ray.get`` it elsewhere.
A handle pickles (it holds only the actor handle), so it travels inside
messages; tests may pass any object with the same methods instead.
"""

from __future__ import annotations

from typing import Any

from ray import ObjectRef

from raydf.backends.base import Secret
from raydf.cluster.protocol import (
    Fetched,
    Holdings,
    JobRequest,
    JobSpec,
    JobStatus,
    Lent,
    LentBytes,
    NotLent,
    PeerJoin,
    PullBatch,
    PullOutcome,
    RepoUsage,
    SeedStats,
)
from raydf.cluster.spec import TaskSpec
from raydf.options import Request
from raydf.plan import RepoPlan
from raydf.report import Report

__all__ = ["PeerHandle", "SchedulerHandle", "SeedHandle"]


class _Handle:
    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.actor == self.actor

    def __hash__(self) -> int:
        return hash(self.actor)

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


class PeerHandle(_Handle):
    """A node's :class:`~raydf.cluster.peer.PeerActor`."""

    def prepare(self, join: PeerJoin) -> ObjectRef[Holdings]:
        return self.actor.prepare.remote(join)  # type: ignore[no-any-return]

    def offer(self, join: PeerJoin) -> ObjectRef[Holdings]:
        return self.actor.offer.remote(join)  # type: ignore[no-any-return]

    def pull_batch(self, batch: PullBatch) -> ObjectRef[list[PullOutcome]]:
        return self.actor.pull_batch.remote(batch)  # type: ignore[no-any-return]

    def lend(self, task_id: str, index: int) -> ObjectRef[Lent | LentBytes]:
        return self.actor.lend.remote(task_id, index)  # type: ignore[no-any-return]

    def lend_many(self, pieces: list[tuple[str, int]]
                  ) -> ObjectRef[list[Lent | LentBytes | NotLent]]:
        return self.actor.lend_many.remote(pieces)  # type: ignore[no-any-return]

    def retake(self, job_id: str, task_id: str, fixed: dict[int, int]) -> ObjectRef[None]:
        return self.actor.retake.remote(job_id, task_id, fixed)  # type: ignore[no-any-return]

    def check_copy(self, job_id: str, task: TaskSpec) -> ObjectRef[str]:
        return self.actor.check_copy.remote(job_id, task)  # type: ignore[no-any-return]

    def renew(self, task: TaskSpec) -> ObjectRef[None]:
        return self.actor.renew.remote(task)  # type: ignore[no-any-return]

    def cache_only(self, job_id: str) -> ObjectRef[None]:
        return self.actor.cache_only.remote(job_id)  # type: ignore[no-any-return]

    def finish_job(self, job_id: str, discard: list[str] | None = None) -> ObjectRef[None]:
        return self.actor.finish_job.remote(job_id, discard)  # type: ignore[no-any-return]


class SeedHandle(_Handle):
    """A job's :class:`~raydf.cluster.seed.SeedActor` (the only holder of its token)."""

    def take(self, request: Request, token: Secret | None) -> ObjectRef[None]:
        """Give the seed its one job's request (sent without its token) and the token."""
        return self.actor.take.remote(request, token)  # type: ignore[no-any-return]

    def node_id(self) -> ObjectRef[str]:
        return self.actor.node_id.remote()  # type: ignore[no-any-return]

    def plan(self) -> ObjectRef[RepoPlan]:
        return self.actor.plan.remote()  # type: ignore[no-any-return]

    def add_tasks(self, tasks: list[TaskSpec]) -> ObjectRef[None]:
        return self.actor.add_tasks.remote(tasks)  # type: ignore[no-any-return]

    def adopt(self, plan: RepoPlan, tasks: list[TaskSpec]) -> ObjectRef[None]:
        return self.actor.adopt.remote(plan, tasks)  # type: ignore[no-any-return]

    def fetch(self, task_id: str, index: int) -> ObjectRef[Fetched]:
        return self.actor.fetch.remote(task_id, index)  # type: ignore[no-any-return]

    def lend(self, task_id: str, index: int) -> ObjectRef[Lent | LentBytes]:
        return self.actor.lend.remote(task_id, index)  # type: ignore[no-any-return]

    def lend_many(self, pieces: list[tuple[str, int]]
                  ) -> ObjectRef[list[Lent | LentBytes | NotLent]]:
        return self.actor.lend_many.remote(pieces)  # type: ignore[no-any-return]

    def release(self, pieces: list[tuple[str, int]]) -> ObjectRef[None]:
        return self.actor.release.remote(pieces)  # type: ignore[no-any-return]

    def counts(self) -> ObjectRef[SeedStats]:
        return self.actor.counts.remote()  # type: ignore[no-any-return]


class SchedulerHandle(_Handle):
    """The cluster's :class:`~raydf.cluster.scheduler.SchedulerActor`."""

    def claim(self, fingerprint: str, dest: str, nodes: list[str], url: str
              ) -> ObjectRef[str | None]:
        return self.actor.claim.remote(fingerprint, dest, nodes, url)  # type: ignore[no-any-return]

    def release(self, fingerprint: str) -> ObjectRef[None]:
        return self.actor.release.remote(fingerprint)  # type: ignore[no-any-return]

    def join(self, job_id: str, peers: dict[str, PeerHandle], caller: str,
             count: bool = True) -> ObjectRef[bool]:
        """Add ``peers`` to a running job; ``count``: as a request in the usage book."""
        return self.actor.join.remote(job_id, peers, caller, count)  # type: ignore[no-any-return]

    def usage(self, top: int) -> ObjectRef[list[RepoUsage]]:
        """The ``top`` most requested repos (see :mod:`raydf.usage`)."""
        return self.actor.usage.remote(top)  # type: ignore[no-any-return]

    def new_seed(self, fetches: int) -> ObjectRef[SeedHandle]:
        return self.actor.new_seed.remote(fetches)  # type: ignore[no-any-return]

    def start(self, ask: JobRequest, seed: SeedHandle, peers: dict[str, PeerHandle],
              holders: dict[str, PeerHandle]) -> ObjectRef[str]:
        """Plan the job (the seed lists the repo) and start it; its id once it runs."""
        return self.actor.start.remote(ask, seed, peers, holders)  # type: ignore[no-any-return]

    def submit(self, spec: JobSpec, seed: SeedHandle, peers: dict[str, PeerHandle],
               holders: dict[str, PeerHandle]) -> ObjectRef[str]:
        return self.actor.submit.remote(spec, seed, peers, holders)  # type: ignore[no-any-return]

    def wait(self, job_id: str, nodes: list[str]) -> ObjectRef[Report]:
        return self.actor.wait.remote(job_id, nodes)  # type: ignore[no-any-return]

    def poll(self, job_id: str, caller: str, nodes: list[str], seen: int = -1,
             timeout: float = 0.0) -> ObjectRef[JobStatus]:
        """The job's status for ``nodes`` once its version is past ``seen`` (or after
        ``timeout`` s); renews ``caller``'s lease."""
        return self.actor.poll.remote(job_id, caller, nodes, seen, timeout)  # type: ignore[no-any-return]

    def job_plan(self, job_id: str) -> ObjectRef[tuple[RepoPlan, list[TaskSpec]]]:
        return self.actor.job_plan.remote(job_id)  # type: ignore[no-any-return]

    def add_seed(self, job_id: str, seed: SeedHandle) -> ObjectRef[bool]:
        return self.actor.add_seed.remote(job_id, seed)  # type: ignore[no-any-return]

    def standby_seed(self) -> ObjectRef[SeedHandle | None]:
        return self.actor.standby_seed.remote()  # type: ignore[no-any-return]

    def snapshot(self) -> ObjectRef[dict[str, Any]]:
        return self.actor.snapshot.remote()  # type: ignore[no-any-return]

    def cancel(self, job_id: str, nodes: list[str], caller: str) -> ObjectRef[None]:
        return self.actor.cancel.remote(job_id, nodes, caller)  # type: ignore[no-any-return]
