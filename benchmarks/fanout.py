"""Fan-out benchmark: raydf vs per-node ``huggingface_hub`` vs a hand-written Ray broadcast.

A synthetic model (default 256 MiB in 4 shards, plus the small files of a
model repo) is served by the hub emulator and delivered, cold, to N simulated
nodes of one LocalCluster (started once with max(N) nodes; a run uses the
first N) in three ways, side by side:

* ``direct``: every node runs ``huggingface_hub.snapshot_download`` at once;
* ``broadcast``: what a Ray user writes by hand: one actor on the head node
  downloads the repo with ``huggingface_hub`` and ``ray.put``s every file as
  ``np.uint8``; then a task on every node ``ray.get``s each file and writes it;
* ``raydf``: one fan-out (``raydf.api.run_fanout``).

Capped part: the origin is capped for all connections together (default
20 MB/s and 50 MB/s; see DESIGN.md, Targets, for why so low on one machine).
Single-node part: the origin uncapped in aggregate but capped per connection
(like a CDN, default 25 MB/s a stream), raydf vs ``huggingface_hub`` on a
one-node cluster of its own, the median of five runs each.

Every run is cold (node caches emptied, a fresh destination, the emulator's
counters zeroed, the disk synced) after one uncapped warm-up round. Prints the runs, the
ratios and DESIGN.md's targets, met or missed, and writes them as JSON and
the runs as Parquet.

    python benchmarks/fanout.py                                  # the full run, ~12 min
    python benchmarks/fanout.py --repeats 3                      # medians of 3, ~30 min
    python benchmarks/fanout.py --nodes 1,4 --size 128MiB --bandwidth 20MB --json out.json
    python benchmarks/fanout.py --single --single-per-connection 25MB  # single node only
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `raydf` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raydf.cache import node_path
from raydf.cluster.service import SEED_RESOURCE
from raydf.comparison import (
    RAYDF,
    MiB,
    Run,
    arg_type,
    compare,
    evaluate,
    median_run,
    origin_label,
    parse_list,
    parse_rate,
    parse_size,
    plural,
    report_text,
    results_dict,
    write_json,
)
from raydf.demo import (
    Bench,
    Runner,
    log,
    measure,
    open_bench,
    pinned_to,
    run_direct,
    run_raydf,
    snapshot_here,
    warm_up,
)
from raydf.options import make_request

__all__ = ["Downloader", "main", "run_broadcast", "run_capped", "run_single", "write_files"]

SINGLE_REPEATS = 5


class Downloader:
    """The broadcast's source: downloads the repo and ``ray.put``s every file.

    An actor, not a task: an object dies with the process that put it, and a
    task's worker may exit once it is idle, so the refs must have a living owner.
    """

    def fetch(self, repo_id: str, staging: str, endpoint: str) -> list[tuple[str, Any]]:
        """Download into ``staging`` on this node, put each file, return ``(path, ref)`` pairs."""
        import numpy as np
        import ray

        from raydf.demo import repo_files

        snapshot_here(repo_id, staging, endpoint)
        folder = node_path(staging)
        refs = [(rel, ray.put(np.fromfile(folder / rel, dtype=np.uint8))) for rel in repo_files(folder)]
        shutil.rmtree(folder)
        return refs


def write_files(files: list[tuple[str, Any]], dest: str) -> float:
    """``ray.get`` each file and write it under ``dest`` on this node; return when done."""
    import ray

    root = node_path(dest)
    for rel, ref in files:
        data = ray.get(ref)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(memoryview(data))
        del data  # let the object store evict this node's copy
    return time.time()


def run_broadcast(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """A hand-written Ray broadcast: download once on the head node, every node ``ray.get``s."""
    import ray

    downloader: Any = ray.remote(Downloader).options(
        num_cpus=0, resources={SEED_RESOURCE: 0.01}, runtime_env=bench.hf_env).remote()
    try:
        files = ray.get(downloader.fetch.remote(bench.repo_id, f"{dest}-staging",
                                                bench.hub.hf_endpoint))
        writer = ray.remote(write_files)
        return ray.get([writer.options(num_cpus=0, scheduling_strategy=pinned_to(node))
                        .remote(files, dest) for node in nodes])
    finally:
        ray.kill(downloader)


RUNNERS: dict[str, Runner] = {"direct": run_direct, "broadcast": run_broadcast, RAYDF: run_raydf}


def run_capped(bench: Bench, runners: dict[str, Runner], counts: Sequence[int],
               bandwidths: Sequence[float | None], per_connection: float | None,
               repeats: int = 1) -> list[Run]:
    """Every mode at every node count, for each origin cap; with ``repeats``, the
    modes take turns that many times and each keeps its median run."""
    runs = []
    for bandwidth in bandwidths:
        bench.set_origin(bandwidth, per_connection)
        for count in sorted(counts):
            trials: dict[str, list[Run]] = {mode: [] for mode in runners}
            for trial in range(1, repeats + 1):
                for mode, runner in runners.items():
                    turn = f" ({trial} of {repeats})" if repeats > 1 else ""
                    log(f"running {mode} on {plural(count, 'node')}, origin "
                        f"{origin_label(*bench.origin)}{turn}")
                    trials[mode].append(measure(bench, mode, runner, count))
                    log(f"{mode}: {trials[mode][-1].seconds:.1f} s")
            for mode in runners:
                runs.append(median_run(trials[mode]))
                if repeats > 1:
                    seconds = ", ".join(f"{r.seconds:.1f}" for r in trials[mode])
                    log(f"{mode} on {plural(count, 'node')}: median {runs[-1].seconds:.1f} s "
                        f"of {seconds}")
    return runs


def local_here(repo_id: str, dest: str, endpoint: str) -> float:
    """``raydf get --local`` on this node (no fan-out machinery); return when done."""
    from raydf.api import download_here

    request = make_request(f"hf://{repo_id}", dest, environ={},
                           hub_options={"hf_endpoint": endpoint})
    if not download_here(request).ok:
        raise RuntimeError("raydf get --local failed")
    return time.time()


def run_local(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """Each node runs ``raydf get --local`` on its own (the single-machine path)."""
    import ray

    task = ray.remote(local_here)
    return ray.get([
        task.options(num_cpus=0, scheduling_strategy=pinned_to(node))
        .remote(bench.repo_id, dest, bench.hub.hf_endpoint)
        for node in nodes
    ])


SINGLE_RUNNERS: dict[str, Runner] = {"direct": run_direct, RAYDF: run_raydf,
                                     "raydf-local": run_local}


def run_single(bench: Bench, per_connection: float | None) -> list[Run]:
    """raydf (fan-out and ``--local``) vs ``huggingface_hub`` on one node, the origin
    capped per connection only."""
    bench.set_origin(None, per_connection)
    log(f"running {', '.join(SINGLE_RUNNERS)} on 1 node in turn, origin "
        f"{origin_label(*bench.origin)}, {SINGLE_REPEATS} times each")
    trials: dict[str, list[Run]] = {mode: [] for mode in SINGLE_RUNNERS}
    for _ in range(SINGLE_REPEATS):
        for mode, runner in SINGLE_RUNNERS.items():
            trials[mode].append(measure(bench, mode, runner, 1))
    runs = []
    for mode in SINGLE_RUNNERS:
        runs.append(median_run(trials[mode]))
        seconds = ", ".join(f"{r.seconds:.2f}" for r in trials[mode])
        log(f"{mode}: median {runs[-1].seconds:.2f} s of {seconds}")
    return runs


def write_parquet(path: Path, runs: Sequence[Run]) -> Path:
    """One row per run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([asdict(r) for r in runs]), path)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="examples:\n" + (__doc__ or "").rsplit("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=arg_type(lambda t: parse_list(t, _count)),
                        default=[1, 2, 4, 8], metavar="N,N", help="node counts (default 1,2,4,8)")
    parser.add_argument("--size", type=arg_type(parse_size), default=256 * MiB, metavar="SIZE",
                        help="model size (default 256MiB)")
    parser.add_argument("--shards", type=int, default=4, help="safetensors shards (default 4)")
    parser.add_argument("--bandwidth", type=arg_type(lambda t: parse_list(t, parse_rate)),
                        default=[20e6, 50e6], metavar="RATE,RATE",
                        help="origin caps for all connections together (default 20MB,50MB)")
    parser.add_argument("--per-connection", type=arg_type(parse_rate), metavar="RATE",
                        help="origin cap per connection in the capped runs (default none)")
    parser.add_argument("--single-per-connection", type=arg_type(parse_rate), default=25e6,
                        metavar="RATE", help="origin cap per connection in the single-node runs, "
                        "where the aggregate is uncapped (default 25MB, like a CDN stream)")
    parser.add_argument("--modes", type=arg_type(lambda t: parse_list(t, _mode)),
                        default=list(RUNNERS), metavar="MODE,MODE",
                        help=f"modes of the capped runs (default {','.join(RUNNERS)})")
    parser.add_argument("--repeats", type=arg_type(_count), default=1, metavar="K",
                        help="run each capped case K times, the modes taking turns, and keep "
                        "each mode's median (default 1; two shared cores are noisy)")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--single", action="store_true", help="only the single-node comparison")
    part.add_argument("--no-single", action="store_true", help="skip the single-node comparison")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="results file (default fanout-<time>.json here); the runs also "
                        "go to OUT with the suffix .parquet")
    return parser.parse_args(argv)


def _count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise ValueError(f"expected a count of at least 1, got {count}")
    return count


def _mode(text: str) -> str:
    if text not in RUNNERS:
        raise ValueError(f"unknown mode {text!r}; known: {', '.join(RUNNERS)}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when every run delivered every file."""
    args = parse_args(argv)
    runners = {m: RUNNERS[m] for m in args.modes}
    runs: list[Run] = []
    if not args.single:
        with open_bench(max(args.nodes), args.size, args.shards) as bench:
            warm_up(bench, runners)
            runs += run_capped(bench, runners, args.nodes, args.bandwidth, args.per_connection,
                               args.repeats)
    if not args.no_single:
        # A one-node cluster, as on one machine: no idle simulated nodes sharing
        # the CPUs, and the seed on the node (no second raylet between them).
        with open_bench(1, args.size, args.shards, seed_on_node=True) as bench:
            warm_up(bench, {m: SINGLE_RUNNERS[m] for m in ("direct", RAYDF)})
            runs += run_single(bench, args.single_per_connection)
    comparisons = compare(runs)
    targets = evaluate(runs, comparisons)
    print(report_text(runs, comparisons, targets))
    config = {"nodes": args.nodes, "size": args.size, "shards": args.shards,
              "bandwidth": args.bandwidth, "per_connection": args.per_connection,
              "single_per_connection": None if args.no_single else args.single_per_connection,
              "modes": list(runners), "repeats": args.repeats, "repo_bytes": bench.repo_bytes}
    out = args.json or Path(f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_json(out, results_dict(config, runs, comparisons, targets))
    write_parquet(out.with_suffix(".parquet"), runs)
    print(f"\nresults written to {out} and {out.with_suffix('.parquet')}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
