"""Plain web files: ``http://host[:port]/path`` and ``https://...``.

Examples::

    https://example.com/models/model.safetensors
    http://127.0.0.1:8080/files/config.json?version=3

Auth: none (a token never goes to an arbitrary host; credentials inside the URL
are refused by the parser). One URL is one file; its "commit" is the server's
``ETag`` (or ``Last-Modified``), so a file that changes between pieces is caught
by the range check. Web servers publish no digest, so files are verified per
piece only.
"""

from __future__ import annotations

from typing import ClassVar

import httpx

from raydf.backends.base import BackendOptions, RemoteFile, resolves
from raydf.backends.ratelimit import RetryPolicy
from raydf.backends.transport import HubTransport
from raydf.errors import AccessDenied, EntryNotFound, HubError, InvalidURL
from raydf.uri import Source

__all__ = ["HttpBackend"]


class HttpBackend:
    """Reads one file from a web server with ranged GETs."""

    SCHEME: ClassVar[str] = "https"
    SCHEMES: ClassVar[tuple[str, ...]] = ("http", "https")

    def __init__(
        self, source: Source, options: BackendOptions, *, retry: RetryPolicy = RetryPolicy()
    ) -> None:
        if source.scheme not in self.SCHEMES:
            raise InvalidURL(f"{source} is not an http(s):// URL")
        self.source = source
        self._url = source.format()
        self._http = HubTransport(
            f"{source.scheme}://{source.repo_id}",
            None,
            auth_headers=lambda t: {},
            describe=self._describe,
            retry=retry,
        )
        self._size: int | None = None

    def __repr__(self) -> str:
        return f"<HttpBackend {self._url}>"

    @property
    def requests(self) -> int:
        return self._http.requests

    def resolve(self) -> str:
        with self._http.open("HEAD", self._url, headers={"Accept-Encoding": "identity"}) as r:
            length = r.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise HubError(f"{self._url}: the server gave no Content-Length; cannot split it")
            self._size = int(length)
            return r.headers.get("ETag") or r.headers.get("Last-Modified") or ""

    def list_files(self, commit: str) -> list[RemoteFile]:
        if self._size is None:
            self.resolve()
        assert self._size is not None
        return [RemoteFile(self.source.name, self.source.path, self._size)]

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        return self.list_files(commit)[0]

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        self._http.read_range(self._url, start, buffer, total=self._size, kind="content")

    def exists(self) -> bool:
        return resolves(self.resolve, (EntryNotFound,))

    def close(self) -> None:
        self._http.close()

    def _describe(self, response: httpx.Response) -> HubError:
        if response.status_code == 404:
            return EntryNotFound(f"{self._url}: not found (HTTP 404)")
        if response.status_code in (401, 403):
            return AccessDenied(f"{self._url}: access denied (HTTP {response.status_code})")
        return HubError(f"{self._url}: HTTP {response.status_code}")
