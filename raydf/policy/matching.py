"""One :func:`raydf.policy.decide`: which free download slots meet which free
upload slots, and which unheld pieces the seeds fetch (the rules are in
:mod:`raydf.policy`). Reads the indexes of a :class:`~raydf.policy.state.PlanState`
(this package's own bookkeeping) and changes nothing: what it chooses goes in a
:class:`Draft`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import TYPE_CHECKING

from raydf.policy.buckets import Buckets
from raydf.policy.limits import ORIGIN, Assignment

if TYPE_CHECKING:
    from raydf.policy.state import PlanState

__all__ = ["Draft", "propose", "rarest"]

_FEW = 32  # needers of a piece that taker() compares one by one


def propose(st: PlanState) -> list[Assignment]:
    """Everything to start now, given the changes noted since the last call."""
    draft = Draft(st)
    match_peers(st, draft)
    match_holders(st, draft)
    fetch_orphans(st, draft)
    return draft.out


def match_peers(st: PlanState, draft: Draft) -> None:
    """Peers that got a slot back or a new need take their rarest pieces, laggards first."""
    hungry = [p for p in st._dirty_peers if p in st._hungry]
    free = set(st._free_up)
    servable: set[int] | None = None  # what the holders in ``free`` hold
    filled = 0  # of draft.filled, taken out of ``free``
    for p in sorted(hungry, key=lambda p: (-st._hungry[p], p)):
        # Holders this draft filled cannot serve: once none is left, no peer
        # can take anything (stop, instead of scanning every peer's needs).
        if len(draft.filled) > filled:
            free -= draft.filled
            filled, servable = len(draft.filled), None
        if not free:
            break
        wanted = st._need[p]
        if 4 * len(free) < len(wanted):  # few free holders: only their pieces can come
            if servable is None:
                servable = set().union(*(st._holds[h] for h in free))
            wanted = wanted & servable
        slots = draft.down_free(p)
        left = _take(st, draft, p, wanted, slots, free, stalled=False)
        if left == slots and draft.zoned and p in st.zones.starved:
            # Its zone's holders have sent it nothing for long: idle ones elsewhere do.
            _take(st, draft, p, wanted, slots, free, stalled=True)


def _take(st: PlanState, draft: Draft, p: int, wanted: set[int], slots: int,
          free: set[int], stalled: bool) -> int:
    """``p`` takes up to ``slots`` of ``wanted``, rarest first, from holders in
    ``free`` (those with an upload slot left, as far as the caller knows); the
    slots left."""
    for g in rarest(draft, wanted, []):
        h = source(st, g, draft, p, free, stalled)
        if h is not None:
            draft.add(p, g, h)
            slots -= 1
            if not slots:
                break
    return slots


def match_holders(st: PlanState, draft: Draft) -> None:
    """Holders that got a slot back or a new piece serve their rarest pieces."""
    todo = {h: st._holds[h] for h in st._dirty_holders}
    for h, pieces in st._new_holdings.items():
        todo.setdefault(h, pieces)
    # Peers before seeds: a seed serves only what no free peer holder could.
    for h in sorted(todo, key=lambda h: (h in st._seeds, st._up[h], h)):
        slots, again = draft.up_free(h), list[int]()
        for g in rarest(draft, todo[h], again) if slots > 0 else ():
            if draft.up_free(h, g) <= 0:
                break  # a seed past a peer's cap, and g (like the rest) has copies
            p = taker(st, g, draft, h)
            if p is not None:  # else no one can take g now: drop it
                draft.add(p, g, h)
                slots -= 1
                if not slots:
                    break
                heapq.heappush(again, draft.rank(g))  # offer g again, ranked with its new copy


def fetch_orphans(st: PlanState, draft: Draft) -> None:
    """Fill free origin slots with unheld pieces in (task, index) order, least busy seed first."""
    cap = st.limits.origin_fetches
    free = {s: cap - n for s, n in st._seeds.items() if n < cap}
    if not free or not st._orphans:
        return
    for g in heapq.nsmallest(sum(free.values()), st._orphans):
        s = max(free, key=lambda s: (free[s], -s))
        draft.add(s, g, -1)
        free[s] -= 1
        if not free[s]:
            del free[s]


def source(st: PlanState, g: int, draft: Draft, p: int, free_up: set[int],
           stalled: bool = False) -> int | None:
    """The holder to serve ``g`` to ``p``: one in p's zone before one elsewhere
    (allowed only to bring g into p's zone, or, ``stalled``, if it is idle
    while p's zone has g and sends it nowhere), a peer before a seed, then
    the least loaded. ``free_up``: the holders that may still have a slot."""
    holders, seeds = st._holders[g], st._seeds
    # Walk the smaller set: few free holders when busy, an idle holder soon when not.
    scan, other = (holders, free_up) if len(holders) <= len(free_up) else (free_up, holders)
    if not draft.zoned:
        return _least_loaded(st, g, draft, scan, other)
    idle = st.limits.holder_uploads
    zoned, of = draft.zoned, st.zones.of
    zone = of[p]
    bring = zoned and draft.lacks(zone, g)  # the first copy into p's zone
    stalled = stalled and any(of[h] == zone for h in holders)
    best, best_key = None, (True, True, 0)
    for h in scan:
        if h in other:
            free = draft.up_free(h, g)
            far = zoned and of[h] != zone
            if far and not bring and not (stalled and draft.idle(h)):
                continue
            key = (far, h in seeds, -free)
            if free > 0 and (best is None or key < best_key):
                best, best_key = h, key
                if free == idle and not far and not key[1]:
                    break  # an idle peer holder in p's zone: none better
    return best


def _least_loaded(st: PlanState, g: int, draft: Draft, scan: set[int], other: set[int]
                  ) -> int | None:
    """:func:`source` without zones: a peer before a seed, then the most free slots
    (the same choice, with the slot arithmetic of :meth:`Draft.up_free` inlined:
    this is the policy's innermost loop)."""
    cap, up, drafted, seeds = st.limits.holder_uploads, st._up, draft.up, st._seeds
    best, best_free, best_seed = None, 0, True
    for h in scan:
        if h not in other:
            continue
        if h in seeds:
            if best is not None and not best_seed:
                continue  # a peer holder is already found: a seed never beats it
            free = draft.up_free(h, g)
            if free > best_free:  # best_free is 0 while none is found
                best, best_free, best_seed = h, free, True
            continue
        free = cap - up[h] - drafted.get(h, 0)
        if free == cap:
            return h  # an idle peer holder: none better
        if free > 0 and (best_seed or free > best_free):
            best, best_free, best_seed = h, free, False
    return best


def taker(st: PlanState, g: int, draft: Draft, h: int) -> int | None:
    """A hungry peer that needs ``g`` and may take it from ``h``, one of those
    that need the most."""
    needers = st._needers[g]
    if st._hungry.keys().isdisjoint(needers):
        return None
    if len(needers) <= _FEW:
        takers = [p for p in needers
                  if p in st._hungry and draft.can_take(p, g) and draft.may_send(h, p, g)]
        return max(takers, key=st._hungry.__getitem__, default=None)
    # Hungry peers are filed by zone: with zones, only h's zone and the zones it
    # may bring g into can take it, so only their buckets are asked (the others'
    # peers would all fail may_send); without, every zone's (there is one, "").
    of = st.zones.of
    best, best_key = None, 0
    for zone, lag in st.zones.lags.items():
        if not draft.zoned or zone == of[h] or draft.lacks(zone, g):
            p = _laggard(lag, needers, g, draft, best_key)
            if p is not None:
                best, best_key = p, st._hungry[p]
    return best


def _laggard(lag: Buckets, needers: set[int], g: int, draft: Draft, above: int = 0
             ) -> int | None:
    """A peer of ``lag`` (its largest keys first, above ``above``) that needs ``g``
    and can take it now."""
    st = draft.state
    cap, down, drafted, taken = st.limits.peer_downloads, st._down, draft.down, draft.taken
    for key, members in lag.largest_first():  # the laggards usually need g: found at once
        if key <= above:
            return None
        for p in members:  # draft.can_take(p, g), inlined: the hot loop of match_holders
            if p in needers and cap - down[p] - drafted.get(p, 0) > 0 and (p, g) not in taken:
                return p
    return None


class Draft:
    """What one decide() call has chosen so far, on top of the state it must not change."""

    def __init__(self, state: PlanState) -> None:
        self.state = state
        self.n = len(state._pieces)
        self.zoned = state.zones.many and state.limits.use_zones
        self.out: list[Assignment] = []
        self.up: dict[int, int] = {}
        self.down: dict[int, int] = {}
        self.moving: dict[int, int] = {}
        self.taken: set[tuple[int, int]] = set()
        self.into: set[tuple[int, int]] = set()  # (zone, piece) this draft brings in
        self.filled: set[int] = set()  # holders this draft left no upload slot

    def up_free(self, h: int, g: int | None = None) -> int:
        """Free upload slots of holder ``h`` (to send ``g``, if given).

        A seed's slots beyond a peer's cap carry only first copies (pieces no
        peer holds or is getting): the seed keeps pace with its own origin
        reads without becoming the hot spot that serves every copy.
        """
        st = self.state
        cap = st.upload_cap(h)
        if g is not None and cap > st.limits.holder_uploads and (
                len(st._holders[g]) > 1 or st._moving[g] or g in self.moving):
            cap = st.limits.holder_uploads
        return cap - st._up[h] - self.up.get(h, 0)

    def idle(self, h: int) -> bool:
        """Whether ``h`` sends nothing, counting this draft."""
        return not self.state._up[h] and not self.up.get(h, 0)

    def down_free(self, p: int) -> int:
        return self.state.limits.peer_downloads - self.state._down[p] - self.down.get(p, 0)

    def can_take(self, p: int, g: int) -> bool:
        return self.down_free(p) > 0 and (p, g) not in self.taken

    def lacks(self, zone: int, g: int) -> bool:
        """Whether no holder in ``zone`` has ``g`` and no copy is coming into it."""
        return not self.state.zones.has(zone, g) and (zone, g) not in self.into

    def may_send(self, h: int, p: int, g: int) -> bool:
        """Whether ``h`` may send ``g`` to ``p``: same zone, or the first copy into p's."""
        if not self.zoned:
            return True
        of = self.state.zones.of
        return of[h] == of[p] or self.lacks(of[p], g)

    def rank(self, g: int) -> int:
        """Sort key of ``g``: copies held or coming, then (task, index); ``key % n == g``."""
        return self.state._rank[g] + self.n * self.moving.get(g, 0)

    def ranks(self, pieces: set[int]) -> list[int]:
        if self.moving and not self.moving.keys().isdisjoint(pieces):
            return [self.rank(g) for g in pieces]
        return list(map(self.state._rank.__getitem__, pieces))

    def add(self, receiver: int, g: int, source: int) -> None:
        """Choose ``receiver`` <- ``g`` from ``source`` (-1: the origin)."""
        st = self.state
        self.moving[g] = self.moving.get(g, 0) + 1
        if source >= 0:
            self.up[source] = self.up.get(source, 0) + 1
            self.down[receiver] = self.down.get(receiver, 0) + 1
            self.taken.add((receiver, g))
            if self.up_free(source) <= 0:
                self.filled.add(source)
        if self.zoned:
            self.into.add((st.zones.of[receiver], g))
        name = st._names[source] if source >= 0 else ORIGIN
        self.out.append(Assignment(st._names[receiver], st._pieces[g], name))


def rarest(draft: Draft, among: set[int], heap: list[int]) -> Iterator[int]:
    """Pieces of ``among`` peers can move, rarest first, counting the draft's copies.

    Walks the state's sorted frontier, so that a holder's rarest servable piece
    costs about how far down it is, not how many pieces the holder has. The
    caller may push ranks onto ``heap`` between pieces (a piece to offer again).
    """
    st, n = draft.state, draft.n
    stream: Iterator[int] = iter(st._order)
    if len(among) * 16 < len(st._frontier):  # few: rank them all
        heap.extend(draft.ranks(among & st._frontier))
        heapq.heapify(heap)
        stream = iter(())
    pending = None
    while True:
        if pending is None:
            for key in stream:
                if key % n in among:
                    if key % n not in draft.moving:
                        pending = key
                        break
                    heapq.heappush(heap, draft.rank(key % n))  # ranked higher now: merge it later
        if heap and (pending is None or heap[0] < pending):
            yield heapq.heappop(heap) % n
        elif pending is None:
            return
        else:
            yield pending % n
            pending = None
