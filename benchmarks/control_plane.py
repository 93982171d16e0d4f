"""Control-plane cost: the real scheduler and policy driving K simulated nodes.

The real :class:`~raydf.cluster.scheduler.SchedulerActor` (with the real
:mod:`raydf.policy`) runs one fan-out of a synthetic repo to K nodes on this
machine. The nodes are *stand-ins*: a few Ray actors, each answering for many
nodes, that accept every piece the scheduler sends them and report it done at
once, with plausible values (a CRC-32, byte counts) and no bytes moved. A
stand-in seed answers the origin fetches the same way (no hub). What is left is
the control plane: the scheduler's decisions, its calls and their replies.

Printed for each K (and written with ``--json``):

* deliveries/s: piece deliveries to nodes (K x pieces in all) over the run's
  wall time, from submit to the last node's report;
* scheduler CPU us/delivery: CPU time (user + system) of the scheduler
  actor's process over the run (psutil on its pid, asked with
  ``__ray_call__``), per delivery;
* scheduler calls/delivery: actor calls made by the scheduler (counted where
  they land, in the stand-ins) and to it (counted by the driver), per delivery.

The harness (:func:`measure`, :func:`main`) knows nothing of the protocol: a
:class:`ControlPlane` opens a scheduler and delivers one repo to K nodes.
:class:`BatchedProtocol` is the one for the protocol of ``raydf.cluster`` as it
is today (typed messages, one ``PullBatch`` per receiver and round; the
stand-ins are in :mod:`raydf.testing.standins`). The per-piece protocol it
replaced is gone; its figures (README) come from a run at its commit.

    python benchmarks/control_plane.py --nodes 16,64,256 --pieces 2000 --json cp.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a script: make `raydf` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import ray

from raydf.backends.base import RemoteFile
from raydf.cluster.spec import TaskSpec
from raydf.comparison import format_table
from raydf.plan import RepoPlan
from raydf.policy import Limits
from raydf.testing.standins import StandinNode, StandinPeers, StandinSeed

__all__ = ["BatchedProtocol", "ControlPlane", "Delivered", "Figures", "main", "measure", "synthetic_repo"]

MiB = 2**20
TARGET_RATE = 30_000.0  # deliveries/s at K = 256 (README, DESIGN.md targets)
TARGET_CPU_US = 30.0  # scheduler CPU per delivery at K = 256
POLL_SECONDS = 0.5  # how often a waiting caller asks for status (raydf.api._POLL_SECONDS)


# -- the harness: independent of the protocol -----------------------------------


@dataclass(frozen=True)
class Delivered:
    """What one delivery run reports: counted by the stand-ins and the driver."""

    deliveries: int  # pieces the stand-in nodes were given (each once per node)
    scheduler_calls: int  # actor calls made by the scheduler and to it
    calls: dict[str, int]  # the same by method ("to:claim", "peer:pull", "seed:fetch", ...)
    ok: bool  # the scheduler reported every node complete


@dataclass(frozen=True)
class Figures:
    """One measured run at K nodes."""

    protocol: str
    nodes: int
    pieces: int
    deliveries: int
    seconds: float
    scheduler_cpu_seconds: float
    standin_cpu_seconds: float  # the stand-in nodes' and seed's processes, for context
    scheduler_calls: int
    ok: bool
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_delivery(self) -> float:
        return 1e6 * self.scheduler_cpu_seconds / max(self.deliveries, 1)

    @property
    def calls_per_delivery(self) -> float:
        return self.scheduler_calls / max(self.deliveries, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "deliveries_per_second": self.deliveries_per_second,
                "cpu_us_per_delivery": self.cpu_us_per_delivery,
                "calls_per_delivery": self.calls_per_delivery}


class ControlPlane(Protocol):
    """One scheduler protocol, driven through stand-in nodes."""

    name: str

    def open(self) -> tuple[int, list[int]]:
        """Start a fresh scheduler (and stand-ins); its pid, and the stand-ins' pids."""
        ...

    def deliver(self, plan: RepoPlan, tasks: list[TaskSpec], nodes: list[str]) -> Delivered:
        """Run one fan-out of ``plan`` to ``nodes`` through the scheduler, until done."""
        ...

    def close(self) -> None:
        """Stop the scheduler and the stand-ins."""
        ...


def synthetic_repo(pieces: int, files: int = 8, piece_length: int = 16 * MiB
                   ) -> tuple[RepoPlan, list[TaskSpec]]:
    """A repo of ``files`` files cut into ``pieces`` pieces in all (a few more or
    less per file, so the total is exact), with fake sha256 digests."""
    files = max(1, min(files, pieces))
    counts = [pieces // files + (1 if i < pieces % files else 0) for i in range(files)]
    remote, tasks = [], []
    for i, count in enumerate(counts):
        name = f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        digest = f"{zlib.crc32(name.encode()):08x}" * 8
        f = RemoteFile(name, name, count * piece_length, sha256=digest)
        remote.append(f)
        tasks.append(TaskSpec(f"sha256-{digest}", f, (name,), piece_length))
    plan = RepoPlan("hf://bench/control-plane", "0" * 40, tuple(remote))
    return plan, tasks


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time so far of the processes ``pids``."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def measure(plane: ControlPlane, nodes: int, pieces: int, *, files: int = 8,
            warmup_pieces: int = 64) -> Figures:
    """Open a fresh scheduler, warm it with a small job, then measure one run."""
    scheduler_pid, standin_pids = plane.open()
    try:
        if warmup_pieces:
            plan, tasks = synthetic_repo(warmup_pieces, 2)
            plane.deliver(plan, tasks, _node_ids(min(nodes, 4), "warm"))
        plan, tasks = synthetic_repo(pieces, files)
        names = _node_ids(nodes, "node")
        cpu0, standin0 = cpu_seconds([scheduler_pid]), cpu_seconds(standin_pids)
        started = time.perf_counter()
        done = plane.deliver(plan, tasks, names)
        seconds = time.perf_counter() - started
        cpu1, standin1 = cpu_seconds([scheduler_pid]), cpu_seconds(standin_pids)
    finally:
        plane.close()
    return Figures(plane.name, nodes, pieces, done.deliveries, seconds, cpu1 - cpu0,
                   standin1 - standin0, done.scheduler_calls, done.ok and done.deliveries == nodes * pieces,
                   done.calls)


def _node_ids(count: int, prefix: str) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


def table(rows: Sequence[Figures]) -> str:
    """The figures as a plain text table."""
    return format_table(
        ["protocol", "K", "pieces", "deliveries", "wall s", "deliveries/s", "sched CPU us/delivery",
         "sched calls/delivery", "stand-in CPU us/delivery", "ok"],
        [[f.protocol, f.nodes, f.pieces, f.deliveries, f"{f.seconds:.1f}", f"{f.deliveries_per_second:,.0f}",
          f"{f.cpu_us_per_delivery:.1f}", f"{f.calls_per_delivery:.3f}",
          f"{1e6 * f.standin_cpu_seconds / max(f.deliveries, 1):.1f}", "yes" if f.ok else "NO"]
         for f in rows],
    )


# -- the protocol of raydf.cluster: typed messages, batched pulls ---------------
#
# The scheduler calls, per node: prepare(PeerJoin) once, pull_batch(PullBatch)
# once per decision round that gives the node work (one Pull per piece),
# finish_job once; per job: the seed's fetch (once per piece), release, counts.
# The caller calls claim, submit(JobSpec, ...), wait and the poll long-poll.


def _pid(_: Any) -> int:
    return os.getpid()


class BatchedProtocol:
    """The typed, batched scheduler, driven the way ``raydf.api.run_fanout`` drives
    it (submit a JobSpec, wait, long-poll the status), through the stand-ins of
    :mod:`raydf.testing.standins`."""

    name = "batched"

    def __init__(self, groups: int = 4, limits: Limits = Limits()) -> None:
        self._group_count = groups
        self.limits = limits
        self._groups: list[Any] = []
        self._sched: Any = None
        self._ledger_dir = tempfile.mkdtemp(prefix="raydf-cp-")

    def open(self) -> tuple[int, list[int]]:
        from raydf.cluster.scheduler import SchedulerActor

        # The options of raydf.cluster.service.scheduler(), less the name and the
        # detached lifetime (each run gets a fresh one).
        self._sched = ray.remote(SchedulerActor).options(num_cpus=0, max_concurrency=1000).remote()
        group_class = ray.remote(StandinPeers).options(num_cpus=0, max_concurrency=10_000)
        self._groups = [group_class.remote() for _ in range(self._group_count)]
        pid = ray.get(self._sched.__ray_call__.remote(_pid))
        return pid, ray.get([g.__ray_call__.remote(_pid) for g in self._groups])

    def deliver(self, plan: RepoPlan, tasks: list[TaskSpec], nodes: list[str]) -> Delivered:
        from raydf.cluster.handles import SchedulerHandle, SeedHandle
        from raydf.cluster.protocol import JobSpec

        sched = SchedulerHandle(self._sched)
        before = ray.get([g.counts.remote() for g in self._groups])
        driver: Counter[str] = Counter()
        ledger = os.path.join(self._ledger_dir, f"seed-{uuid.uuid4().hex[:8]}.json")
        seed = SeedHandle(ray.remote(StandinSeed).options(num_cpus=0, max_concurrency=1000)
                          .remote(tasks, ledger))
        peers = {n: StandinNode(self._groups[i % len(self._groups)], n)
                 for i, n in enumerate(nodes)}
        key, caller, dest = uuid.uuid4().hex, uuid.uuid4().hex, f"/bench/{uuid.uuid4().hex[:8]}"
        driver["to:claim"] += 1
        if ray.get(sched.claim(key, dest, nodes, plan.url)) is not None:
            raise RuntimeError("a fresh fingerprint matched a running job")
        driver["to:submit"] += 1
        spec = JobSpec(uuid.uuid4().hex[:12], plan, tuple(tasks), dest, fingerprint=key, limits=self.limits,
                       caller=caller)
        job = ray.get(sched.submit(spec, seed, peers, {}))  # type: ignore[arg-type]
        driver["to:wait"] += 1
        waiting = sched.wait(job, nodes)
        seen = -1
        driver["to:poll"] += 1
        polling = sched.poll(job, caller, nodes, seen, 0.0)
        while not ray.wait([waiting], timeout=0)[0]:
            ready, _ = ray.wait([waiting, polling], timeout=POLL_SECONDS)
            if polling in ready:
                seen = ray.get(polling).version
                driver["to:poll"] += 1
                polling = sched.poll(job, caller, nodes, seen, 3.0)
        report = ray.get(waiting)
        after = ray.get([g.counts.remote() for g in self._groups])
        calls: Counter[str] = Counter(driver)
        deliveries = 0
        for (d0, c0), (d1, c1) in zip(before, after, strict=True):
            deliveries += d1 - d0
            calls.update({f"peer:{m}": n - c0.get(m, 0) for m, n in c1.items()})
        seed_calls = json.loads(Path(ledger).read_text()) if os.path.exists(ledger) else {}
        calls.update({f"seed:{m}": n for m, n in seed_calls.items()})
        calls = Counter({m: n for m, n in calls.items() if n})
        return Delivered(deliveries, sum(calls.values()), dict(sorted(calls.items())), report.ok)

    def close(self) -> None:
        for actor in [*self._groups, self._sched]:
            if actor is not None:
                ray.kill(actor)  # the scheduler's standby seed dies with it (its owner)
        self._groups, self._sched = [], None


PROTOCOLS: dict[str, type[BatchedProtocol]] = {"batched": BatchedProtocol}


# -- the command -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: measure each protocol at each K; print a table, ``--json`` writes the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="16,64,256", help="comma-separated K (simulated nodes)")
    ap.add_argument("--pieces", type=int, default=2000, help="pieces in the repo (each goes to every node)")
    ap.add_argument("--files", type=int, default=8, help="files the pieces are spread over")
    ap.add_argument("--groups", type=int, default=4, help="stand-in actors the nodes are spread over")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"of {sorted(PROTOCOLS)}")
    ap.add_argument("--max-deliveries", type=int, default=0,
                    help="fewer pieces where K x pieces would exceed this (a slow protocol at "
                         "large K; the table shows the pieces used)")
    ap.add_argument("--limits", default="", metavar="D,U,O,S",
                    help="the policy's caps (peer downloads, holder uploads, origin fetches, "
                         "seed uploads; default raydf's own), e.g. 16,8,8,16 for deeper windows")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    try:
        limits = Limits.from_caps(args.limits)
    except ValueError as exc:
        ap.error(f"--limits: {exc}")
    if sys.platform != "win32":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    for var, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0")):
        os.environ.setdefault(var, value)
    if __name__ != "__main__":  # imported (tests): Ray workers cannot import this file by name
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * MiB)
    rows: list[Figures] = []
    try:
        for name in args.protocols.split(","):
            for k in (int(x) for x in args.nodes.split(",")):
                pieces = args.pieces
                if args.max_deliveries and k * pieces > args.max_deliveries:
                    pieces = max(1, args.max_deliveries // k)
                figures = measure(PROTOCOLS[name](args.groups, limits), k, pieces, files=args.files)
                rows.append(figures)
                print(f"{name} K={k}: {figures.deliveries_per_second:,.0f} deliveries/s, "
                      f"{figures.cpu_us_per_delivery:.1f} us scheduler CPU and "
                      f"{figures.calls_per_delivery:.3f} scheduler calls per delivery "
                      f"({figures.seconds:.1f} s)", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    print(table(rows))
    print(f"\ntargets at K = 256: >= {TARGET_RATE:,.0f} deliveries/s, <= {TARGET_CPU_US:.0f} us "
          "scheduler CPU per delivery")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": [f.as_dict() for f in rows]}, indent=2))
    return 0 if all(f.ok for f in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
