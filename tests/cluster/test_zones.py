"""Zones on a real 4-node Ray cluster: two nodes (and the head, where the seed
runs) in zone za, two in zone zb, by the node label ray.io/availability-zone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import raydf
from raydf.policy import Limits
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20
ZONES = ["za", "za", "zb", "zb"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(4, root=tmp_path_factory.mktemp("nodes"), zones=ZONES) as c:
        yield c


@pytest.fixture(scope="module")
def model(hub_root: Path) -> Path:
    return make_model(hub_root, "org/zoned", shard_sizes=[24 * MiB, 16 * MiB], seed=5)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_about_one_copy_of_the_repo_crosses_into_the_other_zone(
        cluster: LocalCluster, hub: HubEmulator, model: Path) -> None:
    cluster.clear_caches()
    report = raydf.fanout("hf://org/zoned", "/models/zoned", hf_endpoint=hub.hf_endpoint,
                          address=cluster.address)
    assert report.ok, report.nodes
    for node in cluster.node_ids:
        assert _files(cluster.path_on(node, "/models/zoned")) == _files(model)
    # zb's two nodes need every byte, and no holder there has any at first.
    assert report.bytes <= report.cross_zone_bytes <= 1.1 * report.bytes, report
    assert "across zones" in report.summary()


def test_the_blind_policy_is_counted_in_the_same_zones(
        cluster: LocalCluster, hub: HubEmulator, model: Path) -> None:
    """``use_zones=False`` decides as if blind and still counts what crossed: at
    least the one copy zb needs; and no label, no zones, nothing counted."""
    cluster.clear_caches()
    blind = raydf.fanout("hf://org/zoned", "/models/zoned-blind", hf_endpoint=hub.hf_endpoint,
                         address=cluster.address, limits=Limits(use_zones=False))
    assert blind.ok, blind.nodes
    assert blind.cross_zone_bytes >= blind.bytes
    cluster.clear_caches()
    unlabelled = raydf.fanout("hf://org/zoned", "/models/zoned-none", address=cluster.address,
                              hf_endpoint=hub.hf_endpoint, topology_label="")
    assert unlabelled.ok and unlabelled.cross_zone_bytes == 0
