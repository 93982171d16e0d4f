"""Piece math and digests (pure).

**Piece length.** ``next_pow2(size / 256)`` clamped to [4 MiB, 64 MiB]; a file
smaller than 4 MiB is one piece of its own size (an empty file is one empty
piece, so every file has at least one piece to schedule). Why, for Ray's object
store rather than Dragonfly's ``size / 500``:

* every piece costs a few actor calls and an ownership record (~1-3 ms), and
  the object manager moves objects in 5 MiB chunks, so pieces under 4 MiB buy
  nothing but overhead;
* a piece is the unit pinned in a node's object-store budget and re-put by each
  peer (one copy), so 64 MiB keeps both the budget granular and the re-put cheap;
* a 1 GiB shard has 256 pieces of 4 MiB, a 5 GiB shard 320 of 16 MiB: enough
  for peers to take piece *k* while the seed fetches *k+1*.

**Digests.** Each piece carries a CRC-32 (``zlib.crc32``, ~3.4 GB/s here, several
times faster than SHA-256) checked on every hop: it catches transport and
memory corruption, which is what a hop can do. Origin corruption or tampering
is caught by the whole-file SHA-256 (or git blob SHA-1) the hub publishes,
checked before a file is renamed into place.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

__all__ = [
    "MAX_PIECE",
    "MIN_PIECE",
    "FileDigest",
    "Piece",
    "git_blob_sha1",
    "piece_crc",
    "piece_length",
    "pieces_of",
]

MIN_PIECE = 4 * 2**20
MAX_PIECE = 64 * 2**20
_TARGET_PIECES = 256


def piece_length(size: int) -> int:
    """Piece length for a file of ``size`` bytes (see module docstring)."""
    if size < 0:
        raise ValueError(f"file size must be >= 0, got {size}")
    if size <= MIN_PIECE:
        return max(size, 1)
    want = -(-size // _TARGET_PIECES)
    return min(MAX_PIECE, max(MIN_PIECE, 1 << (want - 1).bit_length()))


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of a file; ``index`` counts from 0."""

    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def pieces_of(size: int, length: int | None = None) -> list[Piece]:
    """Split ``size`` bytes into consecutive pieces (one empty piece for 0)."""
    step = length or piece_length(size)
    if size == 0:
        return [Piece(0, 0, 0)]
    return [Piece(i, start, min(start + step, size)) for i, start in enumerate(range(0, size, step))]


def piece_crc(data: bytes | memoryview) -> int:
    """The per-hop digest of one piece."""
    return zlib.crc32(data)


class FileDigest:
    """Incremental whole-file digest in the hub's own algorithm.

    ``sha256`` for LFS and ModelScope files, ``git-sha1`` (git blob object id)
    for regular Hugging Face files.
    """

    def __init__(self, algorithm: str, size: int) -> None:
        if algorithm == "sha256":
            self._hash = hashlib.sha256()
        elif algorithm == "git-sha1":
            self._hash = hashlib.sha1(b"blob %d\0" % size)
        else:
            raise ValueError(f"unknown digest algorithm {algorithm!r}")

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
