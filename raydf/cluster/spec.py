"""What a fan-out sends to peers: tasks (one per distinct file content), pure.

A task is keyed by the file's content key, so two paths with the same bytes
in one repo are fetched once, and a file a node cached under another revision
or hub is found by the same key. Nothing here carries a token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from raydf.backends.base import RemoteFile
from raydf.pieces import Piece, piece_length, pieces_of
from raydf.plan import RepoPlan

__all__ = ["TaskSpec", "tasks_of"]


@dataclass(frozen=True)
class TaskSpec:
    """One distinct file content to deliver, and every path it goes to."""

    task_id: str
    file: RemoteFile  # the first file with this content: where the seed reads it
    paths: tuple[str, ...]  # relative destination paths (one or more)
    piece_length: int
    # (link, target) symlinks to make under the destination once placed, the
    # target relative to the link's folder (the Hugging Face cache layout).
    links: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        return self.file.size

    @property
    def pieces(self) -> list[Piece]:
        return pieces_of(self.size, self.piece_length)

    @property
    def num_pieces(self) -> int:
        """``len(self.pieces)``, without making them (it is asked per piece)."""
        return max(1, -(-self.size // self.piece_length))

    def piece(self, index: int) -> Piece:
        start = index * self.piece_length
        return Piece(index, start, min(start + self.piece_length, self.size))


def task_key(file: RemoteFile, commit: str, url: str) -> str:
    """The content key, or for files without a digest one bound to URL and version."""
    key = file.content_key
    if key is not None:
        return key
    raw = f"{url}\0{commit}\0{file.repo_path}\0{file.size}".encode()
    return "url-" + hashlib.sha256(raw).hexdigest()


def tasks_of(plan: RepoPlan) -> list[TaskSpec]:
    """Group a plan's files by content, in listing order."""
    grouped: dict[str, tuple[RemoteFile, list[str]]] = {}
    for f in plan.files:
        key = task_key(f, plan.commit, plan.url)
        grouped.setdefault(key, (f, []))[1].append(f.path)
    return [
        TaskSpec(key, first, tuple(paths), piece_length(first.size))
        for key, (first, paths) in grouped.items()
    ]
