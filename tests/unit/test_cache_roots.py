"""Which cache a file is assembled in: the one on its destination's file system
(the configured cache on ext4 under tmp_path, destinations on tmpfs /dev/shm)."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.backends.base import RemoteFile
from raydf.cache_roots import CACHE_DIR_NAME, NodeCaches, cache_root_for, filesystem_top
from raydf.errors import StorageError

SHM = Path("/dev/shm")


@pytest.fixture
def other_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on another file system than tmp_path, standing for a node's "/"."""
    if not SHM.is_dir() or SHM.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the tmp folder")
    with tempfile.TemporaryDirectory(dir=SHM) as folder:
        monkeypatch.setenv("RAYDF_NODE_ROOT", folder)  # the top of the file system, here
        yield Path(folder)


def _blob(caches: NodeCaches, data: bytes, dest: Path | None) -> tuple[RemoteFile, Path]:
    file = RemoteFile("w.bin", "w.bin", len(data), sha256=hashlib.sha256(data).hexdigest())
    home = caches.for_path(dest)
    partial = caches.new_partial(file, home.partial_path(file))
    partial.write_bytes(data)
    return file, caches.commit(partial, file)


def test_a_destination_on_the_configured_caches_file_system_uses_that_cache(
    tmp_path: Path,
) -> None:
    caches = NodeCaches(tmp_path / "cache")
    assert caches.for_path(tmp_path / "models" / "m") is caches.main
    assert caches.for_path(None) is caches.main


def test_a_destination_on_another_file_system_gets_a_cache_at_its_top_and_a_hard_link(
    tmp_path: Path, other_fs: Path
) -> None:
    caches = NodeCaches(tmp_path / "cache")
    dest = other_fs / "models" / "m"  # not made yet: its nearest existing folder counts
    home = caches.for_path(dest)
    assert home.root == other_fs / CACHE_DIR_NAME
    assert caches.for_path(other_fs / "elsewhere") is home  # one cache per file system
    file, blob = _blob(caches, b"w" * 10_000, dest)
    assert blob.parent == home.blobs and caches.is_blob(blob)
    caches.place(blob, dest / "w.bin")
    assert (dest / "w.bin").stat().st_ino == blob.stat().st_ino
    # Another process on this node (a restarted peer, `raydf cache --local`) sees it.
    again = NodeCaches(tmp_path / "cache")
    assert [c.root for c in again.caches] == [tmp_path / "cache", home.root]
    assert again.blob(file) == blob
    assert {row["cache"] for row in again.entries()} == {str(home.root)}


def test_a_blob_only_in_another_file_systems_cache_is_copied_once_into_the_destinations(
    tmp_path: Path, other_fs: Path
) -> None:
    caches = NodeCaches(tmp_path / "cache")
    _, blob = _blob(caches, b"v" * 10_000, None)  # in the configured cache (ext4)
    first, second = other_fs / "a" / "w.bin", other_fs / "b" / "w.bin"
    caches.place(blob, first)
    caches.place(blob, second)
    assert first.stat().st_ino == second.stat().st_ino != blob.stat().st_ino
    assert first.stat().st_ino == (other_fs / CACHE_DIR_NAME / "blobs" / blob.name).stat().st_ino
    first.unlink()
    second.unlink()
    # The configured cache's blob and its alias (git-sha1), and the copy: none in use.
    assert caches.gc()["blobs"] == 3
    assert caches.usage() == 0


def test_an_unwritable_top_falls_back_down_the_path_and_none_is_a_storage_error(
    tmp_path: Path, other_fs: Path
) -> None:
    # A file named .raydf-cache is in the way where a cache cannot be made
    # (root ignores permissions, a file in the way does not).
    (other_fs / CACHE_DIR_NAME).write_text("in the way")
    dest = other_fs / "alice" / "models" / "m"
    (other_fs / "alice").mkdir()
    assert filesystem_top(dest, other_fs) == other_fs
    assert cache_root_for(dest, other_fs) == other_fs / "alice" / CACHE_DIR_NAME
    (other_fs / "alice" / CACHE_DIR_NAME).rmdir()
    (other_fs / "alice" / CACHE_DIR_NAME).write_text("in the way")
    with pytest.raises(StorageError, match="cannot make a raydf cache on the file system"):
        NodeCaches(tmp_path / "cache").for_path(dest)


def test_per_fs_off_keeps_one_cache_and_copies_across_file_systems(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYDF_CACHE_PER_FS", "0")
    caches = NodeCaches(tmp_path / "cache")
    assert caches.for_path(other_fs / "m") is caches.main
    _, blob = _blob(caches, b"u" * 10_000, other_fs / "m")
    caches.place(blob, other_fs / "m" / "w.bin")
    assert (other_fs / "m" / "w.bin").read_bytes() == blob.read_bytes()
    assert not (other_fs / CACHE_DIR_NAME).exists()


def test_a_simulated_node_whose_root_is_not_made_yet_keeps_its_cache_inside_it(
        tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two simulated nodes on one machine must not share a cache at the top of
    their file system: the node root bounds the climb even before it exists."""
    node_root = other_fs / "nodes" / "node0"
    monkeypatch.setenv("RAYDF_NODE_ROOT", str(node_root))
    home = NodeCaches(tmp_path / "cache").for_path(node_root / "models" / "m")
    assert home.root == node_root / CACHE_DIR_NAME


def test_listing_and_gc_skip_a_blob_removed_meanwhile(tmp_path: Path) -> None:
    """A blob another process removes while this one lists (a dangling name,
    here) is left out, instead of failing ``cache ls`` and ``cache gc``."""
    caches = NodeCaches(tmp_path / "cache")
    file, blob = _blob(caches, b"k" * 5_000, None)
    (blob.parent / "sha256-gone").symlink_to(blob.parent / "sha256-missing")
    keys = {str(row["key"]) for row in caches.entries()}
    assert blob.name in keys and "sha256-gone" not in keys
    assert caches.usage() == 5_000
    assert caches.gc()["bytes"] == 5_000  # the unused blob goes
    assert caches.blob(file) is None
