"""Piece math and digests."""

from __future__ import annotations

import hashlib
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from raydf.backends.base import RemoteFile
from raydf.cluster.spec import TaskSpec
from raydf.pieces import MAX_PIECE, MIN_PIECE, FileDigest, git_blob_sha1, piece_length, pieces_of


@given(st.integers(min_value=0, max_value=2**38))
def test_pieces_cover_the_file_exactly_once(size: int) -> None:
    length = piece_length(size)
    pieces = pieces_of(size)
    assert pieces[0].start == 0 and pieces[-1].end == size
    assert all(a.end == b.start for a, b in pairwise(pieces))
    assert all(0 < p.length <= length for p in pieces) or size == 0
    assert [p.index for p in pieces] == list(range(len(pieces)))


@given(st.integers(min_value=MIN_PIECE + 1, max_value=2**44))
def test_piece_length_is_a_power_of_two_within_bounds(size: int) -> None:
    length = piece_length(size)
    assert MIN_PIECE <= length <= MAX_PIECE
    assert length & (length - 1) == 0


def test_small_file_is_one_piece_and_empty_file_one_empty_piece() -> None:
    assert len(pieces_of(1000)) == 1
    assert [p.length for p in pieces_of(0)] == [0]


def test_file_digest_matches_hashlib_and_git() -> None:
    data = b"hello world\n" * 1000
    sha = FileDigest("sha256", len(data))
    sha.update(data[:100])
    sha.update(data[100:])
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    git = FileDigest("git-sha1", len(data))
    git.update(data)
    assert git.hexdigest() == git_blob_sha1(data)
    # `git hash-object` of "hello\n"
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


@given(length=st.integers(1, 2**30), whole=st.integers(0, 64), rest=st.integers(0, 2**30))
def test_a_tasks_piece_count_is_the_length_of_its_pieces(length: int, whole: int, rest: int) -> None:
    size = whole * length + rest % length
    task = TaskSpec("t", RemoteFile("f", "f", size), ("f",), length)
    assert task.num_pieces == len(task.pieces)
