"""One copy on disk (issue 14): the configured cache on one file system (ext4,
under the test's tmp folder), the destinations on another (tmpfs, /dev/shm).
After a fan-out, a node's disk use (unique inodes over its caches and its
destination tree) is the repo's size, not twice it, for both layouts; and
``raydf cache gc`` sees every cache of the node."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import raydf
from raydf.admin import cache_command
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20
SHM = Path("/dev/shm")


def _device(path: Path) -> int:
    return path.stat().st_dev


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    caches = tmp_path_factory.mktemp("caches")
    if not SHM.is_dir() or _device(SHM) == _device(caches):
        pytest.skip("needs /dev/shm on another file system than the tmp folder")
    with tempfile.TemporaryDirectory(prefix="raydf-onecopy-", dir=SHM) as nodes, \
            LocalCluster(2, root=Path(nodes), cache_root=caches) as c:
        yield c


def _disk_use(*folders: Path) -> int:
    """Bytes the files under ``folders`` take on disk, each inode once (du)."""
    seen: dict[tuple[int, int], int] = {}
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def _wipe(cluster: LocalCluster) -> None:
    for node in cluster.node_ids:
        shutil.rmtree(cluster.path_on(node, "/models"), ignore_errors=True)
    cache_command("gc", None, local=False)


def _repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("layout", ["files", "hf-cache"])
def test_a_node_holds_one_copy_of_each_file_when_its_cache_is_on_another_file_system(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, layout: str
) -> None:
    _wipe(cluster)  # whatever an earlier case left
    name = f"org/onecopy-{layout}"
    repo = make_model(hub_root, name, shard_sizes=[16 * MiB, 8 * MiB], seed=len(layout))
    dest = f"/models/onecopy-{layout}"
    report = raydf.fanout(f"hf://{name}", dest, hf_endpoint=hub.hf_endpoint, layout=layout)
    assert report.ok, report.nodes
    repo_bytes = _repo_bytes(repo)
    for node in cluster.node_ids:
        assert _device(cluster.cache_of(node)) != _device(cluster.path_on(node, dest))
        used = _disk_use(cluster.cache_of(node), cluster.node_root(node))
        print(f"{layout} node {node[:8]}: du {used} for a repo of {repo_bytes} "
              f"({used / repo_bytes:.3f}x)")
        assert used <= 1.02 * repo_bytes, (used, repo_bytes)

    # The destinations removed, `cache gc` frees every cache of the node.
    _wipe(cluster)
    for node in cluster.node_ids:
        left = _disk_use(cluster.cache_of(node), cluster.node_root(node))
        assert left <= 0.02 * repo_bytes, left
