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

__all__ = ["apply_blame", "apply_heals", "fault_of"]


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
        nodes = [n for n in job.peers if n not in job.node_error]
        calls = [job.peers[n].retake(job.job_id, task_id, crcs) for n in nodes]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for node, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                job.fail_node(node, describe(outcome))
                state.remove_holder(node)
        log_event("file_healed", job=job.job_id, task=task_id, pieces=len(crcs))


def fault_of(exc: BaseException) -> Fault:
    """Whose fault a failed pull was, from what the receiver raised."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, IntegrityError):
        return Fault.BAD_BYTES  # the sender's bytes failed the piece's CRC-32
    if isinstance(cause, SenderFailed):
        return Fault.SENDER
    return Fault.OTHER
