"""Discrete-event simulation of a fan-out, driven by the real scheduling policy.

N nodes (one peer each) and one seed receive a model-like repo (a few large
shards and some small files) cut into pieces. The seed fetches pieces from the
origin, whose bandwidth all fetches share; peers pull from holders. Every
node has its own upload and download bandwidth (drawn from a range with a
fixed random seed), the seed has its own upload bandwidth. A transfer runs at
the smaller of its source's upload share and its receiver's download share
(capacity split evenly among the transfers on each side); rates are
recomputed whenever a transfer starts or ends. After every finish the real
:func:`raydf.policy.decide` says what starts next.

**The control plane is charged** (:class:`ControlCost`), on one scheduler
clock: every assignment the scheduler issues costs it ``decision_us`` and
every finished transfer it folds in costs ``report_us``, one after the other
(a transfer cannot start before the scheduler has had the time to decide it,
and decisions queue behind each other), and every message between the
scheduler and a node (the assignment, the report) takes ``latency_ms``. The
per-delivery cost comes from ``benchmarks/control_plane.py`` (``--from-json``
reads its output): it is the scheduler's CPU time per delivered piece, which
covers deciding, issuing and settling it, so by default all of it is charged
as ``decision_us``. With no cost and no latency the simulation is the
uncharged one, event for event.

**Zones** (``zones`` > 1, ``--zones Z``): node ``i`` is in zone ``i mod Z``
(``z0`` ... ``z{Z-1}``, round robin, so zones differ in size by at most one
node), the seed in ``z0``. A transfer between two zones runs at its usual
rate (the smaller of its source's upload share and its receiver's download
share, shares split evenly as above) times ``cross_bw``
(``--cross-zone-bandwidth``, default 0.25: inter-zone links 4x slower); it
still takes a whole share on both sides, so a cross-zone byte costs its sender ``1 /
cross_bw`` bytes of upload time. There is no aggregate cap between zones.
The zoned policy is told the zone map (``PlanState(zones=...)``, rule 4 of
:mod:`raydf.policy`); ``blind=True`` (``--also-blind``) runs the
topology-blind policy (``zones=None``) over the same nodes, bandwidths and
slower links. The policy's clock (:meth:`PlanState.clock`) is the simulated
time, advanced before every ``decide()``; the simulation also wakes up when
the first waiting peer's ``Limits.far_after`` runs out, so that the starving
rule fires on time even when no transfer ends then. Cross-zone bytes are the
piece sizes of finished transfers between zones; the floor is ``(Z - 1) *
F``: every byte must enter each zone other than the seed's at least once.

Pieces are cut by the planner's rule (:func:`raydf.pieces.piece_length`, 32
MiB for ~5 GiB shards) unless ``--piece`` gives one size.

The result is compared with the Kumar-Ross lower bound for distributing F
bytes to N nodes: ``max(F / min(u_origin, u_seed), F / d_min,
N * F / (u_seed + sum(u_i)))``. (The first term is ``F / u_origin`` as usual;
the seed's upload only matters when it is slower than the origin.) It ignores
zones; ``Result.zone_bound`` adds to the last term what the slower links cost
at the least: ``(Z - 1) * F`` bytes must cross, each taking ``1 / cross_bw``
bytes of some sender's upload time, so ``(N * F + (1 / cross_bw - 1) * (Z -
1) * F) / (u_seed + sum(u_i))``.

    python benchmarks/simulate.py --nodes 200,1000 --size 130GB --decision-us 1240,30 --json out.json
    python benchmarks/simulate.py --nodes 200 --zones 4 --cross-zone-bandwidth 0.25 --also-blind \\
        --size 20GB --decision-us 0
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `raydf` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raydf.comparison import parse_size
from raydf.pieces import piece_length
from raydf.policy import ORIGIN, Assignment, Limits, PlanState, decide

__all__ = ["ControlCost", "Result", "main", "model_repo", "parse_size", "simulate"]

SEED = "seed"
GB = 10**9
SHARD = 5 * 2**30
# Scheduler CPU per delivery of the protocol of raydf.cluster before issue 16,
# measured by benchmarks/control_plane.py at K = 256 (README, Benchmarks).
OLD_PATH_US = 1240.0  # 1,241 at 200 pieces, 1,285 at 256 (README)
TARGET_US = 30.0  # the goal for the same figure


@dataclass(frozen=True)
class ControlCost:
    """What the control plane charges, on one scheduler clock (see the module docstring)."""

    decision_us: float = 0.0  # scheduler time per assignment it issues
    report_us: float = 0.0  # scheduler time per finished transfer it folds in
    latency_ms: float = 0.0  # one way, per message between the scheduler and a node or seed

    def __post_init__(self) -> None:
        if min(self.decision_us, self.report_us, self.latency_ms) < 0:
            raise ValueError(f"control-plane costs must be >= 0: {self}")


def model_repo(size: int, shard: int = SHARD) -> dict[str, int]:
    """A model-like repo of ``size`` bytes: shards of about ``shard`` bytes plus the usual small files."""
    small = {
        "config.json": 1_000,
        "generation_config.json": 200,
        "tokenizer_config.json": 50_000,
        "model.safetensors.index.json": 100_000,
        "tokenizer.json": 9_000_000,
        "README.md": 10_000,
    }
    if size < 2 * sum(small.values()):
        return {"model.safetensors": size}
    weights = size - sum(small.values())
    shards = max(1, round(weights / shard))
    files = {}
    for i in range(shards):  # equal shards, the remainder spread over the first ones
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        files[name] = weights // shards + (1 if i < weights % shards else 0)
    return {**files, **small}


@dataclass
class Result:
    """One simulated fan-out; times in seconds, sizes in bytes."""

    nodes: int
    repo_bytes: int
    piece_bytes: int  # the largest piece (pieces are cut per file by the planner's rule)
    seconds: float  # until the last node has everything
    bound: float  # Kumar-Ross lower bound
    origin_bytes: int
    p2p_bytes: int
    seed_upload_bytes: int  # part of p2p_bytes the seed served
    first_node_seconds: float
    transfers: int
    decide_calls: int
    decide_seconds: float  # spent in decide(), in all
    decide_median_us: float  # one decide(): other load on the machine barely moves it
    wall_seconds: float
    node_seconds: list[float] = field(default_factory=list, repr=False)
    pieces: int = 0
    cost: ControlCost = field(default_factory=ControlCost)
    scheduler_seconds: float = 0.0  # scheduler time charged, in all
    zones: int = 1
    cross_bw: float = 1.0  # rate factor of a transfer between zones
    blind: bool = False  # the policy was not told the zones (the links still are slower)
    cross_bytes: int = 0  # finished transfers between zones
    cross_transfers: int = 0
    zone_bound: float = 0.0  # the bound with the least the slower links cost (module docstring)
    far_after: float = 0.0  # Limits.far_after of the run

    @property
    def ratio(self) -> float:
        """Simulated time over the lower bound (1.0 is optimal)."""
        return self.seconds / self.bound

    @property
    def cross_ratio(self) -> float:
        """Cross-zone bytes over ``(zones - 1) * repo_bytes``, about one copy into
        each zone other than the seed's (0.0 with one zone)."""
        floor = (self.zones - 1) * self.repo_bytes
        return self.cross_bytes / floor if floor else 0.0

    @property
    def policy(self) -> str:
        return "blind" if self.blind or self.zones == 1 else "zoned"


class _Flow:
    """A transfer in progress: bytes left, current rate, and since when."""

    __slots__ = ("a", "dst", "ended", "factor", "left", "n", "rate", "since", "src", "version")

    def __init__(self, n: int, a: Assignment, size: int, now: float, factor: float = 1.0) -> None:
        self.n = n  # creation order: ties go by it, so that runs repeat exactly
        self.a = a
        self.src = a.source
        self.dst = a.peer
        self.factor = factor  # of its share: below 1 between zones
        self.left = float(size)
        self.rate = 0.0
        self.since = now
        self.version = 0
        self.ended = now  # when its last byte arrived


_START = -2  # heap tag: the assignment reached its node, the bytes start moving
_REPORT = -1  # heap tag: the node's report reached the scheduler
_TICK = -3  # heap tag: a waiting peer's far_after runs out (no flow)


def simulate(
    nodes: int,
    size: int,
    piece: int | None = None,
    *,
    origin_bw: float = 1 * GB,
    seed_up: float = 12.5 * GB,
    up: tuple[float, float] = (1.25 * GB, 12.5 * GB),
    down: tuple[float, float] = (1.25 * GB, 12.5 * GB),
    limits: Limits = Limits(),
    files: dict[str, int] | None = None,
    rng_seed: int = 0,
    cost: ControlCost = ControlCost(),
    zones: int = 1,
    cross_bw: float = 0.25,
    blind: bool = False,
) -> Result:
    """Simulate one fan-out of ``size`` bytes (``files`` or :func:`model_repo`) to ``nodes`` nodes.

    ``piece``: one piece size for every file; None cuts each file by the
    planner's rule. Bandwidths are bytes per second; ``up`` and ``down`` are
    (low, high) ranges each node's bandwidth is drawn from, uniformly, with
    ``rng_seed``. ``cost``: what the control plane charges (none by default).
    ``zones``, ``cross_bw``, ``blind``: nodes in zones, the rate factor between
    them, and whether the policy is kept blind to them (module docstring).
    """
    if zones < 1 or not 0 < cross_bw <= 1:
        raise ValueError(f"need zones >= 1 and 0 < cross_bw <= 1, got {zones} and {cross_bw}")
    files = files if files is not None else model_repo(size)
    size = sum(files.values())
    rng = random.Random(rng_seed)
    peers = [f"n{i:04d}" for i in range(nodes)]
    zone_of = {p: f"z{i % zones}" for i, p in enumerate(peers)}
    zone_of[SEED] = zone_of[ORIGIN] = "z0"  # an origin fetch never crosses
    factor = 1.0 if zones == 1 else cross_bw
    up_cap = {p: rng.uniform(*up) for p in peers}
    down_cap = {p: rng.uniform(*down) for p in peers}
    up_cap[SEED], up_cap[ORIGIN] = seed_up, origin_bw
    total_up = seed_up + sum(up_cap[p] for p in peers)
    bound = max(
        size / min(origin_bw, seed_up),
        size / min(down_cap.values()),
        nodes * size / total_up,
    )
    must_cross = (min(zones, nodes + 1) - 1) * size  # zones with a node, the seed's aside
    zone_bound = max(bound, (nodes * size + (1 / factor - 1) * must_cross) / total_up)

    cut = {name: piece or piece_length(n) for name, n in files.items()}
    tasks = {name: max(1, math.ceil(n / cut[name])) for name, n in files.items()}
    zoned = zones > 1 and not blind
    state = PlanState(tasks, [SEED], limits, zones=zone_of if zoned else None)
    for p in peers:
        state.add_peer(p, tasks)

    def piece_size(pid: tuple[str, int]) -> int:
        step = cut[pid[0]]
        return min(step, files[pid[0]] - pid[1] * step)  # an empty file is one empty piece

    out_of: dict[str, set[_Flow]] = {name: set() for name in up_cap}
    into: dict[str, set[_Flow]] = {p: set() for p in peers}
    # (time, flow, version or _START / _REPORT, flow): a flow's bytes end, it starts
    # (the assignment reached its node), or its report reaches the scheduler.
    # A tick carries no flow and a negative n of its own.
    heap: list[tuple[float, int, int, _Flow | None]] = []
    ticks: set[float] = set()  # when the ticks in the heap fall
    tick_n = 0
    started = 0
    now = 0.0
    busy_until = 0.0  # the scheduler clock: when it is free to do the next thing
    charged = 0.0
    decision, report = cost.decision_us / 1e6, cost.report_us / 1e6
    latency = cost.latency_ms / 1e3
    node_done: dict[str, float] = {}
    origin_bytes = p2p_bytes = seed_bytes = transfers = cross_bytes = cross_transfers = 0
    decide_times: list[float] = []
    wall = time.perf_counter()

    def retime(ends: set[str]) -> None:
        """Re-rate the flows touching the endpoints whose transfer count changed."""
        flows = set().union(*(out_of[e] for e in ends), *(into.get(e, ()) for e in ends))
        for f in sorted(flows, key=lambda f: f.n):
            rate = up_cap[f.src] / len(out_of[f.src])
            if f.dst in into:
                rate = min(rate, down_cap[f.dst] / len(into[f.dst]))
            rate *= f.factor
            if rate != f.rate:
                f.left -= f.rate * (now - f.since)
                f.since, f.rate = now, rate
                f.version += 1
                heapq.heappush(heap, (now + max(f.left, 0.0) / rate, f.n, f.version, f))

    def begin(f: _Flow) -> None:
        f.since = now
        out_of[f.src].add(f)
        if f.dst in into:
            into[f.dst].add(f)

    def issue() -> set[str]:
        """Decide, and charge each assignment on the scheduler clock; the endpoints
        of the transfers that start right now (only when nothing is charged)."""
        nonlocal started, busy_until, charged, tick_n
        t0 = time.perf_counter()
        state.clock(now)
        todo = decide(state)
        decide_times.append(time.perf_counter() - t0)
        ends: set[str] = set()
        for a in todo:
            state.start(a)
            started += 1
            across = zone_of[a.source] != zone_of[a.peer]
            if zoned and across != state.crosses(a):
                raise AssertionError(f"{a}: the policy's zones are not the simulation's")
            f = _Flow(started, a, piece_size(a.piece), now, factor if across else 1.0)
            busy_until += decision
            charged += decision
            if busy_until + latency <= now:  # free and instant: it starts now
                begin(f)
                ends.update((a.source, a.peer))
            else:
                heapq.heappush(heap, (busy_until + latency, f.n, _START, f))
        if zoned and state.zones.waiting:  # wake up when the first waiting peer starves
            since = next(iter(state.zones.waiting.values()))
            # a hair after, so that now - since >= far_after holds in floating point
            t = since + limits.far_after + 1e-9
            if t not in ticks:
                ticks.add(t)
                tick_n -= 1
                heapq.heappush(heap, (t, tick_n, _TICK, None))
        return ends

    retime(issue())
    while not state.all_done():
        if not heap:
            raise RuntimeError(f"simulation stuck at t={now:.3f}s: {state!r}")
        t, _, version, flow = heapq.heappop(heap)
        if flow is None:  # a tick
            now = t
            ticks.discard(t)
            retime(issue())
            continue
        f = flow
        if version == _START:
            now = t
            begin(f)
            retime({f.src, f.dst})
            continue
        if version >= 0:  # its bytes end (unless superseded by a later rate change)
            if version != f.version:
                continue
            now = f.ended = t
            out_of[f.src].discard(f)
            if f.dst in into:
                into[f.dst].discard(f)
            if latency:
                heapq.heappush(heap, (now + latency, f.n, _REPORT, f))
                retime({f.src, f.dst})
                continue
        now = t  # the scheduler hears of it: it folds it in when it is free
        busy_until = max(busy_until, now) + report
        charged += report
        state.finish(f.a)
        transfers += 1
        n = piece_size(f.a.piece)
        if zone_of[f.src] != zone_of[f.dst]:
            cross_bytes += n
            cross_transfers += 1
        if f.src == ORIGIN:
            origin_bytes += n
        else:
            p2p_bytes += n
            seed_bytes += n if f.src == SEED else 0
            if f.dst not in node_done and state.done(f.dst):
                node_done[f.dst] = f.ended  # its bytes are all there
        retime(issue() | {f.src, f.dst})

    times = sorted(node_done.values())
    return Result(
        nodes=nodes,
        repo_bytes=size,
        piece_bytes=max(cut.values()),
        seconds=times[-1] if times else now,
        bound=bound,
        origin_bytes=origin_bytes,
        p2p_bytes=p2p_bytes,
        seed_upload_bytes=seed_bytes,
        first_node_seconds=times[0] if times else 0.0,
        transfers=transfers,
        decide_calls=len(decide_times),
        decide_seconds=sum(decide_times),
        decide_median_us=1e6 * statistics.median(decide_times),
        wall_seconds=time.perf_counter() - wall,
        node_seconds=times,
        pieces=sum(tasks.values()),
        cost=cost,
        scheduler_seconds=charged,
        zones=zones,
        cross_bw=factor,
        blind=blind,
        cross_bytes=cross_bytes,
        cross_transfers=cross_transfers,
        zone_bound=zone_bound,
        far_after=limits.far_after,
    )


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(":")
    return float(parse_size(lo)), float(parse_size(hi or lo))


def measured_costs(path: Path) -> dict[str, float]:
    """Scheduler CPU us per delivery from a ``benchmarks/control_plane.py --json``
    file: per protocol, the figure at its largest K."""
    best: dict[str, tuple[int, float]] = {}
    for row in json.loads(path.read_text())["results"]:
        if row["nodes"] >= best.get(row["protocol"], (-1, 0.0))[0]:
            best[row["protocol"]] = (row["nodes"], row["cpu_us_per_delivery"])
    return {name: us for name, (_, us) in best.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print a table of simulated fan-outs; ``--json`` also writes every result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="200,1000", help="comma-separated node counts")
    ap.add_argument("--size", default="130GB", help="repo size")
    ap.add_argument("--shard", default="5GiB", help="shard size of the model-like repo")
    ap.add_argument("--piece", default="planner",
                    help="piece size, or 'planner': each file cut by raydf.pieces.piece_length")
    ap.add_argument("--origin", default="1GB", help="origin bandwidth per second, shared")
    ap.add_argument("--seed-up", default="12.5GB", help="seed upload per second")
    ap.add_argument("--up", default="1.25GB:12.5GB", help="node upload range LOW:HIGH per second")
    ap.add_argument("--down", default="1.25GB:12.5GB", help="node download range LOW:HIGH")
    ap.add_argument("--rng", type=int, default=0, help="random seed for node bandwidths")
    ap.add_argument("--decision-us", default=f"{OLD_PATH_US:g}",
                    help="comma-separated scheduler us per assignment to simulate with (default: "
                         "the old path's measured CPU per delivery; 0: the control plane is free)")
    ap.add_argument("--from-json", type=Path,
                    help="also each protocol's CPU us per delivery from control_plane.py --json")
    ap.add_argument("--report-us", type=float, default=0.0, help="scheduler us per report")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="one way, per message")
    ap.add_argument("--zones", type=int, default=1,
                    help="zones the nodes are spread over, round robin; the seed is in the first")
    ap.add_argument("--cross-zone-bandwidth", type=float, default=0.25,
                    help="rate of a transfer between zones as a fraction of the same transfer "
                         "within one (default 0.25: 4x slower)")
    ap.add_argument("--also-blind", action="store_true",
                    help="with --zones: also run the topology-blind policy on the same links")
    ap.add_argument("--far-after", type=float, default=Limits().far_after,
                    help="Limits.far_after: s a peer waits on its zone before a far holder serves it")
    ap.add_argument("--limits", default="", metavar="D,U,O,S",
                    help="the policy's caps (peer downloads, holder uploads, origin fetches, "
                         "seed uploads; default raydf's own), e.g. 64,32,8,64 for deeper windows")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.zones < 1 or not 0 < args.cross_zone_bandwidth <= 1:
        ap.error("--zones must be >= 1 and --cross-zone-bandwidth in (0, 1]")

    costs = [(f"{float(x):g}", float(x)) for x in args.decision_us.split(",") if x.strip()]
    if args.from_json:
        costs += [(f"{us:.1f} ({name})", us) for name, us in measured_costs(args.from_json).items()]
    piece = None if args.piece == "planner" else parse_size(args.piece)
    files = model_repo(parse_size(args.size), parse_size(args.shard))
    rows = []
    print(
        f"{'nodes':>6} {'decision us':>14} {'pieces':>6} {'time s':>9} {'bound s':>9} {'ratio':>6} "
        f"{'origin/repo':>11} {'seed share':>10} {'sched busy':>10} {'decide us':>9} {'wall s':>7}"
        f" {'zones':>5} {'policy':>6} {'cross GB':>9} {'cross/(Z-1)F':>12} {'zone bound':>10}"
    )
    policies = [False, True] if args.also_blind and args.zones > 1 else [False]
    try:
        limits = Limits.from_caps(args.limits, far_after=args.far_after)
    except ValueError as exc:
        ap.error(f"--limits: {exc}")
    for n, (label, us), blind in itertools.product(
            (int(x) for x in args.nodes.split(",")), costs, policies):
        r = simulate(
            n,
            sum(files.values()),
            piece,
            origin_bw=parse_size(args.origin),
            seed_up=parse_size(args.seed_up),
            up=_range(args.up),
            down=_range(args.down),
            files=files,
            rng_seed=args.rng,
            cost=ControlCost(us, args.report_us, args.latency_ms),
            zones=args.zones,
            cross_bw=args.cross_zone_bandwidth,
            blind=blind,
            limits=limits,
        )
        print(
            f"{r.nodes:>6} {label:>14} {r.pieces:>6} {r.seconds:>9.1f} {r.bound:>9.1f} "
            f"{r.ratio:>6.3f} {r.origin_bytes / r.repo_bytes:>11.3f} "
            f"{r.seed_upload_bytes / r.p2p_bytes:>10.4f} {r.scheduler_seconds / r.seconds:>10.1%} "
            f"{r.decide_median_us:>9.1f} {r.wall_seconds:>7.1f} {r.zones:>5} {r.policy:>6} "
            f"{r.cross_bytes / GB:>9.2f} {r.cross_ratio:>12.3f} {r.seconds / r.zone_bound:>10.3f}",
            flush=True,
        )
        rows.append({**asdict(r), "ratio": r.ratio, "cross_ratio": r.cross_ratio,
                     "zone_bound_ratio": r.seconds / r.zone_bound, "policy": r.policy})
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
