"""Nodes joining a job: the target peers prepare (and say what they hold), peers
on other nodes offer what their caches hold; both go into the job's plan."""

from __future__ import annotations

import asyncio
import time

import ray

from raydf.cluster.handles import PeerHandle
from raydf.cluster.job import Job
from raydf.cluster.placement import alive_nodes
from raydf.cluster.protocol import PeerJoin
from raydf.cluster.topology import place_nodes

__all__ = ["NODE_DEATH_WAIT", "enlist_holders", "prepare"]

NODE_DEATH_WAIT = 45.0  # Ray's health checks mark a dead node within ~30 s


async def enlist_holders(job: Job, epoch: str) -> None:
    """Let peers on non-target nodes serve what their caches already have."""
    tasks = list(job.tasks.values())
    state = job.state
    assert state is not None
    join = PeerJoin(job.job_id, tuple(tasks), epoch=epoch)
    calls = {n: h.offer(join) for n, h in job.holders.items()}
    for node, call in calls.items():
        try:
            have = await call
        except Exception:  # a node that cannot serve is simply not a holder
            job.holders.pop(node, None)
            continue
        for task_id, indices in have.pieces.items():
            for index in indices:
                state.add_holding(node, (task_id, index))


async def prepare(job: Job, peers: dict[str, PeerHandle], epoch: str) -> None:
    """Join ``peers`` to ``job``: each says what it has; the plan adds what it wants."""
    tasks = list(job.tasks.values())
    state = job.state
    assert state is not None
    place_nodes(state, job.topology_label)  # joiners may be new nodes
    join = PeerJoin(job.job_id, tuple(tasks), job.dest, job.budget, tuple(job.aux),
                    epoch)
    calls = {n: p.prepare(join) for n, p in peers.items()}
    for node, call in calls.items():
        try:
            holdings = await call
        except Exception as exc:
            if await _node_left(node, exc):
                job.skip_node(node, "left the cluster")
                continue
            job.fail_node(node, exc)
            continue
        have = holdings.pieces
        wants = [t.task_id for t in tasks if not holdings.complete(t)]
        state.add_peer(node, wants)
        for task_id, indices in have.items():
            for index in indices:
                state.add_holding(node, (task_id, index))
        job.node_bytes[node] = sum(job.tasks[t].size for t in have
                                   if len(have[t]) == job.tasks[t].num_pieces)
        if state.done(node):
            job.complete_node(node)


async def _node_left(node: str, exc: BaseException) -> bool:
    """Whether a peer call failed because its node is gone (the cluster marks a
    dead node within ``NODE_DEATH_WAIT``; until then it may look alive)."""
    if not isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        return False
    deadline = time.monotonic() + NODE_DEATH_WAIT
    while True:
        if node not in {n["NodeID"] for n in alive_nodes()}:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
