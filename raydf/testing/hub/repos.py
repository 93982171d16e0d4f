"""The emulator's repo store: plain folders on disk seen as hub repositories.

Layout (see the package docstring for the full description)::

    ROOT/<type>/<owner>/<name>/            default branch ("main" on HF, "master" on ModelScope)
    ROOT/<type>/<owner>/<name>@<label>/    files of another revision, never a repo by itself
    ROOT/<type>/<owner>/<name>.hub.json    optional: privacy, gating, extra branches and tags

Every file gets a sha256 and a git blob sha1, computed once per
(path, size, mtime_ns) and cached, so a 1 GiB shard is hashed once however many
requests ask for it. A revision's commit id is derived from its content only:
the same files always give the same commit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO_TYPES = ("models", "datasets", "spaces")
DEFAULT_BRANCHES = ("main", "master")
META_SUFFIX = ".hub.json"
LFS_EXTENSIONS = frozenset({
    "safetensors", "bin", "pt", "pth", "ckpt", "gguf", "onnx", "h5", "msgpack", "parquet",
    "arrow", "tar", "zip", "npy", "npz",
})
LFS_MIN_SIZE = 10 * 2**20
_HASH_CHUNK = 8 * 2**20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHORT_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")


def is_lfs(path: str, size: int) -> bool:
    """Whether the hubs would store this file in LFS (by extension or by size)."""
    return path.rsplit(".", 1)[-1].lower() in LFS_EXTENSIONS or size >= LFS_MIN_SIZE


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands in the git tree for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One file of one revision, with the digests both hubs publish."""

    path: str
    local: Path
    size: int
    sha256: str
    git_sha1: str

    @property
    def lfs(self) -> bool:
        return is_lfs(self.path, self.size)

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    @property
    def blob_id(self) -> str:
        """The id in the git tree: of the pointer for LFS files, as on the real hubs."""
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self.git_sha1


@dataclass(frozen=True)
class Snapshot:
    """The content of one revision: its commit id and its files sorted by path."""

    commit: str
    files: tuple[FileEntry, ...]
    mtime: int
    by_path: dict[str, FileEntry] = field(init=False, repr=False, compare=False)
    dirs: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: a snapshot is reused for every request until a file changes.
        object.__setattr__(self, "by_path", {f.path: f for f in self.files})
        dirs: set[str] = set()
        for f in self.files:
            parts = f.path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        object.__setattr__(self, "dirs", tuple(sorted(dirs)))

    def entries(self, under: str = "", recursive: bool = True) -> list[tuple[str, FileEntry | None]]:
        """(path, file) pairs below ``under`` sorted by path; file is None for a directory."""
        prefix = f"{under}/" if under else ""
        items: list[tuple[str, FileEntry | None]] = [(d, None) for d in self.dirs if d.startswith(prefix)]
        items += [(f.path, f) for f in self.files if f.path.startswith(prefix)]
        if not recursive:
            items = [(p, f) for p, f in items if "/" not in p[len(prefix) :]]
        return sorted(items, key=lambda item: item[0])

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` ("" is the root) is a directory of this snapshot."""
        return path == "" or path in self.dirs


@dataclass(frozen=True)
class Repo:
    """A repository found under ROOT, with its access rules and revisions."""

    repo_type: str
    repo_id: str
    folder: Path
    private: bool = False
    gated: str | None = None
    branches: dict[str, Path] = field(default_factory=dict)
    tags: dict[str, Path] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[1]


class RepoStore:
    """Finds repos under ``root`` and computes their snapshots (thread-safe)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._digests: dict[tuple[str, int, int], tuple[str, str]] = {}
        # folder -> (its last scan, in scan order; the snapshot of it)
        self._snapshots: dict[Path, tuple[list[tuple[str, str, int, int]], Snapshot]] = {}
        self._lock = threading.Lock()
        # One lock per folder: concurrent requests for a fresh repo wait for one
        # hashing pass instead of all hashing the same gigabytes.
        self._folder_locks: dict[Path, threading.Lock] = {}
        self._tickets = itertools.count()  # orders requests and scans (see snapshot)
        self._fresh: dict[Path, tuple[int, Snapshot]] = {}  # folder -> (scan's ticket, result)

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        """The repo ``owner/name`` of ``repo_type`` ("models", ...), or None."""
        parts = repo_id.split("/")
        if repo_type not in REPO_TYPES or len(parts) != 2:
            return None
        if not all(_NAME_RE.match(p) for p in parts) or parts[1].endswith(META_SUFFIX):
            return None
        folder = self.root / repo_type / parts[0] / parts[1]
        if not folder.is_dir():
            return None
        meta_path = folder.parent / f"{parts[1]}{META_SUFFIX}"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        gated = meta.get("gated", False)
        return Repo(
            repo_type=repo_type,
            repo_id=repo_id,
            folder=folder,
            private=bool(meta.get("private", False)),
            gated=("manual" if gated is True else gated) or None,
            branches=_sibling_folders(folder.parent, meta.get("branches", {})),
            tags=_sibling_folders(folder.parent, meta.get("tags", {})),
        )

    def moved(self, repo_type: str, repo_id: str) -> str | None:
        """The new id of a renamed repo (``"moved_to"`` in its .hub.json), else None."""
        parts = repo_id.split("/")
        if repo_type not in REPO_TYPES or len(parts) != 2 or not all(_NAME_RE.match(p) for p in parts):
            return None
        folder = self.root / repo_type / parts[0] / parts[1]
        meta_path = folder.parent / f"{parts[1]}{META_SUFFIX}"
        if folder.is_dir() or not meta_path.is_file():
            return None
        target = json.loads(meta_path.read_text()).get("moved_to")
        return target if isinstance(target, str) and self.get(repo_type, target) else None

    def repo_ids(self, repo_type: str) -> list[str]:
        """Every repo id of a type, sorted (used for ModelScope's numeric dataset ids)."""
        base = self.root / repo_type
        found = [f"{o.name}/{r.name}" for o in base.glob("*") if o.is_dir() for r in o.glob("*")]
        return sorted(i for i in found if self.get(repo_type, i) is not None)

    def revisions(self, repo: Repo) -> dict[str, tuple[str, Path]]:
        """Every named revision: name -> (kind "branch" | "tag", folder)."""
        out = {name: ("branch", repo.folder) for name in DEFAULT_BRANCHES}
        out.update({n: ("branch", p) for n, p in repo.branches.items()})
        out.update({n: ("tag", p) for n, p in repo.tags.items()})
        return out

    def resolve(self, repo: Repo, revision: str) -> Snapshot | None:
        """The snapshot of a branch, tag, commit id or unique commit prefix; else None.

        A prefix of 7 or more hex digits stands for the one commit it starts, as
        git (and the Hub, which raydf's short ids are checked against) read it.
        """
        named = self.revisions(repo)
        if revision in named:
            return self.snapshot(named[revision][1])
        if SHORT_COMMIT_RE.match(revision):
            folders = dict.fromkeys(f for _, f in named.values())  # main and master: one folder
            found = {snap.commit: snap for snap in map(self.snapshot, folders)
                     if snap.commit.startswith(revision)}
            if len(found) == 1:
                return found.popitem()[1]
        return None

    def snapshot(self, folder: Path) -> Snapshot:
        """The files of ``folder`` with digests and commit id, as they are now.

        A rescan is a stat per file (~3 us each, 10-20 ms for 2,000 files in
        Python); digests and the snapshot itself are reused while no file's
        (path, size, mtime_ns) changed, so edits to a repo folder show up on the
        next request. Requests that arrive while a rescan of the folder runs
        share the next one: a scan that began after a request arrived sees
        every edit made before it, which is all "at once" can mean, and a burst
        of clients does not queue one scan each behind the folder's lock.
        """
        with self._lock:
            arrived = next(self._tickets)
            folder_lock = self._folder_locks.setdefault(folder, threading.Lock())
        with folder_lock:
            fresh = self._fresh.get(folder)
            if fresh is not None and fresh[0] > arrived:
                return fresh[1]
            with self._lock:
                began = next(self._tickets)
            snap = self._rescan(folder)
            self._fresh[folder] = (began, snap)
            return snap

    def _rescan(self, folder: Path) -> Snapshot:
        """Scan ``folder`` (its folder lock held) and return its snapshot."""
        stats: list[tuple[str, str, int, int]] = []
        _scan(str(folder), "", stats)
        cached = self._snapshots.get(folder)
        # In scan order first: unchanged folders list in the same order, and sorting
        # thousands of entries per request is most of a rescan's cost.
        if cached is not None and cached[0] == stats:
            return cached[1]
        signature = list(stats)
        stats.sort()
        files = [
            FileEntry(rel, Path(local), size, *self._digest(local, size, mtime_ns))
            for rel, local, size, mtime_ns in stats
        ]
        commit = hashlib.sha1("".join(f"{f.path}\0{f.sha256}\n" for f in files).encode()).hexdigest()
        mtime = max((m for *_, m in stats), default=0) // 10**9
        snap = Snapshot(commit=commit, files=tuple(files), mtime=mtime)
        self._snapshots[folder] = (signature, snap)
        return snap

    def _digest(self, local: str, size: int, mtime_ns: int) -> tuple[str, str]:
        key = (local, size, mtime_ns)
        with self._lock:
            cached = self._digests.get(key)
        if cached is not None:
            return cached
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(b"blob %d\0" % size)
        with open(local, "rb", buffering=0) as fh:
            while block := fh.read(_HASH_CHUNK):
                sha256.update(block)
                sha1.update(block)
        result = (sha256.hexdigest(), sha1.hexdigest())
        with self._lock:
            self._digests[key] = result
        return result


def _scan(top: str, prefix: str, out: list[tuple[str, str, int, int]]) -> None:
    """Append (repo path, local path, size, mtime_ns) of every file below ``top`` to
    ``out`` in scan order, .git left out."""
    with os.scandir(top) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != ".git":
                    _scan(entry.path, f"{prefix}{entry.name}/", out)
            elif entry.is_file():
                st = entry.stat()
                out.append((prefix + entry.name, entry.path, st.st_size, st.st_mtime_ns))


def _sibling_folders(parent: Path, mapping: dict[str, str]) -> dict[str, Path]:
    """Map revision names to sibling folders, refusing anything that leaves ``parent``."""
    out: dict[str, Path] = {}
    for name, folder in mapping.items():
        if "/" in folder or "\\" in folder or folder in ("", ".", ".."):
            raise ValueError(f"revision {name!r}: {folder!r} must be a sibling folder name")
        if not (parent / folder).is_dir():
            raise ValueError(f"revision {name!r}: folder {parent / folder} does not exist")
        out[name] = parent / folder
    return out
