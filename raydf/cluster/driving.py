"""Driving one job: issue what the policy decides, fold what comes back into the plan.

The scheduler's main loop for a running job (:func:`drive`): each round it
asks the pure policy (:func:`raydf.policy.decide`) what to start, sends one
call per receiving peer with everything the round gives it (a
:class:`~raydf.cluster.protocol.PullBatch`) and one per origin fetch, and
folds each finished call's outcomes into the job (:func:`settle`): a
delivery, or a named non-delivery (a lost source, a stale piece, a corrupt
or unplaced file, a failed transfer the blame rules judge).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import ray

from raydf.blame import Fault, Verdict
from raydf.cluster.job import Job, describe, error_type
from raydf.cluster.metrics import metrics
from raydf.cluster.protocol import (
    INLINE_PIECE_BYTES,
    Fetched,
    FileCorrupt,
    FileUnplaced,
    Pull,
    PullBatch,
    PullFailed,
    PullOutcome,
    SourceLost,
    Stale,
)
from raydf.cluster.trust import apply_blame, apply_heals, check_senders, fault_of
from raydf.errors import IntegrityError
from raydf.policy import ORIGIN, Assignment, decide

__all__ = ["DRAIN_SECONDS", "SEEDLESS_TIMEOUT", "SEED_COPIES", "drive", "lose_seed"]

SEED_COPIES = 2  # peers holding a piece before the seed lets it go
RELEASE_BATCH = 64  # small pieces the seed is told to drop in one call (a large one: at once)
SEEDLESS_TIMEOUT = 600.0  # nothing moved for this long: give up rather than hang
DRAIN_SECONDS = 10.0  # a cancelled job hands what it already read to the nodes, this long at most

# What one awaited call carries: one origin fetch, or a batch of pulls into one
# peer (None: an assignment a heal took back, whose outcome is not wanted).
Calls = dict["asyncio.Future[Any]", list[Assignment | None]]


async def drive(job: Job) -> None:
    """Run ``job`` until every target node completed or failed, or the job failed."""
    state = job.state
    assert state is not None
    pending: Calls = {}
    finished: list[asyncio.Future[Any]] = []  # calls done, not yet folded in

    def done(fut: asyncio.Future[Any]) -> None:
        finished.append(fut)
        job.wake.set()

    in_flight = 0
    while True:
        job.wake.clear()
        pulls: dict[str, list[Assignment | None]] = defaultdict(list)
        starving = state.clock(time.monotonic())  # see rule 4 of raydf.policy
        for a in decide(state):
            if a.source == ORIGIN:
                if job.draining is not None:
                    continue  # cancelled: not one more byte from the hub
                state.start(a)
                fetch = asyncio.ensure_future(_fetch(job, a))
                fetch.add_done_callback(done)
                pending[fetch] = [a]
                in_flight += 1
            else:
                state.start(a)
                pulls[a.peer].append(a)
        # One call per receiver for everything this round gives it.
        for peer, batch in pulls.items():
            call = asyncio.ensure_future(_pull(job, peer, batch))
            call.add_done_callback(done)
            pending[call] = batch
            in_flight += len(batch)
        metrics().active_transfers.set(in_flight)
        drained = job.draining is not None and (
            not pending or time.monotonic() - job.draining > DRAIN_SECONDS)
        if drained:
            job.error = job.error or "cancelled by the caller"
            for fut in pending:
                fut.cancel()
            return
        if not pending and job.seed is not None and not job.joining:
            break
        # Woken by any finished call (``done``), a join, a new seed or a cancel:
        # waiting costs the same however many calls are in flight.
        if not finished:
            timeout = DRAIN_SECONDS if job.draining is not None else SEEDLESS_TIMEOUT
            # A peer that starves then (rule 4 of raydf.policy) is decided for again.
            starve = timeout if starving is None else max(starving - time.monotonic(), 0.0)
            try:
                await asyncio.wait_for(job.wake.wait(), min(timeout, starve))
            except asyncio.TimeoutError:
                if starve < timeout:
                    continue
                if job.draining is None:
                    job.error = "the seed was lost and no caller supplied a new one in time"
                    return
        ready, finished[:] = list(finished), []
        for fut in ready:
            if fut in pending:
                batch = pending.pop(fut)
                in_flight -= len(batch)
                _settle(job, batch, fut)
        if job.healed:
            await apply_heals(job, pending)
        if job.suspects:
            await check_senders(job, pending)
        if job.error is not None:
            for fut in pending:
                fut.cancel()
            return
        _release_seed_pieces(job)
    job.ending = True  # no more joiners: one now would never be driven
    for node in job.peers:
        if not job.node_event(node).is_set():
            job.fail_node(node, "some pieces had no holder left and the origin could not "
                                "supply them")


async def _fetch(job: Job, a: Assignment) -> Fetched:
    assert job.seed is not None
    return await job.seed.fetch(*a.piece)


async def _pull(job: Job, peer: str, batch: list[Assignment | None]
                ) -> list[PullOutcome]:
    pulls, lenders = [], {}
    for a in batch:
        assert a is not None
        pulls.append(Pull(a.piece[0], a.piece[1], job.crc.get(a.piece), a.source))
        if (peer, a.source) not in job.introduced:
            lenders[a.source] = job.seed if a.source == job.seed_id else job.actor(a.source)
    outcomes = await job.peers[peer].pull_batch(PullBatch(job.job_id, tuple(pulls), lenders))
    # Told for sure now: later batches (issued after this reply) leave the handle out.
    job.introduced.update((peer, source) for source in lenders)
    return outcomes


def _settle(job: Job, batch: list[Assignment | None], fut: asyncio.Future[Any]
            ) -> None:
    """Fold one finished call (an origin fetch, or a batch of pulls) into the state."""
    job.moved.update(a.piece for a in batch if a is not None and a.source != ORIGIN)
    try:
        results = fut.result()
    except Exception as exc:  # the callee died or could not be reached
        for a in batch:
            if a is not None:
                _failed(job, a, exc)
        return
    if isinstance(results, Fetched):
        assert batch[0] is not None
        _fetched(job, batch[0], results)
        return
    for a, outcome in zip(batch, results, strict=True):
        if a is not None:
            _pulled(job, a, outcome)


def _fetched(job: Job, a: Assignment, result: Fetched) -> None:
    state = job.state
    assert state is not None
    if result.healed:
        job.healed.append((a.piece[0], result.healed))
    job.crc[a.piece] = result.crc
    job.seed_held.add(a.piece)
    job.origin_bytes += result.origin_bytes
    job.seed_requests[a.peer] = result.origin_requests
    job.seed_hub_requests[a.peer] = result.hub_requests
    job.origin_times.append((time.time(), *a.piece))
    state.finish(a)
    job.blame.delivered(a.peer)


def _pulled(job: Job, a: Assignment, result: PullOutcome) -> None:
    """Fold one pull's outcome into the state."""
    state = job.state
    assert state is not None
    if a.peer in job.node_error and job.draining is None:
        return  # the receiver already failed and left the plan
    if isinstance(result, Stale):  # it went into an assembly a heal replaced: again
        state.fail(a)
        return
    if isinstance(result, SourceLost):
        if a.source == job.seed_id:
            lose_seed(job)
        else:
            job.fail_node(a.source, f"node lost ({result.error})")
            state.remove_holder(a.source)
            state.fail(a)
        return
    if isinstance(result, PullFailed):
        if a.peer in job.node_error:
            return
        state.fail(a)
        verdict = job.blame.failed(a.source, a.peer, a.piece, result.fault)
        _blamed(job, a, verdict, result.reason)
        return
    if isinstance(result, (FileCorrupt, FileUnplaced)):
        state.finish(a)
        job.blame.delivered(a.source)
        senders = job.senders.setdefault((a.peer, a.piece[0]), set())
        senders.add(a.source)
        if isinstance(result, FileCorrupt) and job.seed_id not in senders:
            # Every piece came from peers' verified copies: one of them is bad.
            job.suspects.append((a.peer, a.piece[0], result.reason))
            return
        job.fail_node(a.peer, result.reason, 4 if isinstance(result, FileCorrupt) else 5)
        state.remove_holder(a.peer)
        return
    if result.crc is not None:  # None: the peer had it already (another job brought it)
        job.crc.setdefault(a.piece, result.crc)
    state.finish(a)
    job.blame.delivered(a.source)
    job.senders.setdefault((a.peer, a.piece[0]), set()).add(a.source)
    job.record_transfer(a, result.bytes, result.file_done)
    if state.done(a.peer):
        job.complete_node(a.peer)


def _failed(job: Job, a: Assignment, exc: BaseException) -> None:
    state = job.state
    assert state is not None
    passing = isinstance(exc, ray.exceptions.ActorUnavailableError)
    if a.source == ORIGIN:  # the callee was the seed itself
        if passing:  # a hiccup, not a death: fetch again, the seed blamed
            state.fail(a)
            _blamed(job, a, job.blame.failed(a.peer, a.peer, a.piece, Fault.SENDER),
                         describe(exc))
            return
        if isinstance(exc, ray.exceptions.RayActorError):
            # The seed died: its pieces are gone, a caller supplies a new one.
            lose_seed(job)
            return
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, IntegrityError):
            # The origin kept sending bad bytes for this file, read again
            # already: nobody gets it, the other files still complete.
            state.fail(a)
            job.corrupt.setdefault(a.piece[0], str(cause))
            state.abandon(a.piece[0])
            for node in job.peers:
                if node not in job.node_error and state.done(node):
                    job.complete_node(node)  # reported failed, naming the file
            return
        # The seed retried with backoff already: the origin is not delivering.
        job.error, job.error_type = describe(exc), error_type(exc)
        return
    if a.peer in job.node_error:
        return
    if isinstance(exc, ray.exceptions.RayActorError) and not passing:
        job.fail_node(a.peer, f"node lost ({type(exc).__name__})")
        state.remove_holder(a.peer)
        return
    state.fail(a)
    verdict = job.blame.failed(a.source, a.peer, a.piece, fault_of(exc))
    _blamed(job, a, verdict, describe(exc))


def _blamed(job: Job, a: Assignment, verdict: Verdict, reason: str) -> None:
    apply_blame(job, a, verdict, reason, lose_seed)


def lose_seed(job: Job) -> None:
    state = job.state
    assert state is not None
    if job.seed is None:
        return
    job.seed_losses += 1
    job.seed_held.clear()
    job.unreleased.clear()
    state.remove_holder(job.seed_id)
    # Given up on (dead, or failing): kill it so its token and pieces go too.
    with contextlib.suppress(Exception):
        job.seed.kill()
    job.seed = None
    job.changed()


def _release_seed_pieces(job: Job) -> None:
    """Let the seed drop pieces enough peers hold (never one it is still sending).

    Runs after every round of finished calls, so it looks only at the pieces
    whose pulls ended since (a piece gains copies, or stops being sent, only
    then). The plan stops offering a piece from the seed at once; the seed is
    told in batches of small pieces, or at once for a large one."""
    state = job.state
    assert state is not None
    copies = min(SEED_COPIES, len(job.peers))
    moved, job.moved = job.moved, set()
    enough = [p for p in moved if p in job.seed_held and state.copies(p) - 1 >= copies
              and state.covered(p, job.seed_id)]
    if not enough:
        return
    busy = {a.piece for a in state.in_flight() if a.source == job.seed_id}
    large = False
    for piece in enough:
        if piece not in busy:
            state.drop_holding(job.seed_id, piece)
            job.seed_held.discard(piece)
            job.unreleased.append(piece)
            large = large or job.tasks[piece[0]].piece(piece[1]).length > INLINE_PIECE_BYTES
    if job.seed is not None and (large or len(job.unreleased) >= RELEASE_BATCH):
        job.seed.release(job.unreleased)
        job.unreleased = []
