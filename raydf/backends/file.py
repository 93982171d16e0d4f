"""Local files: ``file:///absolute/path`` (a file or a folder).

Examples::

    file:///mnt/nfs/models/llama-3-8b
    file:///data/shards/model-00001-of-00004.safetensors

Auth: none; the seed's own file permissions apply. Useful to fan out a model
that one node already has (NFS, a local download) to every other node. Each
file's sha256 is computed while listing, so files are verified end to end like
hub files, and their content key matches the same file from a hub.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import ClassVar

from raydf.backends.base import BackendOptions, RemoteFile, safe_relative_path
from raydf.errors import EntryNotFound, InvalidURL
from raydf.uri import Source

__all__ = ["FileBackend"]


class FileBackend:
    """Reads a local file or folder."""

    SCHEME: ClassVar[str] = "file"

    def __init__(self, source: Source, options: BackendOptions | None = None) -> None:
        if source.scheme != self.SCHEME:
            raise InvalidURL(f"{source} is not a file:// URL")
        self.source = source
        self.root = Path(source.path)
        self.requests = 0

    def __repr__(self) -> str:
        return f"<FileBackend {self.root}>"

    def resolve(self) -> str:
        if not self.root.exists():
            raise EntryNotFound(f"{self.source}: no such file or folder")
        return "local"

    def list_files(self, commit: str) -> list[RemoteFile]:
        self.resolve()
        if self.root.is_file():
            return [self._remote(self.root, self.root.name)]
        files = []
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            relative = safe_relative_path(path.relative_to(self.root).as_posix(), origin=str(self))
            files.append(self._remote(path, relative))
        return files

    def _remote(self, path: Path, relative: str) -> RemoteFile:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        repo_path = relative if self.root.is_dir() else ""
        return RemoteFile(relative, repo_path, path.stat().st_size, sha256=digest.hexdigest())

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        path = self.root / repo_path if repo_path else self.root
        if not path.is_file():
            raise EntryNotFound(f"{self.source}: no file {repo_path!r}")
        return self._remote(path, repo_path or self.root.name)

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        path = self.root / repo_path if repo_path else self.root
        fd = os.open(path, os.O_RDONLY)
        try:
            filled = 0
            while filled < len(buffer):
                n = os.preadv(fd, [buffer[filled:]], start + filled)
                if n == 0:
                    raise EntryNotFound(f"{self.source}: {repo_path!r} shrank while being read")
                filled += n
        finally:
            os.close(fd)

    def exists(self) -> bool:
        return self.root.exists()

    def close(self) -> None:
        pass
