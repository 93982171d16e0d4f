"""Blame the sender, on a real cluster of 8 receivers and one lying holder.

The head node (no GPU, so not a target of ``nodes="auto"``) holds the repo in
its cache and serves it through a :class:`~raydf.testing.faults.CorruptingPeer`:
every piece it lends fails its CRC-32 at the receiver. The receivers must stop
asking it and complete from the origin (and each other).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray

import raydf
from raydf.api import run_fanout
from raydf.options import make_request
from raydf.testing.cluster import LocalCluster
from raydf.testing.faults import install_corrupting_peer
from raydf.testing.hub import HubEmulator, make_model

pytestmark = pytest.mark.cluster

MiB = 2**20
RECEIVERS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(RECEIVERS, root=tmp_path_factory.mktemp("nodes")) as c:
        yield c


@pytest.fixture(scope="module")
def record() -> Iterator[Callable[..., None]]:
    """With RAYDF_RELIABILITY_REPORT set, append this module's rows to the table
    tests/cluster/test_faults.py writes there (run them in one pytest call)."""
    rows: list[str] = []

    def add(fault: str, outcome: str, origin: int, repo: int) -> None:
        rows.append(f"| {fault} | {outcome} | {origin / MiB:.1f} MiB | {repo / MiB:.1f} MiB | "
                    f"{origin / repo:.2f} |")

    yield add
    target = os.environ.get("RAYDF_RELIABILITY_REPORT")
    if target and rows:
        with open(target, "a") as out:
            out.write("\n".join(rows) + "\n")


def head_node() -> str:
    (head,) = [n["NodeID"] for n in ray.nodes()
               if n["Alive"] and n.get("Resources", {}).get("raydf_seed")]
    return str(head)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_holder_that_always_sends_bad_bytes_stops_being_chosen_and_8_receivers_complete(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/liar", shard_sizes=[24 * MiB], seed=71)
    repo = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    head = head_node()
    warm = make_request("hf://org/liar", "/models/liar-head",
                        hub_options={"hf_endpoint": hub.hf_endpoint})
    assert run_fanout(warm, [head]).ok  # the head's cache has every file now
    liar = install_corrupting_peer(head)
    hub.reset_stats()
    report = raydf.fanout("hf://org/liar", "/models/liar", hf_endpoint=hub.hf_endpoint)
    assert report.ok, [n.error for n in report.nodes if not n.ok]
    assert len(report.nodes) == RECEIVERS
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/liar")) == files_of(src)
    # The liar was asked (it held everything, so it was chosen first) and then not
    # any more: what it could not deliver came from the origin, once.
    assert ray.get(liar.corrupted.remote()) >= 1
    assert report.served.get(head, 0) == 0
    assert 0 < hub.stats()["download_bytes"] <= repo
    record("a holder that always sends bad bytes, 8 receivers (8-node cluster)",
           "8 of 8; the holder no longer chosen after 2 bad pieces",
           hub.stats()["download_bytes"], repo)
