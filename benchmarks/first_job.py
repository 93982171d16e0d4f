"""The first job on a fresh cluster against the second: ``raydf get`` from the command line.

A synthetic model (default 172 MiB in 4 shards, plus the small files of a
model repo) is served by the hub emulator, capped for all connections
together (default 20 MB/s, so the bound is the repo over the cap), and
delivered by ``raydf get ... --address ADDR`` run as a command, timed end to
end (the command's own start and its connection to Ray included), to every
simulated GPU node of a LocalCluster started just before the first job:

* ``first``: nothing of raydf runs yet: its scheduler, the seeds and one peer
  per node start inside the job;
* ``second``: the same again, into a fresh destination with every node cache
  emptied (the actors are up).

``--repeats K`` starts K fresh clusters and keeps the medians. Prints the
times, the gap (goal: T(first) - T(second) <= 2 s at 8 nodes, issue 14) and
the second job over the bound.

    python benchmarks/first_job.py                         # 8 nodes, 172 MiB, 20 MB/s
    python benchmarks/first_job.py --nodes 4 --repeats 3 --json first.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `raydf` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raydf.comparison import (
    arg_type,
    format_bytes,
    format_rate,
    format_table,
    parse_rate,
    parse_size,
    split_size,
    write_json,
)
from raydf.demo import log, repo_files
from raydf.testing.cluster import RAY_ENV, LocalCluster
from raydf.testing.hub import HubEmulator, make_model

__all__ = ["main", "time_get"]

REPO_ID = "raydf-bench/first-job"
GAP_GOAL = 2.0  # s, T(first) - T(second) at 8 nodes


def raydf_command() -> str:
    """The ``raydf`` command of this Python's environment."""
    beside = Path(sys.executable).with_name("raydf")
    found = str(beside) if beside.exists() else shutil.which("raydf")
    if found is None:
        raise SystemExit("first_job.py: no raydf command; install the project (make setup)")
    return found


def time_get(cluster: LocalCluster, hub: HubEmulator, dest: str) -> float:
    """Run ``raydf get`` into ``dest`` on every node of ``cluster``; return its wall
    time once it exited 0 and every node has the repo (else raise)."""
    command = [raydf_command(), "get", f"hf://{REPO_ID}", "-O", dest, "-r",
               "--address", str(cluster.address), "--hf-endpoint", hub.hf_endpoint]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "RAY_ADDRESS")}
    started = time.monotonic()
    done = subprocess.run(command, env={**env, **RAY_ENV}, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"raydf get exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return seconds


def one_cluster(args: argparse.Namespace, root: Path, hub: HubEmulator,
                expected: dict[str, int], serial: int) -> tuple[float, float]:
    """Start a fresh cluster, time the first job and the second; both checked."""
    times = []
    with LocalCluster(args.nodes, root=root / f"nodes-{serial}", connect=False) as cluster:
        for run in ("first", "second"):
            cluster.clear_caches()
            os.sync()
            dest = f"/bench/{run}"
            seconds = time_get(cluster, hub, dest)
            missing = [n for n in cluster.node_ids
                       if repo_files(cluster.path_on(n, dest)) != expected]
            if missing:
                raise RuntimeError(f"the {run} job left {len(missing)} nodes without the repo")
            log(f"cluster {serial + 1}: {run} job {seconds:.1f} s")
            times.append(seconds)
    return times[0], times[1]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="examples:\n" + (__doc__ or "").rsplit("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=8, metavar="N",
                        help="simulated GPU nodes (default 8)")
    parser.add_argument("--size", type=arg_type(parse_size), default=172 * 2**20,
                        metavar="SIZE", help="model size, in 4 shards (default 172MiB)")
    parser.add_argument("--bandwidth", type=arg_type(parse_rate), default=20e6, metavar="RATE",
                        help="origin cap, all connections together (default 20MB)")
    parser.add_argument("--repeats", type=int, default=1, metavar="K",
                        help="fresh clusters to measure, medians kept (default 1)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.repeats < 1:
        parser.error("--nodes and --repeats must be at least 1")
    if args.bandwidth is None:
        parser.error("--bandwidth must be a cap: the bound is the repo over it")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="raydf-first-") as tmp:
        root = Path(tmp)
        folder = make_model(root / "hub", REPO_ID, shard_sizes=split_size(args.size, 4))
        expected = repo_files(folder)
        repo = sum(expected.values())
        bound = repo / args.bandwidth
        log(f"{format_bytes(repo)} repo, origin {format_rate(args.bandwidth)}: bound {bound:.1f} s")
        with HubEmulator(root / "hub", bandwidth=args.bandwidth) as hub:
            pairs = [one_cluster(args, root, hub, expected, k) for k in range(args.repeats)]
    first = statistics.median(p[0] for p in pairs)
    second = statistics.median(p[1] for p in pairs)
    gap = first - second
    rows = [[k + 1, f"{a:.1f}", f"{b:.1f}", f"{a - b:.1f}"] for k, (a, b) in enumerate(pairs)]
    if len(pairs) > 1:
        rows.append(["median", f"{first:.1f}", f"{second:.1f}", f"{gap:.1f}"])
    print(format_table(["cluster", "first job s", "second job s", "gap s"], rows))
    met = gap <= GAP_GOAL
    print(f"\n{args.nodes} nodes, bound {bound:.1f} s: second job {second / bound:.2f}x the bound;"
          f" T(first) - T(second) = {gap:.1f} s, goal <= {GAP_GOAL:.0f} s: "
          f"{'met' if met else 'MISSED'}")
    if args.json:
        write_json(args.json, {"nodes": args.nodes, "repo_bytes": repo,
                               "bandwidth": args.bandwidth, "bound_s": bound,
                               "pairs": pairs, "first_s": first, "second_s": second,
                               "gap_s": gap, "gap_met": met})
    return 0


if __name__ == "__main__":
    sys.exit(main())
