"""The scheduler's bookkeeping of a fan-out (:class:`PlanState`): what every
peer wants and holds, what is moving, in which zone each node is; every
mutation keeps the indexes that :mod:`raydf.policy.matching` reads when it
decides (the package's rules are in :mod:`raydf.policy`). Pure: no Ray, no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

from raydf.policy import matching
from raydf.policy.limits import ORIGIN, Assignment, Limits, PieceId
from raydf.policy.zones import Zones

__all__ = ["PlanState"]


class PlanState:
    """What every peer wants and holds, and what is moving: the scheduler's state.

    Ids are strings outside and small ints inside. Pieces are ints inside too,
    numbered in (task order, index) order, so sorting them is sorting by task
    then index.
    """

    def __init__(self, tasks: Mapping[str, int], seeds: Sequence[str], limits: Limits = Limits(),
                 zones: Mapping[str, str] | None = None) -> None:
        """Plan ``tasks`` (task id -> piece count) with the given seeds; ``zones``:
        node id -> zone, for nodes added later too (see :meth:`place`)."""
        self.limits = limits
        self._first: dict[str, int] = {}
        self._count = dict(tasks)
        self._pieces: list[PieceId] = []
        for task, count in tasks.items():
            if count < 1:
                raise ValueError(f"task {task!r} has {count} pieces; a task has at least one")
            self._first[task] = len(self._pieces)
            self._pieces.extend((task, i) for i in range(count))
        n = len(self._pieces)
        self._holders: list[set[int]] = [set() for _ in range(n)]
        self._needers: list[set[int]] = [set() for _ in range(n)]  # want it, not had, not coming
        self._moving = [0] * n  # transfers and fetches of the piece in flight
        self._rank = list(range(n))  # copies * n + piece: rarest first, then task and index
        self._frontier: set[int] = set()  # held by someone and needed by someone
        self._order: list[int] = []  # the frontier's ranks, sorted
        self._orphans: set[int] = set()  # needed, no holder, nothing moving: the origin's job
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._holds: dict[int, set[int]] = {}  # holder -> pieces it can serve
        self._up: dict[int, int] = {}
        self._free_up: set[int] = set()  # holders with an upload slot free
        self._seeds: dict[int, int] = {}  # seed -> origin fetches in flight
        self._wants: dict[int, set[str]] = {}  # peer -> tasks
        self._total: dict[int, int] = {}  # peer -> pieces wanted
        self._have: dict[int, set[int]] = {}  # completed, still held or since dropped
        self._need: dict[int, set[int]] = {}  # wanted, not had, not coming
        self._recv: dict[int, set[int]] = {}
        self._down: dict[int, int] = {}
        self._incomplete: set[int] = set()
        # Peers with a need and a download slot free, bucketed by how many they need
        # (the buckets, one set per zone, are in zones.lags).
        self._hungry: dict[int, int] = {}  # peer -> its bucket, len(need)
        self._flight: dict[Assignment, tuple[int, int, int]] = {}  # -> receiver, piece, source|-1
        self._served: dict[str, int] = {}  # completed uploads per holder
        self._distrusted: set[int] = set()  # never chosen as a source again
        self.zones = Zones(n, limits.far_after)
        self._origin_done = 0
        # What changed since the last decide(); see the module docstring.
        self._dirty_peers: set[int] = set()
        self._dirty_holders: set[int] = set()  # got an upload slot back from full
        self._new_holdings: dict[int, set[int]] = {}
        self._version = 0
        self._memo: tuple[int, list[Assignment]] | None = None
        for node, zone in (zones or {}).items():
            self.place(node, zone)
        for seed in seeds:
            self.add_seed(seed)

    def place(self, node: str, zone: str) -> None:
        """``node`` (a peer or seed, added later) is in ``zone``; see rule 4."""
        self.zones.place(node, zone, self._ids.get(node))

    def zone_of(self, node: str) -> str:
        """The zone of ``node`` ("" if none was given)."""
        return self.zones.name(node)

    def crosses(self, a: Assignment) -> bool:
        """Whether transfer ``a`` goes from one zone to another."""
        return a.source != ORIGIN and self.zones.apart(a.peer, a.source)

    def covered(self, piece: PieceId, without: str) -> bool:
        """Whether every zone where a peer still needs ``piece`` would have a copy
        of it (held, or coming) without holder ``without``: a seed lets a piece
        go only then, or the zone would take it back from another (rule 4)."""
        if not self.zones.many:
            return True
        g = self._gid(piece)
        of, copies = self.zones.of, self.zones.copies[g]
        dropped = self._ids.get(without, -1)
        mine = of.get(dropped) if dropped in self._holders[g] else None
        return all(copies.get(zone, 0) - (zone == mine) > 0
                   for zone in {of[p] for p in self._needers[g]})

    def clock(self, now: float) -> float | None:
        """The time is ``now`` (seconds, any origin): peers that have waited
        ``Limits.far_after`` with nothing in flight may take from far holders.
        Returns when the next one starves (None: none waits), to call again then."""
        ripe = self.zones.tick(now)
        if ripe:
            self._settle()
            self._dirty_peers.update(ripe)
        return self.zones.next_starving()

    def add_seed(self, seed: str) -> None:
        """Add a seed (a replacement, or one more origin reader)."""
        self._settle()
        if seed == ORIGIN or seed in self._ids:
            raise ValueError(f"seed id {seed!r} is reserved or already in use")
        self._seeds[self._register(seed)] = 0

    def add_peer(self, peer: str, wants: Iterable[str]) -> None:
        """Add a peer, or more tasks to one; it must complete every task it wants."""
        self._settle()
        wants = list(wants)
        unknown = [t for t in wants if t not in self._first]
        if unknown:
            raise ValueError(f"peer {peer!r} wants unknown tasks {unknown}")
        pid = self._peer_id(peer)
        need, have, recv = self._need[pid], self._have[pid], self._recv[pid]
        for task in wants:
            if task in self._wants[pid]:
                continue
            self._wants[pid].add(task)
            first, count = self._first[task], self._count[task]
            self._total[pid] += count
            for g in range(first, first + count):
                if g not in have and g not in recv:
                    need.add(g)
                    self._needers[g].add(pid)
                    if len(self._needers[g]) == 1:
                        self._touch(g)
        self._touch_peer(pid)
        self._dirty_peers.add(pid)

    def add_holding(self, holder: str, piece: PieceId) -> None:
        """``holder`` has ``piece`` (e.g. in its cache); an unknown id becomes a peer."""
        self._settle()
        g = self._gid(piece)
        hid = self._ids.get(holder)
        self._hold(self._peer_id(holder) if hid is None else hid, g)

    def start(self, a: Assignment) -> None:
        """The scheduler issued ``a``; refuses one that would corrupt the plan."""
        self._version += 1
        if a in self._flight:
            raise ValueError(f"{a} is already in flight")
        g = self._gid(a.piece)
        rid = self._ids.get(a.peer, -1)
        if a.source == ORIGIN:
            if rid not in self._seeds:
                raise ValueError(f"{a}: an origin fetch goes to a seed")
            self._seeds[rid] += 1
            self._flight[a] = (rid, g, -1)
        else:
            sid = self._ids.get(a.source, -1)
            if g not in self._need.get(rid, ()):
                raise ValueError(f"{a}: the peer does not need that piece (had, coming or unwanted)")
            if g not in self._holds.get(sid, ()):
                raise ValueError(f"{a}: the source does not hold that piece")
            self._up[sid] += 1
            self._down[rid] += 1
            self._need[rid].discard(g)
            self._needers[g].discard(rid)
            self._recv[rid].add(g)
            self._touch_holder(sid)
            self._touch_peer(rid)
            self._flight[a] = (rid, g, sid)
        self._moving[g] += 1
        self.zones.count(g, rid, 1)
        self._touch(g)

    def finish(self, a: Assignment) -> None:
        """``a`` succeeded: its receiver holds the piece now.

        A finish for a transfer that :meth:`remove_holder` already failed (its
        source died as the piece arrived) still records the holding.
        """
        self._settle()
        if a in self._flight:
            rid, g, _ = self._end(a)
            self._hold(rid, g)
            if a.source == ORIGIN:
                self._origin_done += 1
            else:
                self._served[a.source] = self._served.get(a.source, 0) + 1
        elif a.peer in self._ids:
            self._hold(self._ids[a.peer], self._gid(a.piece))

    def fail(self, a: Assignment) -> None:
        """``a`` failed: its receiver does not hold the piece (an unknown ``a`` is ignored)."""
        self._settle()
        if a in self._flight:
            self._fail(a)

    def drop_holding(self, holder: str, piece: PieceId) -> None:
        """``holder`` can no longer serve ``piece``; a peer still counts it as completed."""
        self._settle()
        g = self._gid(piece)
        hid = self._ids.get(holder)
        if hid is not None and g in self._holds[hid]:
            self._holds[hid].discard(g)
            self._holders[g].discard(hid)
            self.zones.count(g, hid, -1)
            self._new_holdings.get(hid, set()).discard(g)
            self._touch(g)
            self._recheck_first_copy(g)

    def distrust(self, holder: str) -> None:
        """``holder`` is never chosen as a source again (what it holds, and what it
        gets later); as a peer it keeps receiving what it wants."""
        hid = self._ids.get(holder)
        if hid is None:
            return
        self._distrusted.add(hid)
        for g in sorted(self._holds[hid]):
            self.drop_holding(holder, self._pieces[g])

    def retake(self, pieces: Iterable[PieceId], keep: Iterable[str] = ()) -> None:
        """Every peer's copy of ``pieces`` is bad (the origin sent bad bytes, since
        fixed at a seed; or a peer's verified copy rotted and others took from it):
        peers drop them and need them again; transfers of them fail. Seeds keep
        theirs (a seed holds the fixed bytes), and so do the peers in ``keep``
        (their copies were verified again)."""
        self._settle()
        kept = set(self._seeds) | {self._ids[k] for k in keep if k in self._ids}
        for piece in pieces:
            g = self._gid(piece)
            for a, (_, fg, sid) in list(self._flight.items()):
                if fg == g and sid >= 0:
                    self._fail(a)
            for h in [h for h in self._holders[g] if h not in kept]:
                self.drop_holding(self._names[h], piece)
            for p, have in self._have.items():
                if g in have and p not in kept:
                    have.discard(g)
                    if piece[0] in self._wants[p]:
                        self._need[p].add(g)
                        self._needers[g].add(p)
                    self._touch_peer(p)
                    self._dirty_peers.add(p)
            self._touch(g)

    def abandon(self, task: str) -> None:
        """Nobody can get ``task`` (the origin keeps sending bad bytes): peers stop
        needing it, as if they had it, so their other tasks still complete; the
        caller reports it as failed."""
        self._settle()
        first, count = self._first[task], self._count[task]
        pieces = range(first, first + count)
        for a, (_, g, sid) in list(self._flight.items()):
            if g in pieces and sid >= 0:
                self._fail(a)
        for p in self._need:
            if task in self._wants[p]:
                for g in pieces:
                    self._need[p].discard(g)
                    self._needers[g].discard(p)
                    self._have[p].add(g)
                self._touch_peer(p)
        for g in pieces:
            self._touch(g)

    def remove_holder(self, holder: str) -> None:
        """A peer or seed died: forget what it held, fail its transfers, drop its wants."""
        self._settle()
        hid = self._ids.pop(holder, None)
        if hid is None:
            return
        for a, (rid, _, sid) in list(self._flight.items()):
            if hid in (rid, sid):
                self._fail(a)
        for g in self._holds.pop(hid):
            self._holders[g].discard(hid)
            self.zones.count(g, hid, -1)
            self._touch(g)
            self._recheck_first_copy(g)
        if hid in self._need:
            for g in self._need[hid]:
                self._needers[g].discard(hid)
                self._touch(g)
            self._need[hid] = set()
            self._touch_peer(hid)  # leaves the hungry buckets
            for table in (self._need, self._wants, self._have, self._recv):
                del table[hid]
            del self._total[hid], self._down[hid]
        self._seeds.pop(hid, None)
        del self._up[hid]
        for group in (self._free_up, self._incomplete, self._dirty_peers, self._dirty_holders):
            group.discard(hid)
        self._new_holdings.pop(hid, None)

    def done(self, peer: str) -> bool:
        """Whether ``peer`` has every piece of every task it wants."""
        pid = self._ids.get(peer)
        if pid is None or pid not in self._need:
            raise KeyError(f"unknown peer {peer!r}")
        return pid not in self._incomplete

    def all_done(self) -> bool:
        """Whether every peer has everything it wants."""
        return not self._incomplete

    def holders(self, piece: PieceId) -> frozenset[str]:
        """Who can serve ``piece`` now."""
        return frozenset(self._names[h] for h in self._holders[self._gid(piece)])

    def copies(self, piece: PieceId) -> int:
        """How many holders can serve ``piece`` now."""
        return len(self._holders[self._gid(piece)])

    def in_flight(self) -> frozenset[Assignment]:
        """Transfers and origin fetches started and not yet finished or failed."""
        return frozenset(self._flight)

    def snapshot(self) -> dict:
        """Counts for progress, ``repr`` and tests, as plain JSON-able data."""
        peers = {self._names[p]: {"pieces": self._total[p], "done": self._done(p)} for p in self._need}
        return {
            "tasks": len(self._first),
            "pieces": len(self._pieces),
            "peers": peers,
            "pieces_total": sum(v["pieces"] for v in peers.values()),
            "pieces_done": sum(v["done"] for v in peers.values()),
            "in_flight": len(self._flight),
            "origin_in_flight": sum(self._seeds.values()),
            "origin_fetched": self._origin_done,
            "seeds": sorted(self._names[s] for s in self._seeds),
            "served": dict(self._served),
            "zones": {name: self.zones.name(name) for name in self._ids} if self.zones.many else {},
        }

    def __repr__(self) -> str:
        done, total = sum(map(self._done, self._need)), sum(self._total.values())
        return (
            f"<Plan {len(self._first)} tasks, pieces {done}/{total}, "
            f"{len(self._flight)} in flight | {len(self._need)} peers>"
        )

    def _settle(self) -> None:
        """A change begins: forget what the last decide() saw, except its unstarted proposals."""
        self._version += 1
        if self._memo is None:
            return
        proposed, self._memo = self._memo[1], None
        self._dirty_peers.clear()
        self._dirty_holders.clear()
        self._new_holdings.clear()
        for a in proposed:
            if a.source != ORIGIN and a not in self._flight:
                for name, dirty in ((a.peer, self._dirty_peers), (a.source, self._dirty_holders)):
                    if name in self._ids:
                        dirty.add(self._ids[name])

    def _register(self, name: str) -> int:
        hid = len(self._names)
        self._names.append(name)
        self._ids[name] = hid
        self.zones.register(name, hid)
        self._holds[hid] = set()
        self._up[hid] = 0
        self._free_up.add(hid)
        return hid

    def _peer_id(self, peer: str) -> int:
        pid = self._ids.get(peer)
        if pid is None:
            if peer == ORIGIN:
                raise ValueError(f"peer id {peer!r} is reserved")
            pid = self._register(peer)
            self._wants[pid], self._total[pid], self._down[pid] = set(), 0, 0
            self._have[pid], self._need[pid], self._recv[pid] = set(), set(), set()
        elif pid in self._seeds:
            raise ValueError(f"{peer!r} is a seed, not a peer")
        return pid

    def _gid(self, piece: PieceId) -> int:
        task, index = piece
        if task not in self._first or not 0 <= index < self._count[task]:
            raise ValueError(f"unknown piece {piece!r}")
        return self._first[task] + index

    def _hold(self, hid: int, g: int) -> None:
        if hid in self._need:  # a peer: the piece is complete there
            self._have[hid].add(g)
            if g in self._need[hid]:
                self._need[hid].discard(g)
                self._needers[g].discard(hid)
                self._touch_peer(hid)
        if g not in self._holds[hid] and hid not in self._distrusted:
            self._holds[hid].add(g)
            self._holders[g].add(hid)
            self.zones.count(g, hid, 1)
            self._new_holdings.setdefault(hid, set()).add(g)
            self._touch(g)

    def _end(self, a: Assignment) -> tuple[int, int, int]:
        """Take ``a`` out of flight and give its slots back."""
        rid, g, sid = self._flight.pop(a)
        self._moving[g] -= 1
        self.zones.count(g, rid, -1)
        if sid < 0:
            if rid in self._seeds:
                self._seeds[rid] -= 1
        else:
            if sid in self._up:
                self._up[sid] -= 1
                # Was full: new pairs (a seed's slots depend on the piece: always look again).
                if sid in self._seeds or self._up[sid] == self.limits.holder_uploads - 1:
                    self._dirty_holders.add(sid)
                self._touch_holder(sid)
            if rid in self._down:
                self._down[rid] -= 1
                if self._down[rid] == self.limits.peer_downloads - 1:
                    self._dirty_peers.add(rid)
                self._recv[rid].discard(g)
                self._touch_peer(rid)
        self._touch(g)
        return rid, g, sid

    def _fail(self, a: Assignment) -> None:
        rid, g, sid = self._end(a)
        if sid >= 0 and rid in self._need and g not in self._have[rid]:
            self._need[rid].add(g)
            self._needers[g].add(rid)
            self._dirty_peers.add(rid)
            self._touch_peer(rid)
            self._touch(g)

    def _touch(self, g: int) -> None:
        """Re-rank piece ``g`` and re-file it as frontier (peers can move it) or orphan."""
        held, wanted = bool(self._holders[g]), bool(self._needers[g])
        old, rank = self._rank[g], (len(self._holders[g]) + self._moving[g]) * len(self._pieces) + g
        was, now = g in self._frontier, held and wanted
        if was != now or old != rank:
            if was:
                del self._order[bisect.bisect_left(self._order, old)]
                self._frontier.discard(g)
            if now:
                bisect.insort(self._order, rank)
                self._frontier.add(g)
            self._rank[g] = rank
        orphan = wanted and not held and not self._moving[g]
        (self._orphans.add if orphan else self._orphans.discard)(g)

    def _touch_peer(self, p: int) -> None:
        """Re-file peer ``p`` as hungry (in the bucket of its need) or not, complete or not."""
        need = len(self._need[p])
        key = need if self._down[p] < self.limits.peer_downloads else 0
        old = self._hungry.get(p, 0)
        if key != old:
            if old:
                self.zones.lag(p).remove(p, old)
                del self._hungry[p]
            if key:
                self.zones.lag(p).add(p, key)
                self._hungry[p] = key
        (self._incomplete.add if need or self._recv[p] else self._incomplete.discard)(p)
        self.zones.wait(p, bool(need) and not self._down[p])

    def _touch_holder(self, h: int) -> None:
        (self._free_up.add if self._up[h] < self.upload_cap(h) else self._free_up.discard)(h)

    def _recheck_first_copy(self, g: int) -> None:
        """``g`` lost a holder: if a seed is now its only one, the seed may send it
        on its extra slots again (see matching.Draft.up_free), so look at that seed."""
        holders = self._holders[g]
        if len(holders) == 1:
            (h,) = holders
            if h in self._seeds:
                self._dirty_holders.add(h)

    def upload_cap(self, h: int) -> int:
        """Uploads at once out of holder ``h``: a seed's limit or a peer's (see matching.Draft.up_free)."""
        return self.limits.seed_uploads if h in self._seeds else self.limits.holder_uploads

    def _done(self, p: int) -> int:
        return self._total[p] - len(self._need[p]) - len(self._recv[p])

    def propose(self) -> list[Assignment]:
        """What :func:`raydf.policy.decide` answers (memoised until the next change)."""
        if self._memo is None or self._memo[0] != self._version:
            self._memo = (self._version, matching.propose(self))
        return list(self._memo[1])
