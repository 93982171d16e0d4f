"""The node-local, content-addressed store, and atomic placement.

Layout under the cache root (``$RAYDF_CACHE``, else ``$RAYDF_NODE_ROOT/cache``,
else ``~/.cache/raydf``)::

    blobs/<algorithm>-<hex>      verified files, named by the hub's digest
    stamps/<algorithm>-<hex>     (size, mtime, ctime, inode) of the blob when it was verified
    partial/<key>.<pid>-<id>.partial   files being assembled (never read as complete);
                                        those of a dead writer are swept

A blob exists only after its digest matched, so a second fan-out, another
revision or the other hub with the same file costs no origin traffic. The
destination is materialized from the blob by a hard link written under a
``.raydf-partial`` name and renamed into place: a final path never holds a
partial or unverified file. A node has one such cache per file system its
destinations are on, so that link never has to be a copy
(:mod:`raydf.cache_roots`).

A blob is trusted only while its stamp matches: a write through a destination
(root ignores the 0444 mode) or to the blob moves its ctime, which no one can
set back (``touch`` and ``os.utime`` move it too), and the blob is hashed again
before it is served or placed; if it fails it is dropped and the file comes
again from peers or the origin. raydf's own links move the ctime as well, so it
stamps the blob again after each placement. Corruption below the file system
(media errors that no system call made) is caught where bytes are checked: the
receiver's per-piece CRC and whole-file digest.

``RAYDF_NODE_ROOT`` (set per simulated node by ``raydf.testing.LocalCluster``)
also prefixes destination paths, so simulated nodes on one machine do not
write the same files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from raydf.backends.base import RemoteFile
from raydf.errors import IntegrityError, StorageError
from raydf.pieces import FileDigest

__all__ = ["InOrderDigests", "NodeCache", "node_path", "storage_error", "temp_sibling",
           "verify_file"]

_LOG = logging.getLogger(__name__)
_READ_BLOCK = 8 * 2**20
# Hugging Face lists regular files (under 10 MiB) by git blob sha1 only, and
# ModelScope lists every file by sha256: small files are filed under both, so
# the same config.json from the other hub is a cache hit too.
ALIAS_MAX_SIZE = 16 * 2**20
# In partial names (no "." or "/", which the names use as separators).
_HOST = socket.gethostname().replace(".", "_").replace("/", "_") or "localhost"


_NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs)
_TEMP_SUFFIX_BYTES = len(".") + 8 + len(".raydf-partial")


def temp_sibling(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path`` that the file system accepts
    wherever ``path`` itself fits: the name is shortened, never lengthened past
    255 bytes, so a file named near the limit can still be written and renamed."""
    stem = os.fsencode(path.name)[: _NAME_MAX - _TEMP_SUFFIX_BYTES - 1]
    name = "." + stem.decode(errors="ignore") + f".{uuid.uuid4().hex[:8]}.raydf-partial"
    return path.with_name(name)


def node_path(path: str | os.PathLike[str]) -> Path:
    """Where ``path`` lives on this node: under ``$RAYDF_NODE_ROOT`` if set."""
    root = os.environ.get("RAYDF_NODE_ROOT")
    p = Path(path).expanduser()
    if not root:
        return p.absolute()
    return Path(root) / p.absolute().relative_to("/")


def default_cache_root() -> Path:
    explicit = os.environ.get("RAYDF_CACHE")
    if explicit:
        return Path(explicit)
    node_root = os.environ.get("RAYDF_NODE_ROOT")
    if node_root:
        return Path(node_root) / "cache"
    return Path.home() / ".cache" / "raydf"


def file_digests(file: RemoteFile) -> dict[str, FileDigest]:
    """The digests to compute over ``file``'s bytes, by algorithm: the one the
    origin listed and, for files small enough to be regular (non-LFS) Hugging
    Face files, both sha256 and the git blob sha1, so the cache can file them
    under both names."""
    expected = file.digest
    algorithms = {expected[0]} if expected else set()
    if file.size <= ALIAS_MAX_SIZE:
        algorithms |= {"sha256", "git-sha1"}
    return {a: FileDigest(a, file.size) for a in sorted(algorithms)}


def check_digests(file: RemoteFile, found: dict[str, str]) -> None:
    """Raise IntegrityError unless ``found`` has the digest the origin listed."""
    expected = file.digest
    if expected is not None and found.get(expected[0]) != expected[1]:
        got = found.get(expected[0]) or "nothing"
        raise IntegrityError(
            f"{file.path}: {expected[0]} mismatch (expected {expected[1][:16]}…, got "
            f"{got[:16]}…); the file was not placed. The origin sent corrupt "
            "bytes; retry, and report it to the hub if it persists"
        )


def verify_file(path: Path, file: RemoteFile) -> dict[str, str]:
    """Check a file's size and whole-file digest; raise IntegrityError if wrong.

    Returns the digests computed (see :func:`file_digests`).
    """
    _check_size(path, file)
    digests = file_digests(file)
    if digests:
        with path.open("rb") as f:
            while block := f.read(_READ_BLOCK):
                for digest in digests.values():
                    digest.update(block)
    found = {a: d.hexdigest() for a, d in digests.items()}
    check_digests(file, found)
    return found


def _check_size(path: Path, file: RemoteFile) -> None:
    size = path.stat().st_size
    if size != file.size:
        raise IntegrityError(f"{file.path}: got {size} bytes, the origin listed {file.size}")


class InOrderDigests:
    """A file's digests (:func:`file_digests`) fed piece by piece as pieces arrive.

    A piece that arrives before its predecessors waits: it is read back from
    the partial file when its turn comes. Once every piece is in, the file is
    verified without reading it again. Thread-safe.
    """

    def __init__(self, file: RemoteFile, num_pieces: int) -> None:
        self._digests = file_digests(file)
        self._num_pieces = num_pieces
        self._next = 0
        self._waiting: set[int] = set()
        self._lock = threading.Lock()

    def add(self, index: int, data: memoryview, read_back: Callable[[int], memoryview]) -> None:
        """Piece ``index`` (its bytes ``data``) is written; ``read_back(i)`` reads
        an earlier-arrived piece ``i`` from the partial file."""
        with self._lock:
            if index < self._next:
                return  # taken again after a failed attempt: already in
            if index != self._next:
                self._waiting.add(index)
                return
            self._update(data)
            while self._next in self._waiting:
                self._waiting.remove(self._next)
                self._update(read_back(self._next))

    @property
    def hashed(self) -> int:
        """Pieces ``0 .. hashed-1`` are in the digests (later ones may be waiting)."""
        with self._lock:
            return self._next

    def _update(self, data: memoryview) -> None:
        for digest in self._digests.values():
            digest.update(data)
        self._next += 1

    def result(self) -> dict[str, str] | None:
        """The digests, once every piece was added in order; else None."""
        with self._lock:
            if self._next < self._num_pieces:
                return None
            return {a: d.hexdigest() for a, d in self._digests.items()}


class NodeCache:
    """Verified blobs by content key, plus the partial files being assembled."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.blobs = self.root / "blobs"
        self.partials = self.root / "partial"
        self.stamps = self.root / "stamps"
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.partials.mkdir(parents=True, exist_ok=True)
            self.stamps.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the raydf cache at {self.root}: {exc.strerror}; "
                               "set RAYDF_CACHE to a writable folder") from None

    def __repr__(self) -> str:
        return f"<NodeCache {self.root}>"

    def blob(self, file: RemoteFile) -> Path | None:
        """The verified blob for ``file``, if this node has it and it is unchanged
        since it was verified (else it is hashed again, and dropped if it fails)."""
        key = file.content_key
        if key is None:
            return None
        path = self.blobs / key
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if st.st_size != file.size:
            return None
        if self._stamp(key) == _stamp_of(st):
            return path
        # Changed since verified, or verified before stamps were kept.
        if not self.recheck(path, file):
            return None
        self._write_stamp(key, path)
        return path

    def recheck(self, path: Path, file: RemoteFile) -> bool:
        """Hash the blob ``path`` of ``file`` again; if it fails, drop it (and its
        aliases) so the file is fetched again. Whether it was good."""
        try:
            verify_file(path, file)
        except IntegrityError as err:
            _LOG.warning("raydf cache: %s changed after it was verified (%s); "
                         "dropped, it will be fetched again", path, err)
            if file.content_key:
                self.remove(file.content_key)
            return False
        return True

    def _stamp(self, key: str) -> str | None:
        try:
            return (self.stamps / key).read_text()
        except FileNotFoundError:
            return None

    def _write_stamp(self, key: str, blob: Path) -> None:
        self.stamps.mkdir(parents=True, exist_ok=True)
        tmp = self.stamps / f".{key}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(_stamp_of(blob.stat()))
        os.replace(tmp, self.stamps / key)

    def partial_path(self, file: RemoteFile) -> Path:
        """A fresh name for a partial file of ``file`` (nothing is made yet)."""
        key = file.content_key or "nokey-" + hashlib.sha256(file.repo_path.encode()).hexdigest()
        # The writer's host and pid are in the name, so a later process can tell
        # an abandoned partial (its writer died) from one being written, also in
        # a cache folder that several hosts share (NFS, hostPath).
        return self.partials / f"{key}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"

    def check_room(self, nbytes: int) -> None:
        """Raise StorageError now if the cache's file system has less than ``nbytes``
        free: a full disk is an error before the transfer, not half-way through it."""
        try:
            # Recreated if someone removed the cache folder under a running peer.
            self.partials.mkdir(parents=True, exist_ok=True)
            st = os.statvfs(self.partials)
        except OSError as exc:
            raise storage_error(exc, self.partials) from None
        if st.f_bavail * st.f_frsize < nbytes:
            raise StorageError(f"no space left to write {nbytes} bytes under {self.root}; "
                               "free space or choose another -O")

    def new_partial(self, file: RemoteFile, path: Path | None = None) -> Path:
        """A fresh, preallocated partial file for ``file`` (at ``path``, a name
        :meth:`partial_path` gave, else a new one)."""
        path = path or self.partial_path(file)
        try:
            # Recreated if someone removed the cache folder under a running peer.
            self.partials.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                # Reserve the space now: a full disk is an error before the
                # transfer, not a raw OSError half-way through a sparse file.
                if file.size:
                    os.posix_fallocate(f.fileno(), 0, file.size)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise storage_error(exc, path) from None
        return path

    def commit(self, partial: Path, file: RemoteFile, found: dict[str, str] | None = None,
               *, stamp: bool = True) -> Path:
        """Verify a complete partial file and move it into the store.

        ``found``: its digests, computed as it was written (see
        :class:`InOrderDigests`); else the file is read to compute them.
        ``stamp=False``: the caller stamps the blob itself (:meth:`stamp`) once
        it placed it, so a new blob is stamped once, not once more per link.
        On a digest mismatch the partial is deleted and IntegrityError raised.
        Files without a digest (plain HTTP) are not stored: they are returned
        as they are, to be moved into place by :meth:`place`.
        """
        try:
            if found is None:
                digests = verify_file(partial, file)
            else:
                _check_size(partial, file)
                check_digests(file, found)
                digests = found
        except IntegrityError:
            partial.unlink(missing_ok=True)
            raise
        key = file.content_key
        if key is None:
            return partial
        blob = self.blobs / key
        # Read-only, so a destination hard-linked to it cannot be edited in
        # place (which would corrupt the blob for every later fan-out).
        partial.chmod(0o444)
        self.blobs.mkdir(parents=True, exist_ok=True)
        os.replace(partial, blob)
        for algorithm, hexdigest in digests.items():
            alias = self.blobs / f"{algorithm}-{hexdigest}"
            if alias != blob and not alias.exists():
                with contextlib.suppress(FileExistsError):
                    os.link(blob, alias)
        if stamp:
            self._write_stamp(key, blob)
        return blob

    def is_trusted(self, key: str) -> bool:
        """Whether the blob ``key`` is here, unchanged since it was stamped."""
        try:
            return self._stamp(key) == _stamp_of((self.blobs / key).stat())
        except FileNotFoundError:
            return False

    def import_blob(self, blob: Path) -> Path:
        """``blob``, a verified blob of another cache (another file system), copied
        in as a blob of this one (unless it is here already), stamped."""
        here = self.blobs / blob.name
        if self.is_trusted(blob.name):
            return here
        tmp = self.partials / f"{blob.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
        try:
            self.partials.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, tmp)
            tmp.chmod(0o444)
            self.blobs.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, here)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(exc, here) from None
        self._write_stamp(blob.name, here)
        return here

    def stamp(self, blob: Path) -> None:
        """Record the blob ``blob`` (just verified, links made) as trusted as it is now."""
        self._write_stamp(blob.name, blob)

    def place(self, source: Path, dest: Path) -> None:
        """Put ``source``'s bytes at ``dest`` atomically (link, else copy; then rename)."""
        tmp = temp_sibling(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if source.parent == self.partials:
                try:
                    os.replace(source, tmp)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    shutil.copyfile(source, tmp)  # RAYDF_CACHE_PER_FS=0: another fs
                    source.unlink()
            else:
                try:
                    os.link(source, tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
            if source.parent == self.blobs and self._stamp(source.name) is not None:
                self._write_stamp(source.name, source)  # the link moved its ctime
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(exc, dest) from None

    def discard(self, partial: Path) -> None:
        partial.unlink(missing_ok=True)

    def sweep_orphans(self) -> int:
        """Delete partial files whose writing process is gone; return how many."""
        swept = 0
        for partial in self.partials.glob("*.partial"):
            host, _, rest = partial.name.rsplit(".", 2)[-2].rpartition("-")[0].rpartition("-")
            pid = rest if host else ""
            # Only this host's: a pid says nothing about another host's processes.
            if host == _HOST and pid.isdigit() and not _alive(int(pid)):
                partial.unlink(missing_ok=True)
                swept += 1
        return swept


    def entries(self) -> list[dict[str, object]]:
        """Every verified blob: ``key``, ``bytes``, ``in_use`` (linked from a destination)."""
        rows: list[dict[str, object]] = []
        names: dict[int, int] = {}
        stats = self._blob_stats()
        for st in stats.values():
            names[st.st_ino] = names.get(st.st_ino, 0) + 1
        for blob, st in stats.items():
            # Links beyond the cache's own names (aliases) are destinations.
            rows.append({"key": blob.name, "bytes": st.st_size,
                         "in_use": st.st_nlink > names[st.st_ino]})
        return rows

    def usage(self) -> int:
        """Bytes the blobs take (aliases of one file counted once)."""
        return sum({st.st_ino: st.st_size for st in self._blob_stats().values()}.values())

    def _blob_stats(self) -> dict[Path, os.stat_result]:
        """Each blob's stat, sorted by name; one another process (a ``cache gc`` or
        ``rm`` at the same time) removed meanwhile is left out."""
        stats = {}
        for blob in sorted(self.blobs.iterdir()) if self.blobs.exists() else []:
            with contextlib.suppress(FileNotFoundError):
                stats[blob] = blob.stat()
        return stats

    def remove(self, key: str) -> int:
        """Delete the blob ``key`` and its aliases; destinations keep their files."""
        target = self.blobs / key
        if "/" in key or not target.exists():
            return 0
        inode = target.stat().st_ino
        removed = 0
        for blob, st in self._blob_stats().items():
            if st.st_ino == inode:
                blob.unlink()
                (self.stamps / blob.name).unlink(missing_ok=True)
                removed += 1
        return removed

    def gc(self) -> dict[str, int]:
        """Sweep abandoned partials and blobs no destination links to any more."""
        unused = [row for row in self.entries() if not row["in_use"]]
        freed: dict[int, int] = {}  # inode -> bytes: aliases of one file count once
        for row in unused:
            path = self.blobs / str(row["key"])
            with contextlib.suppress(FileNotFoundError):
                inode = path.stat().st_ino
                path.unlink()
                freed[inode] = int(str(row["bytes"]))
                (self.stamps / path.name).unlink(missing_ok=True)
        return {"partials": self.sweep_orphans(), "blobs": len(unused),
                "bytes": sum(freed.values())}


def _stamp_of(st: os.stat_result) -> str:
    """What a write to a blob changes; the ctime also moves when a link to it is
    made or removed (a destination placed or deleted): such a blob is hashed once
    more, unless raydf made the link and stamped it again."""
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def storage_error(exc: OSError, path: Path) -> StorageError:
    """The StorageError for an OSError met while writing ``path``."""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return StorageError(f"no space left to write {path}; free space or choose another -O")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"cannot write {path}: permission denied; choose a writable -O")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")
