"""Hugging Face Hub: ``hf://[models/|datasets/|spaces/]owner/repo[/path]``.

Examples::

    hf://deepseek-ai/DeepSeek-R1                    a whole model repo
    hf://datasets/HuggingFaceFW/fineweb/sample/10BT  one folder of a dataset

Auth: ``--hf-token`` or ``HF_TOKEN``, sent as ``Authorization: Bearer`` to the
hub endpoint only (``--hf-endpoint`` / ``HF_ENDPOINT``, default
https://huggingface.co); LFS redirects to the CDN never carry it. Revision:
``--hf-revision`` (branch, tag or commit; default ``main``), resolved once to a
commit via ``/api/{type}/{repo}/revision/{rev}``; the listing comes from the
paginated tree API at that commit, so sizes and digests are exact (Dragonfly's
listing is not). Digests: LFS files carry their sha256, regular files their
git blob sha1; both are verified.

Against Xet storage and rate limits, as ``huggingface_hub`` does: size and
digest come from the listing (and the hub's own redirect answer), never from
a HEAD on the CDN or Xet bridge, whose presigned urls are for GET only. Each
LFS file costs one ``HEAD /resolve/`` on the hub, which answers with a
redirect that is not followed but remembered and reused for every piece of
the file until it expires (or the bridge answers 403); a regular file is read
from ``/resolve/`` directly, one request per piece. A renamed repo's 307 is
followed on the hub. The transport keeps the hub's announced budget.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar
from urllib.parse import quote, urljoin

import httpx

from raydf.backends.base import BackendOptions, RemoteFile, resolves, under_source
from raydf.backends.ratelimit import RetryPolicy
from raydf.backends.transport import (
    STALL_TIMEOUT_S,
    HubTransport,
    expires_at,
    expiring,
)
from raydf.errors import (
    AccessDenied,
    AuthError,
    EntryNotFound,
    GatedRepoError,
    HubError,
    InvalidURL,
    RepoNotFound,
    RevisionNotFound,
)
from raydf.uri import Source

__all__ = ["HuggingFaceBackend"]

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
_TOKEN_HINT = "set HF_TOKEN or pass --hf-token"


class HuggingFaceBackend:
    """Reads one Hugging Face repo (or a folder or file in it)."""

    SCHEME: ClassVar[str] = "hf"
    OPTION_PREFIX: ClassVar[str] = "hf"
    ENV_TOKENS: ClassVar[tuple[str, ...]] = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    ENV_ENDPOINT: ClassVar[str] = "HF_ENDPOINT"

    def __init__(
        self, source: Source, options: BackendOptions, *, retry: RetryPolicy = RetryPolicy(),
        stall_timeout: float = STALL_TIMEOUT_S,
    ) -> None:
        if source.scheme != self.SCHEME:
            raise InvalidURL(f"{source} is not an hf:// URL")
        self.source = source
        self.revision = options.revision or DEFAULT_REVISION
        self._repo = f"{source.repo_type}/{source.repo_id}"
        self._http = HubTransport(
            options.endpoint or DEFAULT_ENDPOINT,
            options.token,
            auth_headers=lambda t: {"Authorization": f"Bearer {t}"},
            describe=self._describe,
            retry=retry,
            stall_timeout=stall_timeout,
        )
        self._authenticated = bool(options.token)
        # resolve/<commit>/<path> answers LFS files with a redirect to the CDN or
        # Xet bridge; remembering it (and when it expires) per file saves a hub
        # request per piece. One lock per file: concurrent pieces ask once.
        self._located: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._locate_locks: dict[tuple[str, str], threading.Lock] = {}
        self._locate_lock = threading.Lock()
        self._regular: set[str] = set()  # repo paths the listing shows outside LFS
        self._restricted = True  # until the revision info says public (private/gated)

    def __repr__(self) -> str:
        return f"<HuggingFaceBackend {self.source} @ {self.revision} via {self._http.endpoint}>"

    @property
    def requests(self) -> int:
        return self._http.requests

    @property
    def requests_by_kind(self) -> dict[str, int]:
        """Requests so far by kind: ``api``, ``resolve``, ``content`` (CDN/bridge)."""
        return dict(self._http.requests_by_kind)

    def resolve(self) -> str:
        rev = quote(self.revision, safe="")
        info = self._http.get_json(f"/api/{self._repo}/revision/{rev}")
        sha = info.get("sha") if isinstance(info, dict) else None
        if not isinstance(sha, str) or len(sha) != 40:
            raise HubError(f"{self._http.endpoint} gave no commit for {self.source}@{self.revision}")
        # ModelInfo's ``private`` (bool) and ``gated`` ("auto" | "manual" | False).
        self._restricted = bool(info.get("private")) or bool(info.get("gated"))
        return sha

    @property
    def public(self) -> bool:
        """The revision info said neither private nor gated (False before :meth:`resolve`)."""
        return not self._restricted

    def authorize(self, commit: str, files: tuple[RemoteFile, ...]) -> None:
        """A gated repo lists for anyone; its content needs an approved token. One
        HEAD on the first file's resolve URL (remembered: the seed's first fetch of
        that file reuses it) makes the hub judge this caller's token."""
        if self._restricted and files:
            # stale="" forces the HEAD, for a regular file too (read without one).
            self._locate((commit, files[0].repo_path), stale="")

    def list_files(self, commit: str) -> list[RemoteFile]:
        entries = self._tree(commit)
        prefix = self.source.path
        files = []
        for entry in entries:
            if entry.get("type") != "file":
                continue
            relative = under_source(entry.get("path"), prefix, origin=self._http.endpoint)
            if relative is not None:
                files.append(self._remote_file(entry, relative, entry["path"]))
        if prefix and not files:
            raise EntryNotFound(
                f"{self.source}: no file or folder {prefix!r} in {self.source.repo_id} at "
                f"{self.revision}; check the path"
            )
        return files

    def _remote_file(self, entry: dict[str, Any], relative: str, repo_path: str) -> RemoteFile:
        lfs = entry.get("lfs") or {}
        size = lfs.get("size", entry.get("size"))
        if not isinstance(size, int) or size < 0:
            raise HubError(f"{self._http.endpoint} listed {repo_path!r} with size {size!r}")
        if lfs:
            return RemoteFile(relative, repo_path, size, sha256=str(lfs.get("oid")))
        self._regular.add(repo_path)
        return RemoteFile(relative, repo_path, size, git_sha1=str(entry.get("oid")))

    def _tree(self, commit: str) -> list[dict[str, Any]]:
        url: str | None = f"{self._http.endpoint}/api/{self._repo}/tree/{commit}"
        params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
        entries: list[dict[str, Any]] = []
        while url:
            with self._http.open("GET", url, params=params) as response:
                response.read()
                page = response.json()
                if not isinstance(page, list):
                    raise HubError(f"{self._http.endpoint} sent a malformed tree listing")
                entries.extend(page)
                url = response.links.get("next", {}).get("url")
                params = None  # the next link carries the cursor and the flags
        return entries

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        for entry in self._tree(commit):
            if entry.get("path") == repo_path and entry.get("type") == "file":
                return self._remote_file(entry, repo_path, repo_path)
        raise EntryNotFound(f"{self.source}: no file {repo_path!r} at {commit}")

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        key = (commit, repo_path)
        url = self._locate(key)
        try:
            served = self._http.read_range(url, start, buffer)
        except (AccessDenied, AuthError, EntryNotFound, RepoNotFound):
            # A signed link expired (403/404): forget it and ask the hub again.
            url = self._locate(key, stale=url)
            served = self._http.read_range(url, start, buffer)
        if served != url:  # redirected on the way (a renamed repo): go there next time
            with self._locate_lock:
                self._located[key] = (served, expires_at(served))

    def _locate(self, key: tuple[str, str], *, stale: str | None = None) -> str:
        """Where the bytes of a file are served: the hub itself, or its CDN / Xet bridge.

        A regular file (as listed) is read from ``/resolve/`` itself, with no
        request here. An LFS file costs one ``HEAD`` on the hub, whose redirect
        is read, not followed: the bridge's presigned url is for GET only.
        """
        with self._locate_lock:
            lock = self._locate_locks.setdefault(key, threading.Lock())
        with lock:
            with self._locate_lock:
                found = self._located.get(key)
            if found is not None and found[0] != stale and not expiring(found[1]):
                return found[0]
            commit, repo_path = key
            prefix = "" if self.source.repo_type == "models" else self.source.repo_type + "/"
            url = (f"{self._http.endpoint}/{prefix}{self.source.repo_id}/resolve/{commit}/"
                   f"{quote(repo_path)}")
            if repo_path not in self._regular or stale is not None:
                with self._http.open("HEAD", url, kind="resolve", stay_on_hub=True) as response:
                    location = response.headers.get("Location")
                    url = (urljoin(str(response.url), location) if response.is_redirect
                           and location else str(response.url))
            with self._locate_lock:
                self._located[key] = (url, expires_at(url))
            return url

    def exists(self) -> bool:
        return resolves(self.resolve, (RepoNotFound, RevisionNotFound))

    def close(self) -> None:
        self._http.close()

    def _describe(self, response: httpx.Response) -> HubError:
        """Map the hub's error answer to an error that says what to do."""
        code = response.headers.get("X-Error-Code", "")
        status = response.status_code
        what = f"{self.source}@{self.revision}"
        if code == "GatedRepo":
            return GatedRepoError(
                f"{what} is gated: accept its conditions on the hub with your account, then "
                f"{_TOKEN_HINT}" + (" (this token's user has no access yet)" if status == 403 else "")
            )
        if code == "RevisionNotFound":
            return RevisionNotFound(
                f"{self.source} has no revision {self.revision!r}; pass an existing branch, tag "
                "or commit with --hf-revision"
            )
        if code == "EntryNotFound":
            return EntryNotFound(f"{what}: file not found ({response.url.path})")
        if status == 401 and self._authenticated and code != "RepoNotFound":
            return AuthError(f"{what}: the hub rejected the token (HTTP 401); check HF_TOKEN "
                             "or --hf-token")
        if code == "RepoNotFound" or status in (401, 404):
            hint = ("check the name and that your token may read it" if self._authenticated
                    else f"check the name, or if it is private {_TOKEN_HINT}")
            return RepoNotFound(f"{what}: repository not found; {hint}")
        if status == 403:
            return AccessDenied(f"{what}: access denied (HTTP 403); use a token that may read it")
        return HubError(f"{what}: HTTP {status} from {self._http.endpoint}")
