"""Every raydf cache of a node: one per file system its destinations are on.

A file's bytes live on a node once: a destination is a hard link to a cache
blob, and a hard link cannot cross file systems. So the cache a file is
assembled in is the one on its destination's file system:

* the configured cache (``$RAYDF_CACHE``, else ``$RAYDF_NODE_ROOT/cache``,
  else ``~/.cache/raydf``, see :mod:`raydf.cache`) when the destination is
  on the same file system (that of its nearest existing folder);
* else ``.raydf-cache`` in the topmost folder of the destination's file
  system (its mount point; a simulated node's ``RAYDF_NODE_ROOT``), or, where
  that cannot be written, in the next folder down the destination's path that
  can (``/mnt/nvme/.raydf-cache``, or ``/mnt/nvme/alice/.raydf-cache``). None
  writable: StorageError (exit 5). One cache per file system: the first one
  chosen is kept (listed in the configured cache's ``roots`` file).

``RAYDF_CACHE_PER_FS=0`` keeps everything in the configured cache: a file
placed on another file system is then copied there (two copies on disk).

Every cache counts: a blob in any of them is a holding the peer lends, and
``raydf cache ls | rm | gc`` see them all. A blob that is only in a cache on
another file system than a destination is copied once into the destination's
cache (outside the peer's lock), then linked.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from raydf.backends.base import RemoteFile
from raydf.cache import NodeCache, storage_error
from raydf.errors import StorageError

__all__ = ["CACHE_DIR_NAME", "NodeCaches", "cache_root_for", "filesystem_top"]

CACHE_DIR_NAME = ".raydf-cache"
_ROOTS_FILE = "roots"  # in the configured cache: the other caches of this node, one a line


def _existing(path: Path) -> Path:
    """``path``'s nearest existing folder (itself if it is one)."""
    path = path.absolute()
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


def filesystem_top(path: Path, boundary: Path | None = None) -> Path:
    """The topmost folder above ``path``'s nearest existing folder on the same file
    system (its mount point), not climbing above ``boundary`` when it is below it."""
    here = _existing(path)
    dev = here.stat().st_dev
    while here.parent != here and here != boundary and here.parent.stat().st_dev == dev:
        here = here.parent
    return here


def cache_root_for(path: Path, boundary: Path | None = None) -> Path:
    """Where the cache on ``path``'s file system is made (made here if need be):
    ``.raydf-cache`` in :func:`filesystem_top`, else in the first folder below it
    on the way to ``path`` that can be written. StorageError if none can."""
    if boundary is not None and path.absolute().is_relative_to(boundary):
        boundary.mkdir(parents=True, exist_ok=True)  # a simulated node's root: the top
    existing = _existing(path)
    dev = existing.stat().st_dev
    top = filesystem_top(existing, boundary)
    chain = [top, *(top / Path(*existing.relative_to(top).parts[:i])
                    for i in range(1, len(existing.relative_to(top).parts) + 1))]
    for folder in chain:
        candidate = folder / CACHE_DIR_NAME
        with contextlib.suppress(OSError):
            candidate.mkdir(exist_ok=True)
            if candidate.stat().st_dev == dev and os.access(candidate, os.W_OK | os.X_OK):
                return candidate
    raise StorageError(
        f"cannot make a raydf cache on the file system of {path}: no writable folder from "
        f"{top} to {existing}; make {top / CACHE_DIR_NAME} writable, or set RAYDF_CACHE to a "
        "folder on that file system")


def _per_fs_default() -> bool:
    return os.environ.get("RAYDF_CACHE_PER_FS", "1").strip().lower() not in ("0", "false", "no")


class NodeCaches:
    """The node's caches, by file system; most calls go to the cache a path is in."""

    def __init__(self, root: Path | None = None, *, per_fs: bool | None = None) -> None:
        self.main = NodeCache(root)
        self.root = self.main.root
        self.per_fs = _per_fs_default() if per_fs is None else per_fs
        node_root = os.environ.get("RAYDF_NODE_ROOT")
        self._boundary = Path(node_root).absolute() if node_root else None
        self._lock = threading.Lock()
        self._by_dev: dict[int, NodeCache] = {self.root.stat().st_dev: self.main}
        for line in self._listed():
            with contextlib.suppress(OSError, StorageError):
                if (Path(line) / "blobs").is_dir():
                    self._by_dev.setdefault(Path(line).stat().st_dev, NodeCache(Path(line)))

    def __repr__(self) -> str:
        return f"<NodeCaches {', '.join(str(c.root) for c in self.caches)}>"

    @property
    def caches(self) -> list[NodeCache]:
        with self._lock:
            return [self.main, *(c for c in self._by_dev.values() if c is not self.main)]

    def _listed(self) -> list[str]:
        try:
            return [s for s in (self.root / _ROOTS_FILE).read_text().splitlines() if s]
        except OSError:
            return []

    def for_path(self, path: Path | None) -> NodeCache:
        """The cache on ``path``'s file system (the configured one for None), made
        on first use (see the module docstring); StorageError if it cannot be."""
        if path is None or not self.per_fs:
            return self.main
        try:
            dev = _existing(path).stat().st_dev
        except OSError as exc:
            raise storage_error(exc, path) from None
        with self._lock:
            if dev in self._by_dev:
                return self._by_dev[dev]
            cache = NodeCache(cache_root_for(path, self._boundary))
            self._by_dev[dev] = cache
            listed = self._listed()
            if str(cache.root) not in listed:
                with contextlib.suppress(OSError):
                    (self.root / _ROOTS_FILE).write_text(
                        "".join(f"{s}\n" for s in [*listed, str(cache.root)]))
            return cache

    def owner(self, path: Path) -> NodeCache:
        """The cache ``path`` (a blob or partial) is in."""
        for cache in self.caches:
            if path.is_relative_to(cache.root):
                return cache
        return self.main

    def is_blob(self, path: Path) -> bool:
        return any(path.parent == c.blobs for c in self.caches)

    # -- a file's blob, partial and placement ------------------------------

    def blob(self, file: RemoteFile, prefer: NodeCache | None = None) -> Path | None:
        """The verified blob of ``file`` in any cache, ``prefer``'s first."""
        for cache in [prefer] if prefer is not None else []:
            if (found := cache.blob(file)) is not None:
                return found
        for cache in self.caches:
            if cache is not prefer and (found := cache.blob(file)) is not None:
                return found
        return None

    def check_room(self, nbytes: int, near: Path | None = None) -> None:
        self.for_path(near).check_room(nbytes)

    def new_partial(self, file: RemoteFile, path: Path) -> Path:
        return self.owner(path).new_partial(file, path)

    def commit(self, partial: Path, file: RemoteFile, found: dict[str, str] | None = None,
               *, stamp: bool = True) -> Path:
        return self.owner(partial).commit(partial, file, found, stamp=stamp)

    def stamp(self, blob: Path) -> None:
        self.owner(blob).stamp(blob)

    def recheck(self, path: Path, file: RemoteFile) -> bool:
        return self.owner(path).recheck(path, file)

    def discard(self, partial: Path) -> None:
        partial.unlink(missing_ok=True)

    def place(self, source: Path, dest: Path) -> None:
        """Put ``source``'s bytes at ``dest`` atomically, by a hard link to a blob of
        the cache on ``dest``'s file system; a blob only in another file system's
        cache is copied into it first (once)."""
        home = self.owner(source)
        if self.per_fs and source.parent == home.blobs:
            try:
                target_cache = self.for_path(dest.parent)
            except StorageError:
                target_cache = home  # no cache there: copied at placement as before
            if target_cache is not home:
                source, home = target_cache.import_blob(source), target_cache
        home.place(source, dest)

    # -- what `raydf cache` and the peer's snapshot see ---------------------

    def sweep_orphans(self) -> int:
        return sum(c.sweep_orphans() for c in self.caches)

    def entries(self) -> list[dict[str, object]]:
        """Every verified blob of every cache (``cache``: its root)."""
        return [{**row, "cache": str(c.root)} for c in self.caches for row in c.entries()]

    def usage(self) -> int:
        return sum(c.usage() for c in self.caches)

    def remove(self, key: str) -> int:
        return sum(c.remove(key) for c in self.caches)

    def gc(self) -> dict[str, int]:
        total: dict[str, int] = {"partials": 0, "blobs": 0, "bytes": 0}
        for cache in self.caches:
            for name, value in cache.gc().items():
                total[name] = total.get(name, 0) + value
        return total
