"""Many small files: raydf asks the hub no more than one node alone with huggingface_hub.

A dataset of 200 small files (half LFS) is downloaded once by the official
client, unchanged, in its own process, and fanned out by raydf to one node
and to both nodes of a 2-node cluster; the emulator counts every request it
answers (the hub's API and ``/resolve/``, and the CDN's). raydf must send no
more than the official client does for the same dataset, and the same number
whatever the number of nodes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import raydf
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_small_files

pytestmark = pytest.mark.cluster

FILES = 200
REPO = "org/many-small"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(2, root=tmp_path_factory.mktemp("nodes")) as c:
        yield c


@pytest.fixture(scope="module")
def dataset(hub_root: Path) -> Path:
    return make_small_files(hub_root, REPO, count=FILES, size=4096, lfs_share=0.5, seed=61)


def _files(folder: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not (rel := p.relative_to(folder).as_posix()).startswith(".cache/")}


@pytest.fixture(scope="module")
def official_requests(hub: HubEmulator, dataset: Path, tmp_path_factory: pytest.TempPathFactory,
                      ) -> int:
    """What ``snapshot_download`` asks of the hub and the CDN for the dataset."""
    home = tmp_path_factory.mktemp("hf-home")
    out = home / "out"
    env = dict(os.environ, HOME=str(home), HF_HOME=str(home / "hf"),
               HF_ENDPOINT=hub.hf_endpoint, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    code = ("from huggingface_hub import snapshot_download as s; "
            f"s({REPO!r}, repo_type='dataset', local_dir={str(out)!r})")
    hub.reset_stats()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300,
                   capture_output=True)
    requests: int = hub.stats()["requests"]
    assert _files(out) == _files(dataset)  # it really downloaded the dataset
    return requests


@pytest.mark.parametrize(("nodes", "count"), [("raydf/sim-node=0", 1), ("auto", 2)])
def test_raydf_sends_no_more_hub_requests_than_huggingface_hub_for_many_small_files(
    nodes: str, count: int, cluster: LocalCluster, hub: HubEmulator, dataset: Path,
    official_requests: int,
) -> None:
    cluster.clear_caches()  # cold: every file comes from the origin
    hub.reset_stats()
    dest = f"/data/many-small-{count}"
    report = raydf.fanout(f"hf://datasets/{REPO}", dest, nodes=nodes,
                          hf_endpoint=hub.hf_endpoint)
    stats = hub.stats()
    assert report.ok, report.nodes
    assert len(report.nodes) == count
    for node in report.nodes:
        assert _files(cluster.path_on(node.node_id, dest)) == _files(dataset)
    assert report.origin_requests == stats["requests"]  # the report counts what the hub saw
    assert stats["requests"] <= official_requests
    assert stats["download_bytes"] == report.bytes  # each byte read from the origin once


def test_raydf_hub_requests_for_many_small_files_do_not_grow_with_the_nodes(
    cluster: LocalCluster, hub: HubEmulator, dataset: Path,
) -> None:
    counts = {}
    for nodes, count in (("raydf/sim-node=0", 1), ("auto", 2)):
        cluster.clear_caches()
        hub.reset_stats()
        report = raydf.fanout(f"hf://datasets/{REPO}", f"/data/many-small-n{count}",
                              nodes=nodes, hf_endpoint=hub.hf_endpoint)
        assert report.ok, report.nodes
        counts[count] = hub.stats()["requests"]
    assert counts[1] == counts[2]
