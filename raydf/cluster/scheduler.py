"""SchedulerActor: one per cluster (detached, named, namespace ``raydf``).

It keeps every job's :class:`~raydf.policy.PlanState`, asks the pure policy
what to start next, and only then issues the ``.remote()`` calls the policy
returned (decide first, then do I/O). It never touches bytes: seeds and peers
move pieces through the object store; the scheduler moves decisions.
An asyncio actor: each transfer in flight is one awaited call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from raydf.cluster.spec import TaskSpec
from raydf.errors import RaydfError
from raydf.plan import RepoPlan
from raydf.policy import ORIGIN, Assignment, Limits, PieceId, PlanState, decide
from raydf.report import NodeReport, Report

__all__ = ["SchedulerActor"]

SEED_COPIES = 2  # peers holding a piece before the seed lets it go
MAX_PIECE_FAILURES = 5
KEEP_FINISHED_JOBS = 16


@dataclass
class _Job:
    job_id: str
    plan: RepoPlan
    tasks: dict[str, TaskSpec]
    seed_id: str
    seed: Any
    peers: dict[str, Any]  # node id -> PeerActor handle
    dest: str
    limits: Limits
    budget: int | None
    started: float = field(default_factory=time.monotonic)
    state: PlanState | None = None
    crc: dict[PieceId, int] = field(default_factory=dict)
    node_bytes: dict[str, int] = field(default_factory=dict)
    node_done: dict[str, float] = field(default_factory=dict)
    node_error: dict[str, str] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    p2p_bytes: int = 0
    failures: dict[PieceId, int] = field(default_factory=dict)
    received: list[tuple[float, str, str, int]] = field(default_factory=list)
    origin_times: list[tuple[float, str, int]] = field(default_factory=list)
    node_received: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    report: Report | None = None
    runner: asyncio.Task[None] | None = None


class SchedulerActor:
    """Plain class; made remote (detached, named) by :mod:`raydf.cluster.service`."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    def __repr__(self) -> str:
        active = [j for j in self._jobs.values() if j.report is None]
        tasks = sum(len(j.tasks) for j in active)
        snap = [j.state.snapshot() for j in active if j.state is not None]
        done = sum(s["pieces_done"] for s in snap)
        total = sum(s["pieces_total"] for s in snap)
        flight = sum(s["in_flight"] for s in snap)
        peers = len({p for j in active for p in j.peers})
        return (f"<Scheduler {tasks} tasks, pieces {done}/{total}, {flight} in flight | "
                f"{peers} peers>")

    async def submit(
        self,
        plan: RepoPlan,
        tasks: list[TaskSpec],
        seed: Any,
        peers: dict[str, Any],
        dest: str,
        limits: Limits | None = None,
        memory_budget: int | None = None,
    ) -> str:
        """Start a job; returns its id at once (see :meth:`wait`, :meth:`status`)."""
        job_id = uuid.uuid4().hex[:12]
        job = _Job(job_id, plan, {t.task_id: t for t in tasks}, f"seed-{job_id}", seed,
                   dict(peers), dest, limits or Limits(), memory_budget)
        self._jobs[job_id] = job
        job.runner = asyncio.get_running_loop().create_task(self._run(job))
        self._forget_old_jobs()
        return job_id

    async def wait(self, job_id: str) -> Report:
        """The job's report, once every node finished or failed."""
        job = self._jobs[job_id]
        assert job.runner is not None
        await asyncio.shield(job.runner)
        assert job.report is not None
        return job.report

    def status(self, job_id: str) -> dict[str, Any]:
        """Progress of one job: bytes per node, done or not."""
        job = self._jobs[job_id]
        return {
            "job_id": job_id,
            "url": job.plan.url,
            "bytes": job.plan.total_bytes,
            "nodes": {n: job.node_bytes.get(n, 0) for n in job.peers},
            "received": dict(job.node_received),
            "done": job.report is not None,
            "plan": job.state.snapshot() if job.state else None,
        }

    def timeline(self, job_id: str) -> dict[str, list[tuple[Any, ...]]]:
        """When pieces moved: ``origin`` ``(time, task, index)`` as the seed got each
        piece, ``received`` ``(time, node, task, index)`` as a peer got one."""
        job = self._jobs[job_id]
        return {"origin": list(job.origin_times), "received": list(job.received)}

    def snapshot(self) -> dict[str, Any]:
        return {"jobs": {j: self.status(j) for j in self._jobs}, "repr": repr(self)}

    def _forget_old_jobs(self) -> None:
        finished = [j for j, job in self._jobs.items() if job.report is not None]
        for job_id in finished[:-KEEP_FINISHED_JOBS]:
            del self._jobs[job_id]

    # -- running a job ---------------------------------------------------

    async def _run(self, job: _Job) -> None:
        try:
            await self._prepare(job)
            await self._drive(job)
        except RaydfError as err:
            job.error = str(err)
        except Exception as exc:  # a bug or a Ray failure: report it, never hang
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            await self._finish(job)

    async def _prepare(self, job: _Job) -> None:
        tasks = list(job.tasks.values())
        state = PlanState({t.task_id: t.num_pieces for t in tasks}, [job.seed_id], job.limits)
        calls = {n: p.prepare.remote(job.job_id, tasks, job.dest, job.budget)
                 for n, p in job.peers.items()}
        for node, call in calls.items():
            try:
                have: dict[str, list[int]] = await call
            except Exception as exc:
                job.node_error[node] = _describe(exc)
                continue
            wants = [t.task_id for t in tasks if len(have.get(t.task_id, ())) < t.num_pieces]
            state.add_peer(node, wants)
            for task_id, indices in have.items():
                for index in indices:
                    state.add_holding(node, (task_id, index))
            job.node_bytes[node] = sum(job.tasks[t].size for t in have
                                       if len(have[t]) == job.tasks[t].num_pieces)
            if state.done(node):
                job.node_done[node] = time.monotonic() - job.started
        job.state = state

    async def _drive(self, job: _Job) -> None:
        state = job.state
        assert state is not None
        pending: dict[asyncio.Future[Any], Assignment] = {}
        while True:
            for a in decide(state):
                state.start(a)
                pending[asyncio.ensure_future(self._issue(job, a))] = a
            if not pending:
                break
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                self._settle(job, pending.pop(fut), fut)
            if job.error is not None:
                for fut in pending:
                    fut.cancel()
                return
            self._release_seed_pieces(job)
        for node in job.peers:
            if node not in job.node_done and node not in job.node_error:
                job.node_error[node] = "some pieces had no holder left and the origin " \
                                       "could not supply them"

    async def _issue(self, job: _Job, a: Assignment) -> Any:
        if a.source == ORIGIN:
            return await job.seed.fetch.remote(*a.piece)
        source = job.seed if a.source == job.seed_id else job.peers[a.source]
        crc = job.crc.get(a.piece)
        return await job.peers[a.peer].pull.remote(a.piece[0], a.piece[1], crc, source)

    def _settle(self, job: _Job, a: Assignment, fut: asyncio.Future[Any]) -> None:
        """Fold one finished call into the state."""
        state = job.state
        assert state is not None
        try:
            result = fut.result()
        except Exception as exc:
            self._failed(job, a, exc)
            return
        if a.source == ORIGIN:
            job.crc[a.piece] = result[0]
            job.origin_times.append((time.time(), *a.piece))
            state.finish(a)
            return
        if result.get("source_lost"):
            if a.source != job.seed_id:
                job.node_error.setdefault(a.source, f"node lost ({result.get('error')})")
            state.remove_holder(a.source)
            return
        job.crc.setdefault(a.piece, result["crc"])
        state.finish(a)
        nbytes = result["bytes"]
        now = time.monotonic() - job.started
        job.received.append((time.time(), a.peer, a.piece[0], a.piece[1]))
        job.served[a.source] = job.served.get(a.source, 0) + nbytes
        job.node_received[a.peer] = job.node_received.get(a.peer, 0) + nbytes
        if a.source != job.seed_id:
            job.p2p_bytes += nbytes
        if result["file_done"]:
            job.node_bytes[a.peer] = job.node_bytes.get(a.peer, 0) + job.tasks[a.piece[0]].size
        if state.done(a.peer) and a.peer not in job.node_done:
            job.node_done[a.peer] = now

    def _failed(self, job: _Job, a: Assignment, exc: BaseException) -> None:
        state = job.state
        assert state is not None
        cause = getattr(exc, "cause", None) or exc
        if a.source == ORIGIN:
            # The seed retried with backoff already: the origin is not delivering.
            job.error = _describe(cause)
            return
        if isinstance(exc, ray.exceptions.RayActorError):
            job.node_error.setdefault(a.peer, f"node lost ({type(exc).__name__})")
            state.remove_holder(a.peer)
            return
        count = job.failures[a.piece] = job.failures.get(a.piece, 0) + 1
        if a in state.in_flight():
            state.fail(a)
        if count >= MAX_PIECE_FAILURES:
            job.node_error.setdefault(a.peer, _describe(cause))
            state.remove_holder(a.peer)

    def _release_seed_pieces(self, job: _Job) -> None:
        """Let the seed drop pieces enough peers hold (never one it is still sending)."""
        state = job.state
        assert state is not None
        busy = {a.piece for a in state.in_flight() if a.source == job.seed_id}
        release = []
        for piece in list(job.crc):
            holders = state.holders(piece)
            if job.seed_id in holders and piece not in busy and \
                    len(holders) - 1 >= min(SEED_COPIES, len(job.peers)):
                state.drop_holding(job.seed_id, piece)
                release.append(piece)
        if release:
            job.seed.release.remote(release)

    async def _finish(self, job: _Job) -> None:
        try:
            stats = await job.seed.stats.remote()
        except Exception:
            stats = {"origin_bytes": 0, "origin_requests": 0}
        for node, peer in job.peers.items():
            try:
                await peer.finish_job.remote(job.job_id)
            except Exception as exc:
                job.node_error.setdefault(node, _describe(exc))
        nodes = []
        for node in job.peers:
            ok = node in job.node_done and node not in job.node_error and job.error is None
            nodes.append(NodeReport(
                node_id=node,
                path=job.dest,
                bytes=job.node_bytes.get(node, 0),
                seconds=round(job.node_done.get(node, time.monotonic() - job.started), 3),
                ok=ok,
                error=None if ok else (job.node_error.get(node) or job.error),
            ))
        job.report = Report(
            url=job.plan.url,
            commit=job.plan.commit,
            files=len(job.plan.files),
            bytes=job.plan.total_bytes,
            origin_bytes=stats["origin_bytes"],
            origin_requests=stats["origin_requests"],
            p2p_bytes=job.p2p_bytes,
            seconds=round(time.monotonic() - job.started, 3),
            nodes=nodes,
            served={("seed" if h == job.seed_id else h): b for h, b in job.served.items()},
            job_id=job.job_id,
        )


def _describe(exc: BaseException) -> str:
    """A one-line reason, without a remote traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
