"""What the scheduler does about bad bytes: blame a sender, heal a file.

Kept apart from the scheduler's main loop (raydf.cluster.scheduler), which
calls these once the pure rules (raydf.blame, raydf.policy) have decided.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from raydf.blame import Fault, Verdict
from raydf.cluster.job import Job, describe
from raydf.cluster.metrics import log_event
from raydf.errors import IntegrityError, SenderFailed
from raydf.policy import ORIGIN, Assignment

__all__ = ["apply_blame", "apply_heals", "check_senders", "fault_of"]


def apply_blame(
    job: Job, a: Assignment, verdict: Verdict, reason: str, lose_seed: Callable[[Job], None],
) -> None:
    """Do what the blame rule says about one failed transfer (see raydf.blame)."""
    state = job.state
    assert state is not None
    sender = a.peer if a.source == ORIGIN else a.source
    if verdict.distrust_sender:
        log_event("sender_distrusted", job=job.job_id, sender=sender[:12],
                  reason=reason.replace(" ", "_")[:120])
        if sender == job.seed_id:
            lose_seed(job)  # killed; a caller supplies a new one
        else:
            state.distrust(sender)
    elif verdict.drop_piece:
        state.drop_holding(sender, a.piece)
        if sender == job.seed_id:
            job.seed_held.discard(a.piece)
    if verdict.fail_receiver:
        job.fail_node(a.peer, reason)
        state.remove_holder(a.peer)


async def apply_heals(job: Job, pending: dict[asyncio.Future[Any], list[Assignment | None]]
                      ) -> None:
    """The seed read a corrupt file again and holds the pieces that differ: every
    peer drops its copies of them (it assembles the file anew without them, see
    PeerActor.retake) before anyone is sent them again."""
    state = job.state
    assert state is not None
    while job.healed:
        task_id, crcs = job.healed.pop()
        pieces = [(task_id, i) for i in crcs]
        job.crc.update(zip(pieces, crcs.values(), strict=True))
        for batch in pending.values():
            for i, a in enumerate(batch):
                if (a is not None and a.source != ORIGIN and a.piece[0] == task_id
                        and a.piece[1] in crcs):
                    batch[i] = None  # carrying the bad bytes: its outcome is not wanted
        state.retake(pieces)
        if job.seed is not None:
            for piece in pieces:
                state.add_holding(job.seed_id, piece)
                job.seed_held.add(piece)
            # Held anew: a release the seed was not yet told of must not drop them.
            held_anew = set(pieces)
            job.unreleased = [p for p in job.unreleased if p not in held_anew]
        nodes = [n for n in job.peers if n not in job.node_error]
        calls = [job.peers[n].retake(job.job_id, task_id, crcs) for n in nodes]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for node, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                job.fail_node(node, describe(outcome))
                state.remove_holder(node)
        log_event("file_healed", job=job.job_id, task=task_id, pieces=len(crcs))


async def check_senders(job: Job, pending: dict[asyncio.Future[Any], list[Assignment | None]]
                        ) -> None:
    """A file assembled only from peers' verified copies failed its digest on a
    receiver: every node hashes its verified copy of it again. A node whose copy
    fails (bad below the file system) drops it: a bad sender, not an origin fault.
    Then every node but those with a good copy takes the file anew (what they
    assembled may hold the bad copy's bytes), from good copies or the origin. If
    every copy is good, the receiver itself is at fault and fails."""
    state = job.state
    assert state is not None
    while job.suspects:
        receiver, task_id, why = job.suspects.pop()
        spec = job.tasks[task_id]
        nodes = sorted({*job.peers, *job.holders} - {receiver} - set(job.node_error))
        outcomes = await asyncio.gather(
            *[job.actor(n).check_copy(job.job_id, spec) for n in nodes],
            return_exceptions=True)
        verdicts = dict(zip(nodes, outcomes, strict=True))
        bad = [n for n, v in verdicts.items() if v == "bad"]
        if not bad:
            if receiver not in job.node_error:
                job.fail_node(receiver, f"{why.split(';')[0]} on node {receiver[:8]}, though "
                              "the copies it came from verify; check that node's disk", 4)
                state.remove_holder(receiver)
            continue
        log_event("bad_copy", job=job.job_id, task=task_id, receiver=receiver[:12],
                  senders=",".join(n[:12] for n in bad))
        pieces = [(task_id, i) for i in range(spec.num_pieces)]
        for piece in pieces:
            job.crc.pop(piece, None)  # maybe a bad copy's: the next source's stand
        for batch in pending.values():
            for i, a in enumerate(batch):
                if a is not None and a.source != ORIGIN and a.piece[0] == task_id:
                    batch[i] = None  # into an assembly begun anew below: not wanted
        state.retake(pieces, keep=[n for n, v in verdicts.items() if v == "good"])
        for node in bad:
            if node in job.peers and node not in job.node_error:
                job.node_bytes[node] = job.node_bytes.get(node, 0) - spec.size
                state.add_peer(node, [task_id])  # it had it from its cache: now a want
                job.reopen_node(node)  # its placement of the file was taken back
        renewing = [n for n in {*job.peers} - set(job.node_error) if verdicts.get(n) != "good"]
        renewed = await asyncio.gather(*[job.actor(n).renew(spec) for n in renewing],
                                       return_exceptions=True)
        for node, outcome in zip(renewing, renewed, strict=True):
            if isinstance(outcome, BaseException):
                job.fail_node(node, describe(outcome))
                state.remove_holder(node)
        job.senders = {k: v for k, v in job.senders.items() if k[1] != task_id}


def fault_of(exc: BaseException) -> Fault:
    """Whose fault a failed pull was, from what the receiver raised."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, IntegrityError):
        return Fault.BAD_BYTES  # the sender's bytes failed the piece's CRC-32
    if isinstance(cause, SenderFailed):
        return Fault.SENDER
    return Fault.OTHER
