"""Which piece moves next, and from whom: the scheduling policy of a fan-out.

A fan-out sends *tasks* (one file each) cut into *pieces* to *peers* (one per
node). Only *seeds* read the origin: a seed fetches a piece once and holds it.
Peers pull pieces from *holders* (a seed, or a peer that has the piece) and
become holders in turn. :class:`PlanState` is the scheduler's bookkeeping,
:func:`decide` says what to start next: plain Python, no Ray, no I/O.

1. *Origin once.* A piece comes from the origin only when no holder has it,
   nothing is moving it and some peer needs it; in (task, index) order, so
   that peers stream piece *k* while a seed fetches *k+1*; spread over the
   seeds, at most ``origin_fetches`` in flight each.
2. *Rarest first.* A peer with a free download slot takes the pieces with
   the fewest copies (held plus moving; ties: task, index), so that peers
   deciding together take different pieces and trade them (BitTorrent). The
   source is a holder with a free upload slot: a peer before a seed (the
   seed must not be the hot spot), then the least loaded. A seed has more
   slots than a peer (``seed_uploads``), but the extra ones carry only first
   copies, pieces no peer has or is getting: it keeps pace with its own
   origin reads (one peer alone would otherwise wait on it) and still
   serves few copies of any piece. A holder with a
   free slot serves its rarest piece to the peer that misses the most: every
   peer then holds something others lack, all uploads stay busy and slow
   peers keep up. (Serving whichever peer came first starved the others and
   idled their uploads: 1.8x the lower bound in ``benchmarks/simulate.py``.)
3. *Losses.* A lost holder's pieces come from the remaining holders, and from
   the origin only when none remains. A *distrusted* holder (its bytes failed
   a CRC, or it keeps failing; see :mod:`raydf.blame`) is lost as a source
   only: it is never chosen to send again, and still receives what it wants.

4. *Topology.* Nodes may sit in zones (from a Ray node label; see
   :meth:`PlanState.place`). A peer takes a piece from a holder in its own
   zone; a piece crosses into a zone only while no holder there has it and
   no copy of it is coming into it, so that about one copy of each piece
   enters each zone. A peer that has had nothing in flight for
   ``Limits.far_after`` seconds while its zone holds a piece it needs (busy
   holders) takes it from an idle holder in another zone: a zone never stalls
   on its own holders (the caller keeps the time: :meth:`PlanState.clock`).
   A seed keeps a piece until every zone that needs it has a copy
   (:meth:`PlanState.covered`). Without zones every node is in one zone and
   this rule changes nothing.

Cost: mutations note what they may have made possible (a slot back from full,
a new holding, a new need) and :func:`decide` looks only at that: once its
last answer was started, no free download slot fits a free upload slot. The
notes are forgotten at the first change after a :func:`decide`, except for
proposals left unstarted.
"""

from __future__ import annotations

from raydf.policy.limits import (
    ORIGIN,
    SLOT_BYTES,
    SMALL_PIECES_PER_FETCH,
    SMALL_PIECES_PER_SLOT,
    Assignment,
    Limits,
    PieceId,
)
from raydf.policy.state import PlanState

__all__ = ["ORIGIN", "SLOT_BYTES", "SMALL_PIECES_PER_FETCH", "SMALL_PIECES_PER_SLOT",
           "Assignment", "Limits", "PieceId", "PlanState", "decide"]


def decide(state: PlanState) -> list[Assignment]:
    """What to start now; the caller calls ``state.start(a)`` for each one it issues.

    Does not change the plan, and two calls with no change between them
    return the same list. Follows the rules in the module docstring: never
    exceeds the :class:`Limits`, never sends a peer a piece it has or is
    receiving, reads the origin only for pieces nobody holds or is moving.
    """
    return state.propose()
