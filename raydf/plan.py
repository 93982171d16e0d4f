"""What one fan-out fetches: the files of a repo at one commit, filtered and checked.

Pure: the listing comes from a backend, the checks are here. Include/exclude
patterns have huggingface_hub's semantics (``fnmatch``, ``*`` crosses ``/``; a
pattern ending in ``/`` means everything under that folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from raydf.backends.base import RemoteFile, safe_relative_path
from raydf.errors import ConfigError, UnsafeListing

__all__ = ["RepoPlan", "filter_files", "normalize_patterns"]

MAX_FILE_SIZE = 2**50  # 1 PiB: anything larger in a listing is a hostile or broken hub


@dataclass(frozen=True)
class RepoPlan:
    """The files of ``url`` at ``commit`` that a fan-out must deliver."""

    url: str
    commit: str
    files: tuple[RemoteFile, ...] = field(default_factory=tuple)
    # The hub said anyone may read it (neither private nor gated); False when it
    # said otherwise or nothing (see SeedActor.plan). No token needed to warm it.
    public: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def __repr__(self) -> str:
        return f"<RepoPlan {self.url}@{self.commit[:12]} {len(self.files)} files, {self.total_bytes} B>"


def normalize_patterns(patterns: Sequence[str] | None) -> list[str]:
    """Check --include/--exclude patterns; ``dir/`` becomes ``dir/*``."""
    out = []
    for pattern in patterns or ():
        if not pattern or pattern != pattern.strip():
            raise ConfigError(f"empty or space-padded pattern {pattern!r} in --include/--exclude")
        out.append(pattern + "*" if pattern.endswith("/") else pattern)
    return out


def filter_files(
    files: Sequence[RemoteFile],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    origin: str,
) -> tuple[RemoteFile, ...]:
    """Keep the files matching ``include`` (all if none) and not ``exclude``; check the listing.

    Refuses (UnsafeListing) paths escaping the destination, duplicate paths, a
    path that is both a file and a folder, and absurd sizes.
    """
    inc, exc = normalize_patterns(include), normalize_patterns(exclude)
    seen: set[str] = set()
    folders: set[str] = set()
    for f in files:
        safe_relative_path(f.path, origin=origin)
        if not 0 <= f.size <= MAX_FILE_SIZE:
            raise UnsafeListing(f"{origin} listed {f.path!r} with an impossible size {f.size}")
        if f.path in seen:
            raise UnsafeListing(f"{origin} listed {f.path!r} twice; refusing an ambiguous listing")
        seen.add(f.path)
        parts = f.path.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = seen & folders
    if clash:
        raise UnsafeListing(
            f"{origin} listed {sorted(clash)[0]!r} as both a file and a folder; refusing it"
        )
    return tuple(
        f for f in files
        if (not inc or any(fnmatchcase(f.path, p) for p in inc))
        and not any(fnmatchcase(f.path, p) for p in exc)
    )
