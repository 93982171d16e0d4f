"""Object stores and HDFS through ``pyarrow.fs``: the machinery the s3, gs, abs
and hdfs backends share.

A URL names one object (``s3://bucket/dir/model.safetensors``) or a prefix
(``s3://bucket/dir``, ``s3://bucket/dir/``): a name without a trailing ``/``
that is an object is that object, else it is read as a prefix and listed
recursively. Files are placed under the destination relative to the prefix.

Object stores publish no sha256, so files carry no digest and are verified per
piece only. The "commit" is a digest of the listing (each object's key, size
and modification time): an object rewritten between listing and reading is a
different commit, and is refused rather than mixed with the old bytes.

Credentials are the caller's: :meth:`ArrowFsBackend.caller_credentials` takes
the variables a backend reads (``CALLER_ENV``, and the contents of the files
named by ``CALLER_FILES``) from the caller's environment into one
:class:`Secret`, which travels like a hub token, straight to the job's seed;
:meth:`ArrowFsBackend.adopt_caller_credentials` makes them the seed process's
whole environment for that backend (a seed serves one job), so the cluster's
own variables never stand in for a caller's. A caller without keys falls back
to the SDK's chain on the seed's node (profile files, instance or workload
identity), as the AWS and Google clients do.

Errors from pyarrow are translated where they enter: not found ->
:class:`EntryNotFound`, refused -> :class:`AccessDenied`, anything else on the
wire -> :class:`OriginUnavailable`; a filesystem that cannot even be set up
(missing library, bad settings) -> :class:`ConfigError`. Credential values
are scrubbed from every message.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raydf.backends.base import BackendOptions, RemoteFile, Secret, resolves, safe_relative_path
from raydf.errors import (
    AccessDenied,
    ConfigError,
    EntryNotFound,
    HubError,
    InvalidURL,
    OriginUnavailable,
    RevisionNotFound,
)
from raydf.uri import Source

if TYPE_CHECKING:  # imported where used: a worker that never reads a store skips pyarrow
    import pyarrow.fs as pafs

__all__ = ["ArrowFsBackend", "env_flag", "filesystem_class", "split_endpoint"]

# How pyarrow (AWS, Google and Azure SDKs, libhdfs) spells "not found" and "refused"
# inside the plain OSError it raises for most remote failures.
_NOT_FOUND = re.compile(r"NO_SUCH_(BUCKET|KEY)|NoSuch(Bucket|Key)|NOT_FOUND|ContainerNotFound|"
                        r"BlobNotFound|FileNotFoundException|\b404\b", re.IGNORECASE)
_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|"
                     r"PERMISSION_DENIED|UNAUTHENTICATED|AuthorizationFailure|"
                     r"AuthenticationFailed|AccessControlException|\b40[13]\b", re.IGNORECASE)
_MAX_DETAIL = 300


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true value (1/true/yes/on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def split_endpoint(url: str, what: str) -> tuple[str, str]:
    """``("http", "host:port")`` from an endpoint URL such as ``http://127.0.0.1:9000``."""
    scheme, sep, authority = url.partition("://")
    if not sep or scheme not in ("http", "https") or not authority.strip("/"):
        raise ConfigError(f"{what} {url!r} must look like http(s)://host[:port]")
    return scheme, authority.rstrip("/")


def filesystem_class(name: str, install: str) -> Any:
    """``pyarrow.fs.<name>``, or a ConfigError saying what to install if this pyarrow lacks it."""
    import pyarrow.fs as pafs

    cls = getattr(pafs, name, None)
    if cls is None:
        raise ConfigError(f"this pyarrow build has no pyarrow.fs.{name}; {install}")
    return cls


class ArrowFsBackend(abc.ABC):
    """A backend over one ``pyarrow.fs.FileSystem``, created on first use.

    Subclasses set ``SCHEME`` and ``AUTH_HINT`` (what to set when access is
    refused) and implement :meth:`_connect`; paths in the filesystem are
    ``<bucket>/<key>`` unless :meth:`_fs_path` says otherwise.
    """

    SCHEME: ClassVar[str]
    AUTH_HINT: ClassVar[str]
    # The caller's settings and credentials this backend reads from the environment,
    # and those that name a file whose contents must travel with them.
    CALLER_ENV: ClassVar[tuple[str, ...]] = ()
    CALLER_FILES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def caller_credentials(cls, env: Mapping[str, str]) -> Secret:
        """This backend's variables from the caller's environment ``env`` (and the
        contents of the files they name), as one secret for the job's seed."""
        variables = {name: env[name] for name in cls.CALLER_ENV if env.get(name)}
        files = {}
        for name in cls.CALLER_FILES:
            if env.get(name):
                try:
                    files[name] = Path(env[name]).expanduser().read_text()
                except OSError as exc:
                    raise ConfigError(f"{name}={env[name]} cannot be read: {exc.strerror}; "
                                      "point it at your credentials file") from None
        return Secret(json.dumps({"env": variables, "files": files}))

    @classmethod
    def adopt_caller_credentials(cls, credentials: Secret | None) -> None:
        """In a seed process: make the caller's variables the only ones this backend
        sees (files written privately, 0600), whatever the node's environment held."""
        given = json.loads(credentials.reveal()) if credentials else {"env": {}, "files": {}}
        for name in (*cls.CALLER_ENV, *cls.CALLER_FILES):
            os.environ.pop(name, None)
        os.environ.update(given["env"])
        for name, text in given["files"].items():
            fd, path = tempfile.mkstemp(prefix="raydf-credentials-")  # mode 0600
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.environ[name] = path

    def __init__(self, source: Source, options: BackendOptions | None = None) -> None:
        if source.scheme != self.SCHEME:
            raise InvalidURL(f"{source} is not a {self.SCHEME}:// URL")
        self.source = source
        self.options = options or BackendOptions()
        self.requests = 0
        # Credential values passed to pyarrow, scrubbed from every message.
        self._secrets: list[str] = []
        self._fs: pafs.FileSystem | None = None
        self._lock = threading.Lock()
        self._version: str | None = None
        self._files: dict[str, RemoteFile] = {}
        # One open handle per file: a handle costs one metadata request, then each
        # piece is one ranged GET. Handles of object stores hold no connection.
        self._handles: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source}>"

    @abc.abstractmethod
    def _connect(self) -> pafs.FileSystem:
        """Construct the filesystem from options and the environment (no request yet)."""

    def _fs_path(self, key: str) -> str:
        """The filesystem path of ``key`` (a key in the bucket, ``""`` for the bucket)."""
        return f"{self.source.repo_id}/{key}" if key else self.source.repo_id

    def _key(self, fs_path: str) -> str:
        """The inverse of :meth:`_fs_path` for paths a listing returns."""
        return fs_path[len(self.source.repo_id) + 1:]

    @property
    def filesystem(self) -> pafs.FileSystem:
        with self._lock:
            if self._fs is None:
                try:
                    self._fs = self._connect()
                except ConfigError:
                    raise
                except (OSError, ValueError, TypeError) as exc:
                    raise ConfigError(f"cannot set up {self.SCHEME}:// access: "
                                      f"{self._detail(exc)}") from exc
            return self._fs

    # -- Backend protocol ----------------------------------------------------

    def resolve(self) -> str:
        files = self._list()
        lines = sorted(f"{f.repo_path}\0{f.size}\0{mtime}" for f, mtime in files)
        version = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        with self._lock:
            self._version = version
            self._files = {f.repo_path: f for f, _ in files}
        return version

    def list_files(self, commit: str) -> list[RemoteFile]:
        if commit != self._version and self.resolve() != commit:
            raise RevisionNotFound(
                f"{self.source} changed since it was listed (objects were added, removed or "
                "rewritten); run the command again to fetch the current version"
            )
        return sorted(self._files.values(), key=lambda f: f.path)

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        for f in self.list_files(commit):
            if f.repo_path == repo_path:
                return f
        raise EntryNotFound(f"{self.source}: no object {repo_path!r} at this version")

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        handle = self._open(commit, repo_path)
        with self._errors(repo_path):
            data = handle.read_at(len(buffer), start)
        self._count()
        if len(data) != len(buffer):
            raise OriginUnavailable(
                f"{self.source}: asked for {len(buffer)} bytes of {repo_path!r} at {start}, "
                f"got {len(data)}; the object may have been rewritten. Run the command again"
            )
        buffer[:] = data

    def exists(self) -> bool:
        return resolves(self.resolve, (EntryNotFound,))

    def authorize(self, commit: str, files: tuple[RemoteFile, ...]) -> None:
        """A store may let a caller list what it may not read: one ranged read of
        one byte of the first non-empty file makes the store judge the caller's
        credentials before any node's copy is given to it."""
        first = next((f for f in files if f.size), None)
        if first is not None:
            self.read_into(commit, first.repo_path, 0, memoryview(bytearray(1)))

    def close(self) -> None:
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            handle.close()

    # -- internals -----------------------------------------------------------

    def _list(self) -> list[tuple[RemoteFile, int]]:
        """``(file, mtime_ns)`` for the object the URL names, or every object under it."""
        import pyarrow.fs as pafs

        fs = self.filesystem
        prefix = self.source.path.rstrip("/")
        with self._errors(prefix):
            if prefix and not self.source.path.endswith("/"):
                info = fs.get_file_info(self._fs_path(prefix))
                self._count()
                if info.type == pafs.FileType.File:
                    return [(RemoteFile(posixpath.basename(prefix), prefix, info.size),
                             info.mtime_ns or 0)]
                if info.type == pafs.FileType.NotFound:
                    raise FileNotFoundError(prefix)
            infos = fs.get_file_info(pafs.FileSelector(self._fs_path(prefix), recursive=True))
            self._count()
        files = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue  # folders, and the zero-byte "dir/" markers some tools write
            key = self._key(info.path)
            relative = key[len(prefix) + 1:] if prefix else key
            safe_relative_path(relative, origin=str(self.source))
            files.append((RemoteFile(relative, key, info.size), info.mtime_ns or 0))
        if not files:
            raise EntryNotFound(f"{self.source}: the prefix holds no objects; check the bucket "
                                "and the path")
        return files

    def _count(self) -> None:
        # A listing counts as one request, though a large prefix takes one per 1000 keys.
        with self._lock:
            self.requests += 1

    def _open(self, commit: str, repo_path: str) -> Any:
        with self._lock:
            handle = self._handles.get(repo_path)
        if handle is not None:
            return handle
        listed = self.stat(commit, repo_path)
        with self._errors(repo_path):
            handle = self.filesystem.open_input_file(self._fs_path(repo_path))
        self._count()
        size = handle.size()
        if size != listed.size:
            handle.close()
            raise RevisionNotFound(
                f"{self.source}: {repo_path!r} is now {size} bytes, listed as "
                f"{listed.size}; it was rewritten. Run the command again to fetch the current version"
            )
        with self._lock:
            return self._handles.setdefault(repo_path, handle)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate pyarrow's errors for an operation on ``key``."""
        where = dataclasses.replace(self.source, path=key).format()
        try:
            yield
        except HubError:
            raise
        except OSError as exc:
            detail = self._detail(exc)
            if isinstance(exc, FileNotFoundError) or _NOT_FOUND.search(detail):
                raise EntryNotFound(
                    f"{where}: no such object, prefix or bucket; check the bucket and the path"
                ) from exc
            if isinstance(exc, PermissionError) or _DENIED.search(detail):
                raise AccessDenied(f"{where}: access denied ({detail}); {self.AUTH_HINT}") from exc
            raise OriginUnavailable(
                f"{where}: the store did not answer ({detail}); check the endpoint and the "
                "network, then retry") from exc

    def _detail(self, exc: BaseException) -> str:
        """The first line of a pyarrow message, shortened, with credentials scrubbed."""
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text[:_MAX_DETAIL]
