"""Where nodes are (rule 4 of :mod:`raydf.policy`): each node's zone, the copies
of each piece each zone has or is getting, and the peers that have waited
with nothing in flight for long. Part of :class:`~raydf.policy.state.PlanState`'s
bookkeeping; pure.
"""

from __future__ import annotations

from raydf.policy.buckets import Buckets

__all__ = ["Zones"]


class Zones:
    """Zones of one plan. Zone 0 is "" (every node no zone was given for), so a
    plan without zones has one zone and rule 4 changes nothing."""

    def __init__(self, pieces: int, far_after: float) -> None:
        self.names: list[str] = [""]  # zone id -> name
        self.placed: dict[str, int] = {}  # node id -> zone id
        self.of: dict[int, int] = {}  # holder -> zone id (kept after it leaves)
        self.copies: list[dict[int, int]] = [{} for _ in range(pieces)]  # zone -> held + coming
        self.far_after = far_after
        self.now = 0.0
        self.waiting: dict[int, float] = {}  # peer -> since when it needs and gets nothing
        self.starved: set[int] = set()  # waited far_after: may take from an idle far holder
        # zone -> its hungry peers by how much they need (PlanState files them; the
        # laggards of the whole plan when it has one zone)
        self.lags: dict[int, Buckets] = {}

    @property
    def many(self) -> bool:
        return len(self.names) > 1

    def place(self, node: str, zone: str, hid: int | None) -> None:
        if zone not in self.names:
            self.names.append(zone)
        zid = self.names.index(zone)
        if hid is not None and self.of[hid] != zid:
            raise ValueError(f"{node!r} was added in zone {self.names[self.of[hid]]!r}, "
                             f"not {zone!r}")
        self.placed[node] = zid

    def register(self, node: str, hid: int) -> None:
        self.of[hid] = self.placed.get(node, 0)

    def name(self, node: str) -> str:
        return self.names[self.placed.get(node, 0)]

    def apart(self, a: str, b: str) -> bool:
        return self.placed.get(a, 0) != self.placed.get(b, 0)

    def lag(self, p: int) -> Buckets:
        """The hungry peers of ``p``'s zone, filed as :class:`PlanState` files them all."""
        zone = self.of[p]
        if zone not in self.lags:
            self.lags[zone] = Buckets()
        return self.lags[zone]

    def count(self, g: int, hid: int, delta: int) -> None:
        """A holder of ``g`` (or a copy coming) in ``hid``'s zone came or went."""
        counts, zone = self.copies[g], self.of[hid]
        left = counts.get(zone, 0) + delta
        if left:
            counts[zone] = left
        else:
            del counts[zone]

    def has(self, zone: int, g: int) -> bool:
        """Whether a holder in ``zone`` has ``g``, or a copy is coming into it."""
        return zone in self.copies[g]

    def wait(self, p: int, idle: bool) -> None:
        """Peer ``p`` now needs pieces and has none coming (``idle``), or not."""
        if not self.many:
            return
        if not idle:
            self.waiting.pop(p, None)
            self.starved.discard(p)
        elif p not in self.waiting and p not in self.starved:
            self.waiting[p] = self.now

    def next_starving(self) -> float | None:
        """When the peer that waits longest starves (None: no zones, or none waits)."""
        if not self.many or not self.waiting:
            return None
        return next(iter(self.waiting.values())) + self.far_after

    def tick(self, now: float) -> list[int]:
        """The time is ``now``: the peers that just starved (waited ``far_after``)."""
        self.now = now
        ripe = []
        for p, since in self.waiting.items():  # in the order they began to wait
            if now - since < self.far_after:
                break
            ripe.append(p)
        for p in ripe:
            del self.waiting[p]
            self.starved.add(p)
        return ripe
