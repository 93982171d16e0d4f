"""A Train-style job whose workers get their dataset with ``raydf.get``: the hub is read once.

"Train-style", not Ray Train: plain Ray tasks laid out the way Ray Train lays
out workers (a placement group, one bundle per worker, ``STRICT_SPREAD`` so
each worker is on its own node; each has a rank and the world size). Ray
Train's own ``TorchTrainer`` would call ``raydf.get`` the same way, at the top
of its ``train_loop_per_worker``.

Each worker calls ``raydf.get(url, dest)`` (workers that start together
share one fan-out: the hub read once, pieces passed between nodes), checks
every file of the dataset (bytes and sha256), takes its shard of the
``*.parquet`` files (``files[rank::world_size]``) and "trains" on it: the mean
byte value of the shard. A real job would open the shard with ``pyarrow.parquet`` or Ray Data;
the hub emulator's parquet-named files are random bytes, so this one reads
bytes::

    python examples/train_dataset.py --url hf://datasets/org/data --workers 4 \\
        --hf-endpoint http://127.0.0.1:PORT --local-nodes 4

It prints one JSON line per worker. Importable: :func:`run`.
See ``examples/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
from cluster_args import add_cluster_args, cluster_from_args
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

import raydf

__all__ = ["WorkerResult", "byte_mean", "file_digests", "main", "run", "shard_of", "train_worker"]

PLACEMENT_TIMEOUT_S = 120  # how long to wait for a node per worker before giving up
_READ_BLOCK = 8 * 2**20


@dataclass(frozen=True)
class WorkerResult:
    """What one worker saw and computed."""

    rank: int
    world_size: int
    node_id: str
    path: str  # the dataset on the worker's node, as raydf.get returned it
    files: dict[str, tuple[int, str]]  # every file: relative path -> (bytes, sha256)
    shard: list[str]  # the parquet files this rank trained on
    shard_bytes: int
    shard_mean: float  # mean byte value of the shard: the "training" result


def file_digests(folder: str | os.PathLike[str]) -> dict[str, tuple[int, str]]:
    """``{relative path: (bytes, sha256 hex)}`` of every file under ``folder``."""
    digests = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(_READ_BLOCK):
                    digest.update(block)
            digests[path.relative_to(folder).as_posix()] = (path.stat().st_size, digest.hexdigest())
    return digests


def shard_of(files: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The ``*.parquet`` files of rank ``rank``: every ``world_size``-th, in sorted order."""
    data = sorted(f for f in files if f.endswith(".parquet"))
    return data[rank::world_size]


def byte_mean(paths: Sequence[str | os.PathLike[str]]) -> float:
    """The mean byte value over the concatenation of ``paths`` (0.0 for no bytes)."""
    total = count = 0
    for path in paths:
        data = np.fromfile(path, dtype=np.uint8)
        total += int(data.sum(dtype=np.uint64))
        count += data.size
    return total / count if count else 0.0


def train_worker(rank: int, world_size: int, url: str, dest: str,
                 hf_endpoint: str | None) -> WorkerResult:
    """One worker: get the dataset onto this node, check it, train on this rank's shard."""
    path = raydf.get(url, dest, hf_endpoint=hf_endpoint)
    files = file_digests(path)
    shard = shard_of(list(files), rank, world_size)
    return WorkerResult(
        rank=rank,
        world_size=world_size,
        node_id=ray.get_runtime_context().get_node_id(),
        path=path,
        files=files,
        shard=shard,
        shard_bytes=sum(files[f][0] for f in shard),
        shard_mean=byte_mean([Path(path) / f for f in shard]),
    )


def run(url: str, dest: str, workers: int, hf_endpoint: str | None = None,
        *, gpus_per_worker: float = 1) -> list[WorkerResult]:
    """Run ``workers`` workers, each on its own node with ``gpus_per_worker`` GPUs; results by rank.

    Raises ``TimeoutError`` when the cluster has no room for them (fewer
    such nodes than workers) within ``PLACEMENT_TIMEOUT_S``.
    """
    bundle = {"CPU": 1.0, **({"GPU": float(gpus_per_worker)} if gpus_per_worker else {})}
    group = placement_group([bundle] * workers, strategy="STRICT_SPREAD")
    try:
        if not group.wait(timeout_seconds=PLACEMENT_TIMEOUT_S):
            raise TimeoutError(f"{workers} workers need {workers} nodes with {bundle} free each; "
                               f"the cluster had no room within {PLACEMENT_TIMEOUT_S} s")
        task = ray.remote(train_worker)
        refs = [
            task.options(
                num_cpus=1, num_gpus=gpus_per_worker,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, rank),
            ).remote(rank, workers, url, dest, hf_endpoint)
            for rank in range(workers)
        ]
        results: list[WorkerResult] = ray.get(refs)
        return results
    finally:
        remove_placement_group(group)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job, print one JSON line per worker."""
    parser = argparse.ArgumentParser(description="Train-style workers on a dataset raydf puts "
                                     "on every node.")
    parser.add_argument("--url", required=True, help="hf://datasets/org/name or "
                        "modelscope://datasets/org/name")
    parser.add_argument("--dest", help="where the dataset goes on every node (default /data/<name>)")
    parser.add_argument("--workers", type=int, default=1, help="one per node (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=1,
                        help="0 to run on a cluster without GPUs (default 1)")
    parser.add_argument("--hf-endpoint", help="HF endpoint, e.g. the hub emulator's HF_ENDPOINT")
    add_cluster_args(parser)
    args = parser.parse_args(argv)
    dest = args.dest or f"/data/{args.url.rstrip('/').rsplit('/', 1)[-1]}"
    with cluster_from_args(args):
        for result in run(args.url, dest, args.workers, args.hf_endpoint,
                          gpus_per_worker=args.gpus_per_worker):
            print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
