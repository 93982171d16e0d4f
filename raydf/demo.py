"""``raydf demo``: peer-to-peer fan-out vs every node downloading on its own.

It writes a synthetic model into a temporary folder, serves it with the hub
emulator with the origin capped (like a busy hub: 20 MB/s for all
connections together by default), starts a LocalCluster of simulated nodes
and delivers the model to every node, cold, twice:

* ``direct``: every node runs ``huggingface_hub.snapshot_download`` at once
  (what people do today): the origin sends the repo once per node;
* ``raydf``: one fan-out: the origin is read once, nodes share pieces.

Then it prints the time to the last node, the origin traffic and the
speed-up, and writes them as JSON.

The measuring code lives here and ``benchmarks/fanout.py`` runs it too (with
a hand-written Ray broadcast, more node counts and origin caps): a
:class:`Bench` is the emulator plus the cluster, a *runner* delivers the repo
to some nodes one way, :func:`measure` times one cold run of a runner,
and :mod:`raydf.comparison` turns runs into ratios, targets and tables
(DESIGN.md, Targets).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydf.cache import node_path
from raydf.comparison import (
    RAYDF,
    Run,
    arg_type,
    compare,
    evaluate,
    format_bytes,
    format_rate,
    parse_rate,
    parse_size,
    plural,
    report_text,
    results_dict,
    split_size,
    write_json,
)
from raydf.options import make_request
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_model

__all__ = [
    "Bench",
    "Runner",
    "log",
    "main",
    "measure",
    "open_bench",
    "parse_args",
    "pinned_to",
    "repo_files",
    "run_direct",
    "run_raydf",
    "snapshot_here",
    "warm_up",
]

MiB = 2**20
REPO_ID = "raydf-bench/synthetic-model"
DEST_ROOT = "/raydf-bench"
_MIN_STORE = 512 * MiB  # object store of each simulated node, at least


DEMO_EPILOG = """example:
  raydf demo --nodes 4 --size 256MiB --bandwidth 20MB --out /tmp/raydf-demo
      4 simulated nodes, a 256 MiB model, the origin capped at 20 MB/s; about
      2 minutes on an idle 2-core machine; writes /tmp/raydf-demo/demo.json

Needs huggingface_hub (for the per-node baseline). Sizes take decimal (kB, MB,
GB) or binary (KiB, MiB, GiB) units.
"""


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the bench -----------------------------------------------------------------


@dataclass
class Bench:
    """The hub emulator serving one synthetic model, and the cluster to deliver it to."""

    hub: HubEmulator
    cluster: LocalCluster
    repo_id: str
    files: dict[str, int]  # path in the repo -> size
    hf_home: Path
    origin: tuple[float | None, float | None] = (None, None)
    serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def repo_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def hf_env(self) -> dict[str, Any]:
        """The runtime env of Ray workers that run ``huggingface_hub`` against the emulator.

        ``huggingface_hub`` reads ``HF_ENDPOINT`` when imported (``endpoint=``
        alone leaves some calls aimed at huggingface.co), so its workers get it
        in their environment; ``HF_HOME`` keeps the user's token file out.
        """
        return {"env_vars": {"HF_ENDPOINT": self.hub.hf_endpoint, "HF_HOME": str(self.hf_home),
                             "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}}

    def set_origin(self, bandwidth: float | None, per_connection: float | None) -> None:
        """Cap the origin: all connections together, and each one (bytes/s; None uncaps)."""
        self.hub.set_knobs(bandwidth=bandwidth, per_connection=per_connection)
        self.origin = (bandwidth, per_connection)


@contextlib.contextmanager
def open_bench(num_nodes: int, size: int, shards: int = 4,
               seed_on_node: bool = False) -> Iterator[Bench]:
    """A synthetic model of ``size`` bytes in ``shards`` safetensors files (plus the
    small files of a model repo), the emulator serving it uncapped, and a
    LocalCluster of ``num_nodes`` nodes (``seed_on_node``: see LocalCluster);
    all torn down on exit."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raydf-bench-")))
        log(f"writing a {format_bytes(size)} synthetic model in {shards} shards")
        folder = make_model(tmp / "hub", REPO_ID, shard_sizes=split_size(size, shards))
        hub = stack.enter_context(HubEmulator(tmp / "hub"))
        log(f"hub emulator ready at {hub.hf_endpoint}")
        store = max(_MIN_STORE, 2 * size // shards)
        cluster = LocalCluster(num_nodes, root=tmp / "nodes", object_store_memory=store,
                               head_object_store_memory=store + size, seed_on_node=seed_on_node)
        stack.callback(cluster.shutdown)
        log(f"starting a local Ray cluster of {plural(num_nodes, 'simulated node')}")
        cluster.start()
        log("cluster ready")
        yield Bench(hub, cluster, REPO_ID, repo_files(folder), tmp / "hf-home")


def repo_files(folder: Path) -> dict[str, int]:
    """Path -> size of every file under ``folder``, except huggingface_hub's ``.cache``."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != ".cache"}


# -- runners: deliver the repo to some nodes, return when each node was done ---

Runner = Callable[[Bench, list[str], str], list[float]]
"""``runner(bench, node_ids, dest)``: put the repo at ``dest`` on every node;
returns, per node in order, the wall-clock time (``time.time()``) it was done."""


def pinned_to(node_id: str) -> Any:
    """A scheduling strategy that runs a task on ``node_id`` and nowhere else."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def snapshot_here(repo_id: str, dest: str, endpoint: str) -> float:
    """Download the repo into ``dest`` on this node with ``huggingface_hub``; return when done."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, local_dir=node_path(dest), endpoint=endpoint, token=False)
    return time.time()


def run_direct(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """Every node downloads the repo on its own, all at once (what people do today)."""
    import ray

    task = ray.remote(snapshot_here)
    return ray.get([
        task.options(num_cpus=0, scheduling_strategy=pinned_to(node), runtime_env=bench.hf_env)
        .remote(bench.repo_id, dest, bench.hub.hf_endpoint)
        for node in nodes
    ])


def run_raydf(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """One raydf fan-out to ``nodes``.

    Node times come from the scheduler's report (seconds since the job
    started), anchored at the moment the fan-out returned.
    """
    from raydf.api import run_fanout

    request = make_request(f"hf://{bench.repo_id}", dest, environ={},
                           hub_options={"hf_endpoint": bench.hub.hf_endpoint})
    report = run_fanout(request, nodes)
    end = time.time()
    if not report.ok:
        raise RuntimeError(f"the raydf fan-out failed: {[n.error for n in report.nodes if not n.ok]}")
    done = {n.node_id: end - (report.seconds - n.seconds) for n in report.nodes}
    _wait_for_standby_seed()
    return [done[node] for node in nodes]


def _wait_for_standby_seed() -> None:
    """Wait (untimed) until the scheduler's next seed has started: it starts as a
    job ends, and the next run should not share the CPUs with its start-up."""
    import ray

    from raydf.cluster.service import scheduler

    seed = ray.get(scheduler().standby_seed())
    if seed is not None:
        ray.get(seed.counts())


def measure(bench: Bench, mode: str, runner: Runner, count: int) -> Run:
    """One cold run of ``runner`` to the first ``count`` nodes.

    Cold: node caches emptied, a fresh destination (removed afterwards), the
    emulator's counters zeroed, the disk synced. The CPU the cluster's Ray
    processes spent is counted from the start to the last node done.
    """
    nodes = bench.cluster.node_ids[:count]
    dest = f"{DEST_ROOT}/{mode}-{count}-{next(bench.serial)}"
    bench.cluster.clear_caches()
    bench.hub.reset_stats()
    # Let the disk settle: what earlier runs wrote back or deleted (an ext4
    # mounted with `discard` trims freed blocks at the next journal commit)
    # is not charged to this run.
    os.sync()
    started = time.time()
    try:
        with bench.cluster.cpu_meter() as cpu:
            done = runner(bench, nodes, dest)
        stats = bench.hub.stats()
        ok = all(repo_files(bench.cluster.path_on(n, dest)) == bench.files for n in nodes)
    finally:
        for node in nodes:
            shutil.rmtree(bench.cluster.path_on(node, dest), ignore_errors=True)
    node_seconds = [round(t - started, 3) for t in done]
    return Run(mode, count, *bench.origin, seconds=max(node_seconds), node_seconds=node_seconds,
               repo_bytes=bench.repo_bytes, origin_bytes=stats["download_bytes"],
               origin_requests=stats["requests"], ok=ok, cpu_seconds=round(cpu.seconds, 2))


def warm_up(bench: Bench, runners: Mapping[str, Runner]) -> None:
    """One uncapped run of every mode on every node, thrown away.

    It starts the Ray workers and raydf's peers and pages in the object
    stores' shared memory, which make the first round slower.
    """
    saved = bench.origin
    bench.set_origin(None, None)
    count = len(bench.cluster.node_ids)
    for mode, runner in runners.items():
        log(f"warming up: {mode} on {plural(count, 'node')}, origin uncapped")
        measure(bench, mode, runner, count)
    bench.set_origin(*saved)


# -- the demo ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="raydf demo",
        description="Deliver a synthetic model from a local hub emulator (the origin capped)\n"
        "to every node of a local Ray cluster, twice: each node downloading on its own\n"
        "with huggingface_hub, then one raydf fan-out. Prints time and origin traffic\n"
        "side by side; progress goes to stderr.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=4, metavar="N",
                        help="simulated nodes (default 4), e.g. --nodes 8")
    parser.add_argument("--size", type=arg_type(parse_size), default=256 * MiB, metavar="SIZE",
                        help="model size, in 4 shards plus small files (default 256MiB)")
    parser.add_argument("--bandwidth", type=arg_type(parse_rate), default=20e6, metavar="RATE",
                        help="origin cap for all connections together (default 20MB, i.e. "
                        "20 MB/s; 'none' uncaps)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for demo.json (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``raydf demo``; returns the exit status (0 when every run delivered every file)."""
    args = parse_args(argv)
    if importlib.util.find_spec("huggingface_hub") is None:
        print("raydf demo: the per-node baseline needs huggingface_hub: "
              "pip install huggingface_hub", file=sys.stderr)
        return 2
    runners: dict[str, Runner] = {"direct": run_direct, RAYDF: run_raydf}
    with open_bench(args.nodes, args.size) as bench:
        warm_up(bench, runners)
        bench.set_origin(args.bandwidth, None)
        runs = []
        for mode, runner in runners.items():
            log(f"running {mode} on {plural(args.nodes, 'node')}, origin {format_rate(args.bandwidth)}")
            runs.append(measure(bench, mode, runner, args.nodes))
            log(f"{mode}: {runs[-1].seconds:.1f} s")
    comparisons = compare(runs)
    targets = evaluate(runs, comparisons)
    print(report_text(runs, comparisons, targets))
    config = {"nodes": args.nodes, "size": args.size, "bandwidth": args.bandwidth}
    out = args.out or Path(tempfile.mkdtemp(prefix="raydf-demo-"))
    path = write_json(out / "demo.json", results_dict(config, runs, comparisons, targets))
    print(f"\nresults written to {path}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
