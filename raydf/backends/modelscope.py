"""ModelScope: ``modelscope://[models/|datasets/]owner/repo[/path]``.

Examples::

    modelscope://Qwen/Qwen2.5-7B-Instruct            a whole model repo
    modelscope://datasets/modelscope/gsm8k/main      one folder of a dataset

Auth: ``--ms-token`` or ``MODELSCOPE_API_TOKEN``, sent as ``Authorization:
Bearer`` and as the ``m_session_id`` cookie, to the hub endpoint only
(``--ms-endpoint`` / ``MODELSCOPE_ENDPOINT``, default https://modelscope.cn);
a redirect to object storage never carries it. Revision: ``--ms-revision``
(branch, tag or commit; default ``master``).

As the official client (modelscope 1.40.2 / modelscope_hub 0.5.1) reads the
hub: the revision is sent as ``Revision`` exactly as given (a branch or tag
name, or a commit id), on the listing and on every download; the commit it
names is looked up once in ``/revisions`` (a branch's or tag's ``CommitId``;
a commit id, full or a unique prefix, stands for itself) and is what the
report and the cache are keyed by. A dataset has no revisions API: its commit
is the ``CommitId`` of its tree entries (their ``Revision`` is the revision
asked for). Datasets are listed by ``owner/name`` (``/api/v1/datasets/{o}/
{n}/repo/tree``, as 1.40.2 does; only the legacy 1.37 client used numeric
ids), in pages of 100 (the server's cap), until ``TotalCount`` entries came.
Every answer comes in the ``{Code, Data, Message, Success}`` envelope; the
listing's ``Sha256`` is verified for every file (Dragonfly ignores it), and a
model listing cut at the server's 3000-entry cap is walked per directory.
Large files redirect to object storage: that 302 is read once per file with
a ``HEAD`` (as the official client probes it) and its target reused for every
piece until it expires or answers 403, so hub requests grow with files, not
pieces.
"""

from __future__ import annotations

import re
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
    HubError,
    InvalidURL,
    RepoNotFound,
    RevisionNotFound,
)
from raydf.uri import Source

__all__ = ["ModelScopeBackend"]

DEFAULT_ENDPOINT = "https://modelscope.cn"
DEFAULT_REVISION = "master"
FILES_LIMIT = 3000  # the server cuts a models listing here without saying so
DATASET_PAGE = 100  # the server caps dataset tree pages here, whatever PageSize says
_TOKEN_HINT = "set MODELSCOPE_API_TOKEN or pass --ms-token"
_COMMIT = re.compile(r"[0-9a-f]{40}\Z")
_SHORT_COMMIT = re.compile(r"[0-9a-f]{7,40}\Z")


class ModelScopeBackend:
    """Reads one ModelScope model or dataset (or a folder or file in it)."""

    SCHEME: ClassVar[str] = "modelscope"
    OPTION_PREFIX: ClassVar[str] = "ms"
    ENV_TOKENS: ClassVar[tuple[str, ...]] = ("MODELSCOPE_API_TOKEN",)
    ENV_ENDPOINT: ClassVar[str] = "MODELSCOPE_ENDPOINT"

    def __init__(
        self, source: Source, options: BackendOptions, *, retry: RetryPolicy = RetryPolicy(),
        stall_timeout: float = STALL_TIMEOUT_S,
    ) -> None:
        if source.scheme != self.SCHEME:
            raise InvalidURL(f"{source} is not a modelscope:// URL")
        self.source = source
        self.revision = options.revision or DEFAULT_REVISION
        self._base = f"/api/v1/{source.repo_type}/{source.repo_id}"
        self._dataset = source.repo_type == "datasets"
        self._authenticated = bool(options.token)
        self.public = False  # until the repo info (see authorize) says neither private nor gated
        self._http = HubTransport(
            options.endpoint or DEFAULT_ENDPOINT,
            options.token,
            auth_headers=lambda t: {"Authorization": f"Bearer {t}", "Cookie": f"m_session_id={t}"},
            describe=self._describe,
            retry=retry,
            stall_timeout=stall_timeout,
        )
        # Where each file's bytes are served (the hub, or object storage behind
        # its 302) and until when; one lock per file so concurrent pieces ask once.
        self._located: dict[str, tuple[str, float | None]] = {}
        self._locate_locks: dict[str, threading.Lock] = {}
        self._locate_lock = threading.Lock()
        self._large: set[str] = set()  # repo paths the listing marks IsLFS

    def __repr__(self) -> str:
        return f"<ModelScopeBackend {self.source} @ {self.revision} via {self._http.endpoint}>"

    @property
    def requests(self) -> int:
        return self._http.requests

    @property
    def requests_by_kind(self) -> dict[str, int]:
        """Requests so far by kind: ``api``, ``resolve`` (``/repo``), ``content`` (storage)."""
        return dict(self._http.requests_by_kind)

    def _data(self, path: str, params: dict[str, Any] | None = None) -> Any:
        body = self._http.get_json(path, params)
        if not isinstance(body, dict) or body.get("Code") not in (200, "200") or body.get(
            "Success"
        ) is False:
            message = body.get("Message") if isinstance(body, dict) else None
            raise HubError(f"{self._http.endpoint} answered {path} with {message or body!r}")
        return body.get("Data")

    def resolve(self) -> str:
        if self._dataset:
            # Datasets have no revisions API; a listing names its commit per file
            # as CommitId (Revision is the revision that was asked for).
            files, _ = self._dataset_page(self.revision, 1, 1, root=None)
            for name in ("CommitId", "Revision"):
                commit = files[0].get(name) if files else None
                if isinstance(commit, str) and _COMMIT.match(commit):
                    return commit
            return self.revision
        data = self._data(f"{self._base}/revisions")
        revision_map = (data or {}).get("RevisionMap") or {}
        named = [e for kind in ("Branches", "Tags") for e in revision_map.get(kind) or []
                 if isinstance(e, dict)]
        for entry in named:
            if entry.get("Revision") == self.revision and entry.get("CommitId"):
                return str(entry["CommitId"])
        if _COMMIT.match(self.revision):
            return self.revision
        if _SHORT_COMMIT.match(self.revision):
            # A short commit id (as raydf prints them) names the one commit it starts.
            commits = {str(e["CommitId"]) for e in named
                       if str(e.get("CommitId") or "").startswith(self.revision)}
            if len(commits) == 1:
                return commits.pop()
        raise RevisionNotFound(
            f"{self.source} has no revision {self.revision!r}; pass an existing branch, tag or "
            "commit with --ms-revision"
        )

    def list_files(self, commit: str) -> list[RemoteFile]:
        # The revision goes out as given, as the official client sends it; ``commit``
        # is what it named when resolved (the report's and the cache's key).
        revision = self.revision
        entries = self._dataset_files(revision) if self._dataset else self._model_files(revision)
        prefix = self.source.path
        files = []
        for entry in entries:
            if entry.get("Type") != "blob":
                continue
            repo_path = entry.get("Path")
            relative = under_source(repo_path, prefix, origin=self._http.endpoint)
            if relative is None:
                continue
            size = entry.get("Size")
            if not isinstance(size, int) or size < 0:
                raise HubError(f"{self._http.endpoint} listed {repo_path!r} with size {size!r}")
            sha = entry.get("Sha256") or None
            if entry.get("IsLFS"):
                self._large.add(str(repo_path))
            files.append(RemoteFile(relative, str(repo_path), size, sha256=sha))
        if prefix and not files:
            raise EntryNotFound(f"{self.source}: no file or folder {prefix!r} at {self.revision}")
        return files

    def _model_files(self, revision: str) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        roots: list[str | None] = [None]
        recursive = True
        while roots:
            next_roots: list[str | None] = []
            for root in roots:
                listed = self._model_page(revision, root, recursive)
                for entry in listed:
                    found.setdefault(str(entry.get("Path")), entry)
                if len(listed) >= FILES_LIMIT:
                    # Cut at the cap: list this level alone and walk its folders.
                    shallow = listed if not recursive else self._model_page(revision, root, False)
                    if len(shallow) >= FILES_LIMIT:
                        raise HubError(
                            f"{self.source}: ModelScope lists at most {FILES_LIMIT} entries and "
                            f"folder {root or '/'!r} holds more, so its listing is incomplete; "
                            "refusing to deliver a partial repo"
                        )
                    for entry in shallow:
                        found.setdefault(str(entry.get("Path")), entry)
                    next_roots.extend(
                        str(e["Path"]) for e in shallow if e.get("Type") == "tree"
                    )
            roots, recursive = next_roots, True
        return list(found.values())

    def _model_page(self, revision: str, root: str | None, recursive: bool) -> list[dict[str, Any]]:
        params = {"Revision": revision, "Recursive": str(recursive)}
        if root:
            params["Root"] = root
        return _files_of(self._data(f"{self._base}/repo/files", params))

    def _dataset_files(self, revision: str) -> list[dict[str, Any]]:
        """Every page: until ``TotalCount`` entries came, else until a short page.

        Pages are asked for at the server's cap (100), so a full page never
        looks like the last one (1.40.2 asks for 200 and stops at a shorter one).
        """
        entries: list[dict[str, Any]] = []
        page = 1
        while True:
            files, total = self._dataset_page(revision, page, DATASET_PAGE, root=None)
            entries.extend(files)
            if not files or (total is not None and len(entries) >= total) or (
                    total is None and len(files) < DATASET_PAGE):
                return entries
            page += 1

    def _dataset_page(
        self, revision: str, page: int, size: int, root: str | None
    ) -> tuple[list[dict[str, Any]], int | None]:
        params: dict[str, Any] = {"Revision": revision, "Recursive": "True",
                                  "PageNumber": page, "PageSize": size}
        if root:
            params["Root"] = root
        data = self._data(f"{self._base}/repo/tree", params)
        total = data.get("TotalCount") if isinstance(data, dict) else None
        return _files_of(data), total if isinstance(total, int) else None

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        for f in self.list_files(commit):
            if f.repo_path == repo_path:
                return f
        raise EntryNotFound(f"{self.source}: no file {repo_path!r} at {commit}")

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        url = self._locate(repo_path)
        try:
            self._http.read_range(url, start, buffer)
        except (AccessDenied, AuthError, EntryNotFound, RepoNotFound):
            if url.startswith(self._http.endpoint + "/"):
                raise  # the hub itself refused: nothing to refresh
            # The signed storage link expired (403/404): ask the hub again.
            self._http.read_range(self._locate(repo_path, stale=url), start, buffer)

    def _locate(self, repo_path: str, *, stale: str | None = None) -> str:
        """The hub's ``/repo`` url, or for a large file where its 302 points.

        The redirect is read with a ``HEAD`` that is not followed (as the
        official client probes it) and reused for every piece of the file.
        """
        with self._locate_lock:
            lock = self._locate_locks.setdefault(repo_path, threading.Lock())
        with lock:
            with self._locate_lock:
                found = self._located.get(repo_path)
            if found is not None and found[0] != stale and not expiring(found[1]):
                return found[0]
            url = (f"{self._http.endpoint}{self._base}/repo?Revision="
                   f"{quote(self.revision, safe='')}&FilePath={quote(repo_path, safe='')}")
            if repo_path in self._large or stale is not None:
                with self._http.open("HEAD", url, kind="resolve", stay_on_hub=True) as response:
                    location = response.headers.get("Location")
                    if response.is_redirect and location:
                        url = urljoin(str(response.url), location)
            with self._locate_lock:
                self._located[repo_path] = (url, expires_at(url))
            return url

    def authorize(self, commit: str, files: tuple[RemoteFile, ...]) -> None:
        """A gated repo lists for anyone; its content needs approval. The repo info
        says whether it is private or gated (one request); if so, one byte of the
        first non-empty file makes the hub judge this caller's token."""
        first = next((f for f in files if f.size), None)
        if first is None:
            return
        info = self._data(self._base) or {}
        if isinstance(info, dict) and (info.get("Private") or info.get("Gated")):
            self.read_into(commit, first.repo_path, 0, memoryview(bytearray(1)))
        else:
            self.public = isinstance(info, dict)

    def exists(self) -> bool:
        return resolves(self.resolve, (RepoNotFound, RevisionNotFound))

    def close(self) -> None:
        self._http.close()

    def _describe(self, response: httpx.Response) -> HubError:
        status = response.status_code
        try:
            message = response.json().get("Message") or ""
        except ValueError:
            message = ""
        what = f"{self.source}@{self.revision}"
        detail = f" ({message})" if message else ""
        if status == 401:
            if self._authenticated:
                return AuthError(f"{what}: ModelScope rejected the token{detail}; check "
                                 "MODELSCOPE_API_TOKEN or --ms-token")
            return RepoNotFound(f"{what}: not found or private{detail}; {_TOKEN_HINT}")
        if status == 403:
            return AccessDenied(f"{what}: access denied{detail}; use a token that may read it")
        if status == 404:
            if "revision" in message.lower():
                return RevisionNotFound(f"{what}: no such revision{detail}; check --ms-revision")
            return RepoNotFound(f"{what}: not found{detail}; check the name, or if it is "
                                f"private {_TOKEN_HINT}")
        return HubError(f"{what}: HTTP {status} from {self._http.endpoint}{detail}")


def _files_of(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        files = data.get("Files") or data.get("files") or []
        return files if isinstance(files, list) else []
    return []
