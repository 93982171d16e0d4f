"""Many small files: raydf to N nodes vs one node alone with ``huggingface_hub``.

A dataset of thousands of small files (default 2,000 of 16 KiB, half of them
LFS) is served by the hub emulator, the origin capped for all connections
together (default 20 MB/s), and delivered cold, side by side in one run:

* ``huggingface_hub``: one node alone runs ``snapshot_download`` (the
  official client, unchanged, its default 8 workers);
* ``raydf``: one fan-out (``raydf.api.run_fanout``) to the first N nodes of a
  LocalCluster, for each N of ``--nodes`` (default 2 and 4).

The cluster's actors are started first by a tiny fan-out to every node, and
``huggingface_hub``'s worker by a tiny download on node 0 (both thrown away):
what is measured is the transfer, not Ray starting workers. Each run starts
cold (node caches emptied, a fresh destination, the emulator's counters
zeroed, the disk synced). Hub requests are counted at the emulator: the
hub's own (API and ``/resolve/``) and the CDN's. Prints a table and the
targets of DESIGN.md (raydf at the largest N no slower than the one node
alone, no more hub requests, the same requests at every N), met or missed.

    python benchmarks/small_files.py                        # 2,000 x 16 KiB to 2 and 4 nodes
    python benchmarks/small_files.py --files 200 --nodes 2 --json out.json
    python benchmarks/small_files.py --size 64KiB --lfs-share 1 --bandwidth 50MB
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `raydf` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raydf.cache import node_path
from raydf.comparison import (
    arg_type,
    format_bytes,
    format_rate,
    format_table,
    parse_list,
    parse_rate,
    parse_size,
    plural,
    write_json,
)
from raydf.demo import Bench, log, pinned_to, repo_files, run_raydf
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_small_files

__all__ = ["SmallRun", "main", "run_hf_one_node"]

REPO = "raydf-bench/small-files"
WARM_REPO = "raydf-bench/small-warm-up"
DEST_ROOT = "/raydf-small"
HF = "huggingface_hub"
RAYDF = "raydf"


@dataclass(frozen=True)
class SmallRun:
    """One cold delivery of the dataset."""

    mode: str
    nodes: int
    seconds: float
    hub_requests: int  # API + /resolve/ on the hub, and the CDN's: everything the emulator answered
    hub_only: int  # the hub's own listener (API and /resolve/)
    cdn: int  # the CDN's listener (LFS bytes)
    origin_bytes: int
    ok: bool
    statuses: dict[str, int]  # answers by HTTP status: a retry shows as a 5xx, 403 or a cut


def hf_snapshot_here(repo_id: str, dest: str, endpoint: str) -> float:
    """``snapshot_download`` of a dataset into ``dest`` on this node; return when done."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, repo_type="dataset", local_dir=node_path(dest), endpoint=endpoint,
                      token=False)
    return time.time()


def run_hf_one_node(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """The first node alone downloads the dataset with ``huggingface_hub``."""
    import ray

    task = ray.remote(hf_snapshot_here)
    node = nodes[0]
    return [ray.get(task.options(num_cpus=0, scheduling_strategy=pinned_to(node),
                                 runtime_env=bench.hf_env)
                    .remote(bench.repo_id.removeprefix("datasets/"), dest, bench.hub.hf_endpoint))]


Runner = Callable[[Bench, list[str], str], list[float]]


def measure(bench: Bench, mode: str, runner: Runner, count: int, serial: int) -> SmallRun:
    """One cold run of ``runner`` to the first ``count`` nodes (wall time of the call)."""
    nodes = bench.cluster.node_ids[:count]
    dest = f"{DEST_ROOT}/{mode}-{count}-{serial}"
    bench.cluster.clear_caches()
    bench.hub.reset_stats()
    os.sync()  # what earlier runs wrote is not charged to this one
    started = time.time()
    try:
        runner(bench, nodes, dest)
        seconds = time.time() - started
        stats = bench.hub.stats()
        ok = all(repo_files(bench.cluster.path_on(n, dest)) == bench.files for n in nodes)
    finally:
        for node in nodes:
            shutil.rmtree(bench.cluster.path_on(node, dest), ignore_errors=True)
    listeners = stats["by_listener"]
    return SmallRun(mode, count, round(seconds, 3), stats["requests"],
                    listeners["hf"]["requests"], listeners["cdn"]["requests"],
                    stats["download_bytes"], ok, dict(sorted(stats["status_counts"].items())))


@contextlib.contextmanager
def open_bench(args: argparse.Namespace) -> Iterator[Bench]:
    """The dataset and a tiny warm-up repo in the emulator, and a LocalCluster."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raydf-small-")))
        log(f"writing {args.files} files of {format_bytes(args.size)} "
            f"({args.lfs_share:.0%} LFS)")
        folder = make_small_files(tmp / "hub", REPO, args.files, args.size, args.lfs_share)
        make_small_files(tmp / "hub", WARM_REPO, 8, 1024, 0.5, seed=1)
        hub = stack.enter_context(HubEmulator(tmp / "hub"))
        cluster = LocalCluster(max(args.nodes), root=tmp / "nodes")
        stack.callback(cluster.shutdown)
        log(f"starting a local Ray cluster of {plural(max(args.nodes), 'simulated node')}")
        cluster.start()
        yield Bench(hub, cluster, f"datasets/{REPO}", repo_files(folder), tmp / "hf-home")


def warm_up(bench: Bench) -> None:
    """Start raydf's actors on every node and huggingface_hub's worker on node 0."""
    warm = Bench(bench.hub, bench.cluster, f"datasets/{WARM_REPO}",
                 {}, bench.hf_home)
    log("warming up: a tiny raydf fan-out to every node, a tiny huggingface_hub download")
    nodes = bench.cluster.node_ids
    for runner, dest in ((run_raydf, "/raydf-small-warm/raydf"),
                         (run_hf_one_node, "/raydf-small-warm/hf")):
        runner(warm, nodes, dest)
        for node in nodes:
            shutil.rmtree(bench.cluster.path_on(node, dest), ignore_errors=True)


def targets(runs: Sequence[SmallRun]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for DESIGN.md's many-small-files targets."""
    alone = next(r for r in runs if r.mode == HF)
    ours = sorted((r for r in runs if r.mode == RAYDF), key=lambda r: r.nodes)
    widest = ours[-1]
    out = [
        (f"raydf to {widest.nodes} nodes no slower than 1 node alone with huggingface_hub",
         f"{widest.seconds:.2f} s vs {alone.seconds:.2f} s "
         f"({widest.seconds / max(alone.seconds, 1e-9):.2f}x)", widest.seconds <= alone.seconds),
        (f"raydf to {widest.nodes} nodes sends no more hub requests than 1 node alone",
         f"{widest.hub_requests} vs {alone.hub_requests}",
         widest.hub_requests <= alone.hub_requests),
    ]
    if len(ours) > 1:
        counts = ", ".join(f"{r.hub_requests} ({plural(r.nodes, 'node')})" for r in ours)
        out.append(("raydf's origin requests independent of the number of nodes", counts,
                    len({r.hub_requests for r in ours}) == 1))
    return out


def report_text(runs: Sequence[SmallRun], met: Sequence[tuple[str, str, bool]]) -> str:
    rows = [(r.mode, r.nodes, f"{r.seconds:.2f}", r.hub_requests, r.hub_only, r.cdn,
             format_bytes(r.origin_bytes), "yes" if r.ok else "NO",
             " ".join(f"{k}:{v}" for k, v in r.statuses.items())) for r in runs]
    table = format_table(("mode", "nodes", "seconds", "hub requests", "hub (API+resolve)",
                          "CDN", "origin bytes", "ok", "answers"), rows)
    lines = [f"{'met ' if ok else 'MISSED'} {what}: {measured}" for what, measured, ok in met]
    return table + "\n\n" + "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="examples:\n" + (__doc__ or "").rsplit("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--files", type=arg_type(_count), default=2000, metavar="N",
                        help="files in the dataset (default 2000)")
    parser.add_argument("--size", type=arg_type(parse_size), default=16 * 2**10, metavar="SIZE",
                        help="size of each file (default 16KiB)")
    parser.add_argument("--lfs-share", type=float, default=0.5, metavar="F",
                        help="share of the files stored in LFS (default 0.5)")
    parser.add_argument("--nodes", type=arg_type(lambda t: parse_list(t, _count)),
                        default=[2, 4], metavar="N,N",
                        help="node counts of the raydf runs; the cluster has the largest "
                        "(default 2,4)")
    parser.add_argument("--bandwidth", type=arg_type(parse_rate), default=20e6, metavar="RATE",
                        help="origin cap for all connections together (default 20MB; "
                        "'none' uncaps)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results here")
    args = parser.parse_args(argv)
    if not 0.0 <= args.lfs_share <= 1.0:
        parser.error("--lfs-share must be between 0 and 1")
    return args


def _count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise ValueError(f"expected a count of at least 1, got {count}")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; exit status 0 when every run delivered every file."""
    args = parse_args(argv)
    runs: list[SmallRun] = []
    with open_bench(args) as bench:
        warm_up(bench)
        bench.set_origin(args.bandwidth, None)
        plan: list[tuple[str, Runner, int]] = [(HF, run_hf_one_node, 1)]
        plan += [(RAYDF, run_raydf, n) for n in sorted(args.nodes)]
        for serial, (mode, runner, count) in enumerate(plan):
            log(f"running {mode} on {plural(count, 'node')}, origin "
                f"{format_rate(args.bandwidth)}")
            runs.append(measure(bench, mode, runner, count, serial))
            log(f"{mode}: {runs[-1].seconds:.2f} s, {runs[-1].hub_requests} hub requests")
    met = targets(runs)
    print(report_text(runs, met))
    if args.json:
        config = {"files": args.files, "size": args.size, "lfs_share": args.lfs_share,
                  "nodes": args.nodes, "bandwidth": args.bandwidth}
        results: dict[str, Any] = {
            "config": config, "runs": [asdict(r) for r in runs],
            "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in met],
        }
        write_json(args.json, results)
        print(f"\nresults written to {args.json}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
