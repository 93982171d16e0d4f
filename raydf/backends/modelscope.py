"""ModelScope: ``modelscope://[models/|datasets/]owner/repo[/path]``.

Examples::

    modelscope://Qwen/Qwen2.5-7B-Instruct            a whole model repo
    modelscope://datasets/modelscope/gsm8k/main      one folder of a dataset

Auth: ``--ms-token`` or ``MODELSCOPE_API_TOKEN``, sent as ``Authorization:
Bearer`` and as the ``m_session_id`` cookie, to the hub endpoint only
(``--ms-endpoint`` / ``MODELSCOPE_ENDPOINT``, default https://modelscope.cn);
a redirect to object storage never carries it. Revision: ``--ms-revision``
(branch, tag or commit; default ``master``), resolved once to a commit.
Every answer comes in the ``{Code, Data, Message, Success}`` envelope; the
listing's ``Sha256`` is verified for every file (Dragonfly ignores it), and a
model listing cut at the server's 3000-entry cap is walked per directory.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from raydf.backends.base import BackendOptions, RemoteFile, resolves, under_source
from raydf.backends.transport import HubTransport, RetryPolicy
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
DATASET_PAGE = 200
_TOKEN_HINT = "set MODELSCOPE_API_TOKEN or pass --ms-token"
_COMMIT = re.compile(r"[0-9a-f]{40}\Z")


class ModelScopeBackend:
    """Reads one ModelScope model or dataset (or a folder or file in it)."""

    SCHEME: ClassVar[str] = "modelscope"
    OPTION_PREFIX: ClassVar[str] = "ms"
    ENV_TOKENS: ClassVar[tuple[str, ...]] = ("MODELSCOPE_API_TOKEN",)
    ENV_ENDPOINT: ClassVar[str] = "MODELSCOPE_ENDPOINT"

    def __init__(
        self, source: Source, options: BackendOptions, *, retry: RetryPolicy = RetryPolicy()
    ) -> None:
        if source.scheme != self.SCHEME:
            raise InvalidURL(f"{source} is not a modelscope:// URL")
        self.source = source
        self.revision = options.revision or DEFAULT_REVISION
        self._base = f"/api/v1/{source.repo_type}/{source.repo_id}"
        self._dataset = source.repo_type == "datasets"
        self._authenticated = bool(options.token)
        self._http = HubTransport(
            options.endpoint or DEFAULT_ENDPOINT,
            options.token,
            auth_headers=lambda t: {"Authorization": f"Bearer {t}", "Cookie": f"m_session_id={t}"},
            describe=self._describe,
            retry=retry,
        )

    def __repr__(self) -> str:
        return f"<ModelScopeBackend {self.source} @ {self.revision} via {self._http.endpoint}>"

    @property
    def requests(self) -> int:
        return self._http.requests

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
            # Datasets have no revisions API; a listing names its commit per file.
            files = self._dataset_page(self.revision, 1, 1, root=None)
            commit = files[0].get("Revision") if files else None
            return commit if isinstance(commit, str) and commit else self.revision
        data = self._data(f"{self._base}/revisions")
        revision_map = (data or {}).get("RevisionMap") or {}
        for kind in ("Branches", "Tags"):
            for entry in revision_map.get(kind) or []:
                if entry.get("Revision") == self.revision and entry.get("CommitId"):
                    return str(entry["CommitId"])
        if _COMMIT.match(self.revision):
            return self.revision
        raise RevisionNotFound(
            f"{self.source} has no revision {self.revision!r}; pass an existing branch, tag or "
            "commit with --ms-revision"
        )

    def list_files(self, commit: str) -> list[RemoteFile]:
        entries = self._dataset_files(commit) if self._dataset else self._model_files(commit)
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
            files.append(RemoteFile(relative, str(repo_path), size, sha256=sha))
        if prefix and not files:
            raise EntryNotFound(f"{self.source}: no file or folder {prefix!r} at {self.revision}")
        return files

    def _model_files(self, commit: str) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        roots: list[str | None] = [None]
        recursive = True
        while roots:
            next_roots: list[str | None] = []
            for root in roots:
                listed = self._model_page(commit, root, recursive)
                for entry in listed:
                    found.setdefault(str(entry.get("Path")), entry)
                if len(listed) >= FILES_LIMIT:
                    # Cut at the cap: list this level alone and walk its folders.
                    shallow = listed if not recursive else self._model_page(commit, root, False)
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

    def _model_page(self, commit: str, root: str | None, recursive: bool) -> list[dict[str, Any]]:
        params = {"Revision": commit, "Recursive": str(recursive)}
        if root:
            params["Root"] = root
        return _files_of(self._data(f"{self._base}/repo/files", params))

    def _dataset_files(self, commit: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        page = 1
        while True:
            files = self._dataset_page(commit, page, DATASET_PAGE, root=None)
            entries.extend(files)
            if len(files) < DATASET_PAGE:
                return entries
            page += 1

    def _dataset_page(
        self, revision: str, page: int, size: int, root: str | None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"Revision": revision, "Recursive": "True",
                                  "PageNumber": page, "PageSize": size}
        if root:
            params["Root"] = root
        return _files_of(self._data(f"{self._base}/repo/tree", params))

    def stat(self, commit: str, repo_path: str) -> RemoteFile:
        for f in self.list_files(commit):
            if f.repo_path == repo_path:
                return f
        raise EntryNotFound(f"{self.source}: no file {repo_path!r} at {commit}")

    def read_into(self, commit: str, repo_path: str, start: int, buffer: memoryview) -> None:
        self._http.read_range(
            f"{self._base}/repo?Revision={quote(commit, safe='')}&FilePath={quote(repo_path, safe='')}",
            start,
            buffer,
        )

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
