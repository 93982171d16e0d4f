"""A Xet-backed repo fanned out to 1 and to 4 nodes of one 4-node cluster.

The emulator serves the repo as the Hub does for Xet storage today: the hub
answers ``/resolve/`` with a 302 to a bridge on another address whose
presigned url refuses a HEAD (403) and sends no ETag. Every node ends with
byte-identical, verified files; the report counts the hub requests by kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import raydf
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def xet_repo(hub_root: Path, hub: HubEmulator) -> Iterator[Path]:
    folder = make_model(hub_root, "org/xet-model", shard_sizes=[20 * MiB, 6 * MiB], seed=51)
    hub.set_knobs(xet=True)
    yield folder
    hub.clear_knobs()


def _fanout(cluster: LocalCluster, hub: HubEmulator, dest: str, nodes: str) -> tuple[raydf.Report, dict]:
    cluster.clear_caches()  # every run starts cold
    hub.reset_stats()
    report = raydf.fanout("hf://org/xet-model", dest, nodes=nodes, hf_endpoint=hub.hf_endpoint)
    return report, hub.stats()


@pytest.mark.parametrize(("nodes", "count"), [("raydf/sim-node=0", 1), ("auto", 4)])
def test_a_xet_repo_reaches_every_node_byte_identical_with_the_bridge_refusing_head(
    nodes: str, count: int, cluster: LocalCluster, hub: HubEmulator, xet_repo: Path
) -> None:
    dest = f"/models/xet-{count}"
    report, stats = _fanout(cluster, hub, dest, nodes)
    assert report.ok, report.nodes
    assert len(report.nodes) == count
    for node in report.nodes:
        assert _files(cluster.path_on(node.node_id, dest)) == _files(xet_repo)
    assert stats["status_counts"].get("403", 0) == 0  # never a HEAD on the presigned bridge
    assert stats["by_listener"]["cdn"]["requests"] > 0  # the shards came from the bridge
    assert stats["download_bytes"] == report.bytes == report.origin_bytes


def test_the_report_counts_hub_requests_by_kind_one_resolve_per_file(
    cluster: LocalCluster, hub: HubEmulator, xet_repo: Path
) -> None:
    report, stats = _fanout(cluster, hub, "/models/xet-kinds", "auto")
    assert report.ok, report.nodes
    kinds = report.hub_requests
    assert set(kinds) == {"api", "resolve", "content"}
    assert sum(kinds.values()) == report.origin_requests == stats["requests"]
    assert kinds["resolve"] == report.files  # one per file, not per piece
    assert kinds["content"] == stats["by_listener"]["cdn"]["requests"]
    assert kinds["api"] == 2  # the revision, one tree page
