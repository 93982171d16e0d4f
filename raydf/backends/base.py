"""What every backend provides, and the types it speaks.

A backend is constructed for one :class:`~raydf.uri.Source` with its options
(token, endpoint, revision) and is the only object that talks to the origin.
Only seed actors hold backends; peers never see a token.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from raydf.errors import HubError, UnsafeListing

__all__ = [
    "Authorizing",
    "Backend",
    "BackendOptions",
    "RemoteFile",
    "Secret",
    "hub_requests",
    "resolves",
    "safe_relative_path",
    "under_source",
]


class Secret:
    """A token that never shows itself in a repr, a log line or a message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class BackendOptions:
    """Per-backend settings, resolved from flags and environment for one scheme."""

    token: Secret | None = None
    endpoint: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    ``path`` is where it goes under the destination (relative to the URL's
    path); ``repo_path`` is its path in the repo or location. The digest is
    ``sha256`` where the origin gives one, else the git blob ``git_sha1``
    (regular Hugging Face files), else neither (plain HTTP).
    """

    path: str
    repo_path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None

    @property
    def digest(self) -> tuple[str, str] | None:
        """``(algorithm, hex)`` of the whole-file digest, if the origin gives one."""
        if self.sha256:
            return ("sha256", self.sha256)
        if self.git_sha1:
            return ("git-sha1", self.git_sha1)
        return None

    @property
    def content_key(self) -> str | None:
        """Content address for the node-local cache, if the origin gives a digest."""
        digest = self.digest
        return f"{digest[0]}-{digest[1]}" if digest else None


@runtime_checkable
class Backend(Protocol):
    """The protocol each ``raydf.backends.<name>`` module implements.

    ``commit`` is what :meth:`resolve` returned; everything after resolving
    is keyed by it, so a moving branch is read at one consistent point.
    """

    SCHEME: ClassVar[str]

    @property
    def requests(self) -> int:
        """Requests sent to the origin so far (for the report)."""
        ...

    def resolve(self) -> str:
        """The immutable commit (or version tag) the configured revision names now."""
        ...

    def list_files(self, commit: str) -> list[RemoteFile]:
        """Every file under the source's path at ``commit``, with size and digest."""
        ...

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        """One file's metadata."""
        ...

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the bytes ``[start, start + len(buffer))`` of a file."""
        ...

    def exists(self) -> bool:
        """Whether the source exists at the configured revision (and is readable)."""
        ...

    def close(self) -> None: ...


def hub_requests(backend: Backend) -> dict[str, int]:
    """Origin requests by kind (``api``, ``resolve``, ``content``) for the report.

    The hub backends count each kind; any other backend's requests all fetch
    content.
    """
    by_kind = getattr(backend, "requests_by_kind", None)
    return dict(by_kind) if isinstance(by_kind, dict) else {"content": backend.requests}


@runtime_checkable
class Authorizing(Protocol):
    """A backend whose listing may be readable by callers its file content is not
    (a gated Hugging Face repo lists freely). Node caches and other jobs' pieces
    would hand such callers every byte, so the seed asks the origin once, with the
    caller's own credential, before a plan is returned (see ``SeedActor.plan``)."""

    def authorize(self, commit: str, files: tuple[RemoteFile, ...]) -> None:
        """Raise the hub's own error unless this caller may read the files' content.
        At most one cheap request (no body), and none for a public repo."""
        ...


def resolves(resolve: Callable[[], object], missing: tuple[type[Exception], ...]) -> bool:
    """``exists()`` for backends: True if ``resolve()`` works, False on ``missing``."""
    try:
        resolve()
    except missing:
        return False
    return True


def under_source(repo_path: object, prefix: str, *, origin: str) -> str | None:
    """Where a listed repo path goes under the destination, or None if it is not
    under the URL's ``prefix`` (the URL names a file: its own name; a folder:
    the path below it; the whole repo: the path itself). Checks the path first."""
    if not isinstance(repo_path, str):
        raise HubError(f"{origin} listed an entry without a path")
    safe_relative_path(repo_path, origin=origin)
    if not prefix:
        return repo_path
    if repo_path == prefix:
        return repo_path.rsplit("/", 1)[-1]
    if repo_path.startswith(prefix + "/"):
        return repo_path[len(prefix) + 1:]
    return None


def safe_relative_path(path: str, *, origin: str) -> str:
    """Check a listing entry's path before it is ever joined to a destination.

    Refuses absolute paths, ``.``/``..`` segments, backslashes, NUL and other
    control characters, and empty segments.
    """
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path)
        or any(seg in ("", ".", "..") for seg in path.split("/"))
        or posixpath.normpath(path) != path
    )
    if bad:
        raise UnsafeListing(
            f"{origin} listed an unsafe path {path!r} (absolute, '..', backslash or control "
            "character); refusing to write it. Report the repo to its owner."
        )
    return path
