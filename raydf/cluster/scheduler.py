"""SchedulerActor: one per cluster (detached, named, namespace ``raydf``).

It keeps every job's :class:`~raydf.policy.PlanState`, asks the pure policy
what to start next, and only then issues the ``.remote()`` calls the policy
returned (decide first, then do I/O). It never touches bytes: seeds and peers
move pieces through the object store; the scheduler moves decisions.
An asyncio actor; running a job is :func:`raydf.cluster.driving.drive`:
one awaited call per origin fetch and per batch of pulls into one peer.

**Sharing.** Callers asking for the same thing at once (same URL, revision,
filters, destination and token) share one job: the first *claims* the
fingerprint and starts the job; the others wait for that and *join*, adding their
nodes to the running job. So N Serve replicas calling ``raydf.get`` together
cost one listing and one origin read, not N.

**Seeds.** The scheduler makes every seed (so seeds die with it) and keeps
one started in advance (:class:`~raydf.cluster.seed_pool.SeedPool`), handed
to the next caller (:meth:`new_seed`). The caller gives it the job's token
and starts the job with it (:meth:`start`): the scheduler lists through it,
plans, and kills the seed when the job ends, so a seed outlives its caller
for as long as joiners need it, and no longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from typing import Any

import ray

from raydf.cluster.driving import drive
from raydf.cluster.handles import PeerHandle, SeedHandle
from raydf.cluster.job import Job, describe
from raydf.cluster.joining import enlist_holders, prepare
from raydf.cluster.metrics import log_event, metrics
from raydf.cluster.placement import seed_options
from raydf.cluster.planning import plan_job
from raydf.cluster.protocol import (
    JobRequest,
    JobSpec,
    JobStatus,
)
from raydf.cluster.seed import SeedActor
from raydf.cluster.seed_pool import SeedPool
from raydf.cluster.spec import TaskSpec
from raydf.cluster.topology import seed_zone
from raydf.cluster.writers import Writers
from raydf.errors import RaydfError, unwrap
from raydf.plan import RepoPlan
from raydf.policy import PlanState
from raydf.report import Report
from raydf.usage import RepoUsage, UsageBook

__all__ = ["SchedulerActor"]

KEEP_FINISHED_JOBS = 16
CLAIM_TIMEOUT = 300.0  # a leader that never submits is presumed gone
# A caller renews its lease with every status poll (twice a second); one that
# stays silent this long is gone (kill -9, `ray job stop`, a dead replica) and
# its nodes leave the job, unless another live caller waits for them.
CALLER_LEASE = 10.0
LEASE_CHECK_EVERY = 1.0
# A caller that missed a job for the same request by this little (it ended as
# the caller came to join) reuses that job's listing: one listing for callers
# that arrive together, however the timing falls.
RELIST_AFTER = 10.0


class SchedulerActor:
    """Plain class; made remote (detached, named) by :mod:`raydf.cluster.service`."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, str] = {}  # fingerprint -> job id
        self._claims: dict[str, asyncio.Event] = {}  # fingerprints being set up
        self._writers = Writers()
        self._listed: dict[str, tuple[float, RepoPlan]] = {}  # fingerprint -> a finished job's
        self._planning: dict[str, bool] = {}  # job being planned -> cancelled meanwhile
        # This incarnation: peers drop jobs of an earlier one (it died mid-job).
        self.epoch = uuid.uuid4().hex
        self._lease_watch: asyncio.Task[None] | None = None
        self._seeds = SeedPool(self._spawn_seed)
        self._usage = UsageBook()  # which repos callers ask for (raydf warm --auto)

    def __repr__(self) -> str:
        active = [j for j in self._jobs.values() if not j.closed]
        snaps = [j.state.snapshot() for j in active if j.state is not None]
        done = sum(s["pieces_done"] for s in snaps)
        total = sum(s["pieces_total"] for s in snaps)
        flight = sum(s["in_flight"] for s in snaps)
        tasks = sum(len(j.tasks) for j in active)
        peers = len({p for j in active for p in j.peers})
        return (f"<Scheduler {tasks} tasks, pieces {done}/{total}, {flight} in flight | "
                f"{peers} peers>")

    # -- sharing ---------------------------------------------------------

    async def claim(self, fingerprint: str, dest: str = "", nodes: list[str] | None = None,
                    url: str = "") -> str | None:
        """The running job to join for ``fingerprint``, or None: the caller leads.

        A leader must then :meth:`submit` (with the fingerprint) or :meth:`release`.
        ``dest`` (with the target ``nodes``): the destination the job writes; a
        different request (another revision, token, filter) into a destination
        that a job is writing on any of the same nodes is refused
        (:class:`~raydf.errors.DestinationBusy`): one destination, one writer, never a mix.
        """
        while True:
            job_id = self._running.get(fingerprint)
            if job_id is not None:
                running = self._jobs[job_id]
                if not running.ending or running.runner is None:
                    return job_id
                # It is closing: joining it now would be too late; wait for it to
                # close, then lead a new job (its nodes' caches serve that one).
                await asyncio.shield(running.runner)
                continue
            if dest:
                self._writers.check(fingerprint, dest, frozenset(nodes or ()))
            pending = self._claims.get(fingerprint)
            if pending is None:
                self._claims[fingerprint] = asyncio.Event()
                if dest:
                    self._writers.add(fingerprint, dest, frozenset(nodes or ()), url)
                return None
            try:
                await asyncio.wait_for(pending.wait(), timeout=CLAIM_TIMEOUT)
            except asyncio.TimeoutError:
                if self._claims.get(fingerprint) is pending:
                    del self._claims[fingerprint]
                    self._writers.drop(fingerprint)

    def release(self, fingerprint: str, *, keep_writer: bool = False) -> None:
        """A leader gave up before submitting: let the next caller lead."""
        event = self._claims.pop(fingerprint, None)
        if event is not None:
            event.set()
        if not keep_writer:
            self._writers.drop(fingerprint)

    async def join(self, job_id: str, peers: dict[str, PeerHandle], caller: str = "",
                   count: bool = True) -> bool:
        """Add nodes to a running job; False if it is ending or closed (claim again).
        ``count``: the caller counts as a request in the usage book."""
        job = self._jobs.get(job_id)
        if job is None or job.closed or job.ending or job.state is None:
            return False
        if count:
            self._usage.joined(job_id, time.time())
        if caller:
            job.renew(caller, list(peers))
        fresh = {n: p for n, p in peers.items() if n not in job.peers}
        job.peers.update(fresh)
        self._writers.add_nodes(job.fingerprint, frozenset(fresh))
        for node in fresh:
            job.holders.pop(node, None)  # now a receiver too
        # The job must not end while its new nodes are being prepared (they
        # would be failed as "no holder left" by a run that never saw them).
        job.joining += 1
        try:
            await prepare(job, fresh, self.epoch)
        finally:
            job.joining -= 1
            job.wake.set()
        return True

    # -- seeds -----------------------------------------------------------

    async def new_seed(self, fetches: int) -> SeedHandle:
        """A seed with no request yet, for a caller's job (``fetches`` origin reads
        at once); see :class:`~raydf.cluster.seed_pool.SeedPool`."""
        return self._seeds.hand_out(fetches)

    def current_epoch(self) -> str:
        """This incarnation's id (peers drop jobs of an earlier, dead one)."""
        return self.epoch

    def standby_seed(self) -> SeedHandle | None:
        """The seed the next job gets (starting, or started); None if there is none."""
        return self._seeds.standby

    @staticmethod
    def _spawn_seed(fetches: int) -> SeedHandle:
        return SeedHandle(ray.remote(SeedActor).options(**seed_options(fetches)).remote())

    # -- jobs ------------------------------------------------------------

    async def start(self, ask: JobRequest, seed: SeedHandle, peers: dict[str, PeerHandle],
                    holders: dict[str, PeerHandle] | None = None) -> str:
        """Plan and start the job ``ask`` on ``peers``, taking over ``seed`` (which
        holds the caller's token); returns the job's id once it runs.

        The caller claimed ``ask.fingerprint`` (see :meth:`claim`). The seed lists
        the repo (and the hub judges the token) here; a listing that fails kills
        the seed, lets the next caller lead, and raises the raydf error. A
        :meth:`cancel` that came while planning stops the job before it starts.
        """
        self._seeds.taken(seed)
        self._planning[ask.job_id] = False
        listed = self._listed.get(ask.fingerprint or "")
        recorded = self._usage.listing(ask.request) if ask.auto else None
        try:
            if recorded is not None:  # a public repo at a recorded commit: no hub request
                spec = plan_job(ask, recorded)
                await seed.adopt(recorded, list(spec.tasks))
            elif listed is not None and time.monotonic() - listed[0] < RELIST_AFTER:
                spec = plan_job(ask, listed[1])  # the same token was judged for it
                await seed.adopt(listed[1], list(spec.tasks))
            else:
                spec = plan_job(ask, await seed.plan())
                await seed.add_tasks(list(spec.tasks))
            zone = await seed_zone(ask.topology_label, seed)
        except BaseException as exc:
            self._end_planning(ask, seed)
            raise unwrap(exc) from None
        if self._planning.get(ask.job_id):
            self._end_planning(ask, seed)  # its caller cancelled: nothing starts
            return ask.job_id
        del self._planning[ask.job_id]
        self._usage.record(ask.job_id, ask.request, spec.plan, time.time(), count=not ask.auto)
        return await self.submit(spec, seed, peers, holders, zone)

    def _end_planning(self, ask: JobRequest, seed: SeedHandle) -> None:
        """A job that will not start: its seed (and token) go, the next caller leads."""
        self._planning.pop(ask.job_id, None)
        seed.kill()
        if ask.fingerprint is not None:
            self.release(ask.fingerprint)

    async def submit(self, spec: JobSpec, seed: SeedHandle, peers: dict[str, PeerHandle],
                     holders: dict[str, PeerHandle] | None = None,
                     zone: str | None = None) -> str:
        """Start the job ``spec`` (taking over ``seed``) on ``peers``; returns its id at once.

        ``holders``: peers on other nodes that may serve from their caches.
        ``spec.job_id``: the caller's own id for it, so it can cancel a submit it
        was interrupted in. ``spec.caller``: the caller's lease, renewed by its
        :meth:`poll` calls (see ``CALLER_LEASE``). ``zone``: the seed's zone, where
        origin bytes enter (None: no zones; see ``spec.topology_label``).
        """
        job_id = spec.job_id or uuid.uuid4().hex[:12]
        fingerprint = spec.fingerprint
        largest = max((t.piece(0).length for t in spec.tasks), default=0)
        job = Job(job_id, spec.plan, {t.task_id: t for t in spec.tasks}, f"seed-{job_id}", seed,
                  dict(peers), spec.dest, spec.limits.for_largest_piece(largest),
                  spec.memory_budget, fingerprint)
        job.holders = {n: h for n, h in (holders or {}).items() if n not in peers}
        job.aux = list(spec.aux)
        job.topology_label = spec.topology_label
        self._jobs[job_id] = job
        if spec.caller:
            job.renew(spec.caller, list(peers))
        job.state = PlanState({t.task_id: t.num_pieces for t in spec.tasks}, [job.seed_id],
                              job.limits, zones=None if zone is None else {job.seed_id: zone})
        if fingerprint is not None:
            self._running[fingerprint] = job_id
            self.release(fingerprint, keep_writer=True)
        if self._lease_watch is None or self._lease_watch.done():
            self._lease_watch = asyncio.get_running_loop().create_task(self._watch_leases())
        plan = spec.plan
        log_event("job_started", job=job_id, url=plan.url, commit=plan.commit[:12],
                  files=len(plan.files), bytes=plan.total_bytes, nodes=len(peers))
        job.runner = asyncio.get_running_loop().create_task(self._run(job))
        self._forget_old_jobs()
        return job_id

    async def wait(self, job_id: str, nodes: list[str] | None = None) -> Report:
        """The report for ``nodes`` (default: all) once each finished or failed."""
        job = self._jobs[job_id]
        wanted = list(job.peers) if nodes is None else nodes
        await asyncio.gather(*(job.node_event(n).wait() for n in wanted))
        everyone = all(job.node_event(n).is_set() for n in job.peers)
        if everyone and job.runner is not None:
            # The job is ending: report after its partial files are cleaned up.
            await asyncio.shield(job.runner)
        if not job.closed:
            await self._refresh_seed_requests(job)
        return job.report(wanted)

    async def poll(self, job_id: str, caller: str = "", nodes: list[str] | None = None,
                   seen: int = -1, timeout: float = 0.0) -> JobStatus:
        """Progress of one job for ``nodes`` (default: all), a long-poll: it answers
        once the job's version is past ``seen`` (a node completed or failed, the
        seed was lost or replaced, the job closed) or after ``timeout`` s.

        ``caller`` (waiting for ``nodes``) renews that caller's lease."""
        job = self._jobs[job_id]
        if caller and not job.closed:
            job.renew(caller, nodes or [])
        await job.wait_change(seen, timeout)
        if caller and not job.closed:
            job.renew(caller, nodes or [])
        return self._status(job, nodes)

    def _status(self, job: Job, nodes: list[str] | None, plan: bool = False) -> JobStatus:
        wanted = list(job.peers) if nodes is None else nodes
        return JobStatus(
            job_id=job.job_id,
            url=job.plan.url,
            bytes=job.plan.total_bytes,
            nodes={n: job.node_bytes.get(n, 0) for n in wanted if n in job.peers},
            received={n: job.node_received[n] for n in wanted if n in job.node_received},
            done=job.closed,
            needs_seed=job.seed is None and not job.closed,
            version=job.version,
            plan=job.state.snapshot() if plan and job.state else None,
        )

    def job_plan(self, job_id: str) -> tuple[RepoPlan, list[TaskSpec]]:
        """A job's plan and tasks (what a replacement seed adopts)."""
        job = self._jobs[job_id]
        return job.plan, list(job.tasks.values())

    def timeline(self, job_id: str) -> dict[str, list[tuple[Any, ...]]]:
        """When pieces moved: ``origin`` ``(time, task, index)`` as the seed got each
        piece, ``received`` ``(time, node, task, index)`` as a peer got one."""
        job = self._jobs[job_id]
        return {"origin": list(job.origin_times), "received": list(job.received)}

    def usage(self, top: int) -> list[RepoUsage]:
        """The ``top`` most requested repos (see :mod:`raydf.usage`)."""
        return self._usage.top(top)

    def snapshot(self) -> dict[str, Any]:
        return {"jobs": {j: dataclasses.asdict(self._status(job, None, plan=True))
                         for j, job in self._jobs.items()}, "repr": repr(self)}

    def _forget_old_jobs(self) -> None:
        finished = [j for j, job in self._jobs.items() if job.closed]
        for job_id in finished[:-KEEP_FINISHED_JOBS]:
            del self._jobs[job_id]

    # -- running a job ---------------------------------------------------

    async def _run(self, job: Job) -> None:
        try:
            await prepare(job, dict(job.peers), self.epoch)
            await enlist_holders(job, self.epoch)
            await drive(job)
        except RaydfError as err:
            job.error, job.error_type = str(err), type(err).__name__
        except Exception as exc:  # a bug or a Ray failure: report it, never hang
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            await self._close(job)

    async def add_seed(self, job_id: str, seed: SeedHandle) -> bool:
        """A caller's replacement for a lost seed (only callers hold the token):
        it takes over the job's plan, listing nothing again."""
        self._seeds.taken(seed)
        job = self._jobs.get(job_id)
        zone = None
        if job is not None and not job.closed and job.seed is None:
            await seed.adopt(job.plan, list(job.tasks.values()))
            zone = await seed_zone(job.topology_label, seed)
        if job is None or job.closed or job.seed is not None or job.state is None:
            seed.kill()
            return False
        job.seed_id = f"seed-{job_id}-{job.seed_losses}"
        job.seed = seed
        if zone is not None:
            job.state.place(job.seed_id, zone)
        job.state.add_seed(job.seed_id)
        job.changed()
        job.wake.set()
        return True

    async def cancel(self, job_id: str, nodes: list[str], caller: str = "") -> None:
        """A caller gave up on ``nodes`` (Ctrl-C, SIGTERM, or its lease ran out):
        those no other live caller waits for leave the job; once no node is left
        waiting, the job stops (what nodes received is kept for a re-run)."""
        job = self._jobs.get(job_id)
        if job is None:
            if job_id in self._planning:
                self._planning[job_id] = True  # still being planned: see start
            return
        if job.closed or job.state is None:
            return
        job.leases.pop(caller, None)
        still_wanted = {n for wanted, _ in job.leases.values() for n in wanted}
        leaving = {n for n in set(nodes) - still_wanted if not job.node_event(n).is_set()}
        for node in leaving:
            job.fail_node(node, "cancelled by the caller", 130)
        if all(job.node_event(n).is_set() for n in job.peers):
            # Nobody waits any more: no more origin reads; pieces already read
            # still reach the nodes' caches (no hub cost, nothing placed at the
            # destination), so a re-run does not pay for them again. Then the
            # job closes (within DRAIN_SECONDS).
            await asyncio.gather(*(p.cache_only(job_id) for p in job.peers.values()),
                                 return_exceptions=True)
            job.draining = time.monotonic()
        else:
            for node in leaving:
                job.state.remove_holder(node)
        job.wake.set()

    async def _refresh_seed_requests(self, job: Job) -> None:
        """Ask the live seed how many origin requests it made (listing included)."""
        if job.seed is None:
            return
        try:
            stats = await job.seed.counts()
        except Exception:  # the seed is gone: keep what it last reported
            return
        job.seed_requests[job.seed_id] = stats.origin_requests
        job.seed_hub_requests[job.seed_id] = stats.hub_requests

    async def _watch_leases(self) -> None:
        """Cancel the nodes of callers that stopped polling (see ``CALLER_LEASE``)."""
        while any(not j.closed for j in self._jobs.values()):
            await asyncio.sleep(LEASE_CHECK_EVERY)
            now = time.monotonic()
            for job in [j for j in self._jobs.values() if not j.closed]:
                for caller, (nodes, renewed) in list(job.leases.items()):
                    if now - renewed > CALLER_LEASE:
                        log_event("caller_gone", job=job.job_id, caller=caller[:8],
                                  nodes=len(nodes))
                        await self.cancel(job.job_id, sorted(nodes), caller)

    async def _close(self, job: Job) -> None:
        job.closed = True
        job.changed()
        if job.fingerprint is not None:
            self._writers.drop(job.fingerprint)
        metrics().active_transfers.set(0)
        log_event("job_closed", job=job.job_id, url=job.plan.url, commit=job.plan.commit[:12],
                  nodes=len(job.peers), failed=len(job.node_error),
                  origin_bytes=job.origin_bytes, p2p_bytes=job.p2p_bytes,
                  error=(job.error or "none").replace(" ", "_")[:120])
        if job.fingerprint is not None and self._running.get(job.fingerprint) == job.job_id:
            del self._running[job.fingerprint]
        now = time.monotonic()
        self._listed = {f: (t, p) for f, (t, p) in self._listed.items() if now - t < RELIST_AFTER}
        if job.fingerprint is not None and job.error is None:
            self._listed[job.fingerprint] = (now, job.plan)
        await self._refresh_seed_requests(job)
        if job.seed is not None:
            job.seed.kill()
        self._seeds.restock()
        for node, peer in job.peers.items():
            try:
                await peer.finish_job(job.job_id, list(job.corrupt))
            except Exception as exc:
                job.fail_node(node, describe(exc))
        for holder in job.holders.values():
            with contextlib.suppress(Exception):
                await holder.finish_job(job.job_id)
        for node in job.peers:
            if not job.node_event(node).is_set():
                job.fail_node(node, job.error or "the job ended before this node completed")
