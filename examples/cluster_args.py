"""Options the example scripts share: join a Ray cluster, or simulate one on this machine."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from raydf.testing.cluster import LocalCluster

__all__ = ["add_cluster_args", "cluster_from_args"]


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--address`` and ``--local-nodes`` (exclusive) to ``parser``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--address", help="Ray cluster to join, e.g. auto (default: $RAY_ADDRESS, "
                       "else a new single-node cluster)")
    where.add_argument("--local-nodes", type=int, metavar="N",
                       help="simulate a cluster here: a CPU head and N nodes with one GPU each "
                       "(raydf.testing.LocalCluster; files go to a temporary folder per node)")


@contextmanager
def cluster_from_args(args: argparse.Namespace) -> Iterator[bool]:
    """Connect as the options say; yield whether the cluster is a simulated one."""
    if args.local_nodes:
        with LocalCluster(args.local_nodes):
            yield True
        return
    ray.init(address=args.address)
    yield False
