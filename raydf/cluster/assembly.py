"""One file content being assembled (or complete) on a node, and its file helpers.

A :class:`Assembly` is what a :class:`~raydf.cluster.peer.PeerActor` keeps
per task: the partial (or, once verified, the cache blob) it writes pieces
into, the pieces it has, the whole-file digest fed in order, and which jobs
want it and were told it is done.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raydf.cache import InOrderDigests, temp_sibling
from raydf.cache_roots import NodeCaches
from raydf.cluster.spec import TaskSpec
from raydf.errors import IntegrityError

__all__ = ["Assembly", "read_piece", "symlink_atomically", "write_atomically"]


@dataclass
class Assembly:
    """One file content being assembled (or complete) on this node."""

    spec: TaskSpec
    path: Path  # a partial's name (made on the first piece, see writable_fd), or the blob
    fd: int  # -1 until the partial is made
    digests: InOrderDigests | None = None  # None once complete
    have: set[int] = field(default_factory=set)
    complete: bool = False
    jobs: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)  # jobs told the file is done
    corrupt: str | None = None  # why the whole file failed verification
    unplaced: dict[str, str] = field(default_factory=dict)  # job -> why it could not be placed
    finishing: threading.Lock = field(default_factory=threading.Lock)
    busy: int = 0  # pulls and lends using ``fd`` right now
    retired: bool = False  # no job wants it: close ``fd`` once nobody uses it
    fixed: dict[int, int] = field(default_factory=dict)  # healed piece -> its new CRC-32
    opening: threading.Lock = field(default_factory=threading.Lock)

    def writable_fd(self, cache: NodeCaches) -> int:
        """The partial's descriptor. The file is made when the first piece is written,
        not when a job is prepared: a job of many small files would make thousands
        at once before its first byte moved (the space was checked then)."""
        with self.opening:
            if self.fd < 0:
                cache.new_partial(self.spec.file, self.path)
                self.fd = os.open(self.path, os.O_RDWR)
            return self.fd


def read_piece(asm: Assembly, index: int) -> memoryview:
    """Piece ``index`` of ``asm``'s file, read from disk (an ``np.uint8`` array's view)."""
    piece = asm.spec.piece(index)
    buffer = np.empty(piece.length, dtype=np.uint8)
    if piece.length and os.preadv(asm.fd, [buffer.data], piece.start) != piece.length:
        raise IntegrityError(f"{asm.path} is shorter than piece {index}")
    return buffer.data


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def symlink_atomically(path: Path, pointee: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Jobs placing the same link at once each use their own temporary name.
    tmp = temp_sibling(path)
    os.symlink(pointee, tmp)
    os.replace(tmp, path)
