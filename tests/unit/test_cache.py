"""The node cache's digests: computed as pieces arrive, checked before a commit."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raydf.backends.base import RemoteFile
from raydf.cache import InOrderDigests, NodeCache
from raydf.errors import IntegrityError, StorageError
from raydf.pieces import git_blob_sha1, pieces_of

PIECE = 1000


def feed(digests: InOrderDigests, data: bytes, order: list[int]) -> list[int]:
    """Add pieces in ``order``; returns the pieces that were read back."""
    pieces = pieces_of(len(data), PIECE)
    read_back: list[int] = []

    def read(i: int) -> memoryview:
        read_back.append(i)
        return memoryview(data[pieces[i].start:pieces[i].end])

    for i in order:
        digests.add(i, memoryview(data[pieces[i].start:pieces[i].end]), read)
    return read_back


@settings(max_examples=50, deadline=None)
@given(size=st.integers(1, 12 * PIECE), seed=st.integers(0, 2**32), again=st.booleans())
def test_pieces_in_any_order_give_the_whole_file_digests(size: int, seed: int, again: bool) -> None:
    data = random.Random(seed).randbytes(size)
    n = len(pieces_of(size, PIECE))
    order = random.Random(seed + 1).sample(range(n), n)
    if again:  # a piece taken twice (a retried pull) counts once
        order.insert(random.Random(seed).randrange(n + 1), order[0])
    file = RemoteFile("f", "f", size, sha256=hashlib.sha256(data).hexdigest())
    digests = InOrderDigests(file, n)
    assert digests.result() is None or n == 0
    read_back = feed(digests, data, order)
    assert digests.result() == {"sha256": hashlib.sha256(data).hexdigest(),
                                "git-sha1": git_blob_sha1(data)}
    # Only a piece that arrived before its predecessor is read from disk, once.
    arrivals = list(dict.fromkeys(order))  # first arrivals
    early = {i for k, i in enumerate(arrivals) if any(j < i for j in arrivals[k + 1:])}
    assert sorted(read_back) == sorted(early)


def test_an_incomplete_feed_has_no_result() -> None:
    data = bytes(range(250)) * 16
    file = RemoteFile("f", "f", len(data), sha256=hashlib.sha256(data).hexdigest())
    digests = InOrderDigests(file, 4)
    feed(digests, data, [0, 2, 3])
    assert digests.result() is None


def test_a_commit_with_a_wrong_digest_keeps_nothing(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    data = b"x" * 5000
    file = RemoteFile("model.bin", "model.bin", len(data), sha256=hashlib.sha256(data).hexdigest())
    partial = cache.new_partial(file)
    partial.write_bytes(data)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        cache.commit(partial, file, {"sha256": hashlib.sha256(b"other").hexdigest()})
    assert not partial.exists() and cache.blob(file) is None
    partial = cache.new_partial(file)
    partial.write_bytes(data)
    digests = InOrderDigests(file, len(pieces_of(len(data), PIECE)))
    feed(digests, data, [4, 3, 2, 1, 0])
    blob = cache.commit(partial, file, digests.result())
    assert blob == cache.blob(file) and blob.read_bytes() == data


def a_file(size: int) -> RemoteFile:
    return RemoteFile("model.bin", "model.bin", size, sha256="ab" * 32)


def test_partials_of_another_host_sharing_the_cache_are_not_swept(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    # Written by a host that shares this cache folder (NFS, hostPath); its
    # writer's pid means nothing here, alive or not.
    theirs = cache.partials / f"sha256-{'ab' * 32}.otherhost-999999999-0123abcd.partial"
    theirs.write_bytes(b"their work")
    mine_dead = cache.new_partial(a_file(10))
    dead = mine_dead.with_name(mine_dead.name.replace(f"-{os.getpid()}-", "-999999999-"))
    mine_dead.rename(dead)
    mine_alive = cache.new_partial(a_file(10))
    assert cache.sweep_orphans() == 1
    assert theirs.exists() and mine_alive.exists() and not dead.exists()


def test_the_cache_folder_removed_under_a_running_peer_is_recreated(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    shutil.rmtree(cache.root)
    data = b"y" * 3000
    file = RemoteFile("w.bin", "w.bin", len(data), sha256=hashlib.sha256(data).hexdigest())
    partial = cache.new_partial(file)
    partial.write_bytes(data)
    blob = cache.commit(partial, file)
    assert blob.read_bytes() == data and cache.blob(file) == blob


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_file_larger_than_the_free_space_is_refused_before_any_byte_is_written(
    tiny_tmpfs: Path,
) -> None:
    cache = NodeCache(tiny_tmpfs / "cache")
    with pytest.raises(StorageError, match="no space left"):
        cache.new_partial(a_file(8 * 2**20))
    assert list(cache.partials.iterdir()) == []


def test_a_blob_written_and_given_its_mtime_back_is_hashed_again_and_dropped(
    tmp_path: Path,
) -> None:
    data = bytes(range(256)) * 64
    file = RemoteFile("w.bin", "w.bin", len(data), sha256=hashlib.sha256(data).hexdigest())
    cache = NodeCache(tmp_path / "cache")
    partial = cache.new_partial(file)
    partial.write_bytes(data)
    blob = cache.commit(partial, file)
    dest = tmp_path / "dest" / "w.bin"
    cache.place(blob, dest)
    assert cache.blob(file) == blob  # raydf's own link left the blob trusted
    st = blob.stat()
    blob.chmod(0o644)
    with open(blob, "r+b") as f:  # same size, other bytes, then the old mtime
        f.seek(100)
        f.write(b"\x00\x00")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert blob.stat().st_mtime_ns == st.st_mtime_ns
    assert cache.blob(file) is None  # hashed, failed, dropped
    assert not blob.exists()
    assert dest.read_bytes() != data  # the destination is the user's: not deleted here


def test_the_space_check_recreates_a_removed_cache_folder_and_refuses_more_than_is_free(
    tmp_path: Path,
) -> None:
    cache = NodeCache(tmp_path / "cache")
    shutil.rmtree(tmp_path / "cache")
    cache.check_room(1)
    assert cache.partials.is_dir()
    with pytest.raises(StorageError, match="no space left"):
        cache.check_room(2**62)


def test_a_partial_is_made_where_its_name_was_given(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    file = RemoteFile("a.bin", "a.bin", 10, sha256="0" * 64)
    name = cache.partial_path(file)
    assert not name.exists()
    assert cache.new_partial(file, name) == name and name.stat().st_size == 10
