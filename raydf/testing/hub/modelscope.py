"""ModelScope routes, as ``modelscope`` / ``modelscope_hub`` call them (all under ``/api/v1``).

* ``GET {models,datasets}/{owner}/{name}``: repo info (datasets carry the numeric
  ``Id`` that the legacy dataset API puts in its urls).
* ``GET {models,datasets}/{owner}/{name}/revisions``: ``RevisionMap.Branches/Tags``.
* ``GET models/{owner}/{name}/repo/files?Revision=&Recursive=&Root=``: the listing,
  cut after ``ms_files_limit`` entries (3000, like the real server).
* ``GET datasets/{owner}/{name}/repo/tree?Revision=&Recursive=&PageNumber=&PageSize=&Root=``
  (also ``datasets/{numeric id}/repo/tree``): the paged listing, ``{"Files",
  "TotalCount"}``; a page holds at most the ``ms_page_cap`` knob's entries
  whatever ``PageSize`` asks. Dataset entries carry the commit as ``CommitId``
  and the revision asked for as ``Revision``; model entries' ``Revision`` is the
  commit.
* ``GET|HEAD {models,datasets}/{owner}/{name}/repo?Revision=&FilePath=``: file bytes,
  ranges honoured; with the ``ms_redirect`` knob an LFS file answers 302 to the
  CDN host (object storage) instead.
* ``Revision`` is a branch, a tag or a commit id (full, or a unique prefix).
* ``GET repos/internalAccelerationInfo``: no intra-cloud region (clients probe it).

Every JSON answer is the envelope ``{"Code", "Data", "Message", "RequestId",
"Success"}``; errors keep it, with ``Code`` equal to the HTTP status. The token is
read from ``Authorization: Bearer`` or the ``m_session_id`` cookie.
"""

from __future__ import annotations

import hashlib
import uuid
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote, unquote

from raydf.testing.hub.cdn import signed_url
from raydf.testing.hub.repos import FileEntry, Repo, Snapshot
from raydf.testing.hub.server import BaseHandler, Reply

_TYPES = ("models", "datasets")


def numeric_id(repo_type: str, repo_id: str) -> int:
    """A stable number standing for a repo, like ModelScope's internal ids."""
    return int(hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:8], 16)


def _arg(query: dict[str, list[str]], name: str, default: str = "") -> str:
    return query.get(name, [default])[0]


class ModelScopeHandler(BaseHandler):
    """The ModelScope API listener."""

    listener = "ms"

    def envelope(self, data: Any, status: int = 200, message: str = "success") -> Reply:
        return self.json_reply({
            "Code": status, "Data": data, "Message": message,
            "RequestId": uuid.uuid4().hex, "Success": status < 400,
        }, status)

    def error(self, status: int, code: str, message: str) -> Reply:
        return self.envelope(None, status, message)

    def token(self) -> str | None:
        bearer = super().token()
        if bearer is not None:
            return bearer
        try:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get("m_session_id")
        except CookieError:
            return None
        return morsel.value if morsel is not None else None

    def quota(self, path: str) -> str:
        return "resolvers" if path.endswith("/repo") else "api"

    def route(self, method: str, path: str, query: dict[str, list[str]]) -> Reply:
        segs = [unquote(s) for s in path.split("/")[1:]]
        if segs[:2] != ["api", "v1"] or method not in ("GET", "HEAD"):
            return self.error(404, "", f"Not Found: {method} {path}")
        segs = segs[2:]
        if segs == ["repos", "internalAccelerationInfo"]:
            return self.envelope({"InternalRegionQueryAddress": ""})
        if len(segs) == 4 and segs[0] == "datasets" and segs[1].isdigit() and segs[2:] == ["repo", "tree"]:
            by_id = {numeric_id("datasets", i): i for i in self.state.store.repo_ids("datasets")}
            repo_id = by_id.get(int(segs[1]))
            if repo_id is None:
                return self.error(404, "", f"dataset {segs[1]} does not exist")
            return self._dispatch("datasets", repo_id, ["repo", "tree"], query)
        if len(segs) < 3 or segs[0] not in _TYPES:
            return self.error(404, "", f"Not Found: {path}")
        return self._dispatch(segs[0], f"{segs[1]}/{segs[2]}", segs[3:], query)

    def _dispatch(self, repo_type: str, repo_id: str, rest: list[str], query: dict[str, list[str]]) -> Reply:
        content = rest == ["repo"]
        rev = _arg(query, "Revision", "master") if rest and rest != ["revisions"] else "master"
        opened = self._open(repo_type, repo_id, rev, content)
        if isinstance(opened, Reply):
            return opened
        repo, snap = opened
        if not rest:
            return self.envelope(self._info(repo, snap))
        if rest == ["revisions"]:
            return self.envelope({"RevisionMap": self._revisions(repo)})
        if content:
            return self._file(repo, snap, _arg(query, "FilePath"))
        listing = {"models": ["repo", "files"], "datasets": ["repo", "tree"]}[repo_type]
        if rest == listing:
            return self._listing(repo, snap, query)
        return self.error(404, "", f"Not Found: /{'/'.join(rest)}")

    def _open(self, repo_type: str, repo_id: str, rev: str, content: bool) -> tuple[Repo, Snapshot] | Reply:
        token = self.token()
        repo = self.state.store.get(repo_type, repo_id)
        why = self.state.access(repo, token, content)
        if why == "bad_token":
            return self.error(401, "", "Invalid access token, please log in again")
        if why == "not_found":
            return self.error(404, "", f"{repo_type[:-1]} {repo_id} does not exist")
        if why == "private":
            return self.error(401, "", f"{repo_id} is private: log in to access it")
        if why == "gated":
            status = 403 if token is not None else 401
            return self.error(status, "", f"{repo_id} is gated: apply for access first")
        assert repo is not None
        snap = self.state.store.resolve(repo, rev)
        if snap is None:
            return self.error(404, "", f"Revision {rev} of {repo_id} does not exist")
        return repo, snap

    def _info(self, repo: Repo, snap: Snapshot) -> dict[str, Any]:
        info: dict[str, Any] = {
            "Id": numeric_id(repo.repo_type, repo.repo_id), "Name": repo.name,
            "ChineseName": "", "Description": "", "CreatedTime": snap.mtime,
            "LastUpdatedTime": snap.mtime, "Visibility": 1 if repo.private else 5,
            "Private": repo.private, "Gated": bool(repo.gated), "Stars": 0, "Downloads": 0,
        }
        if repo.repo_type == "datasets":
            info.update(Namespace=repo.owner, Type=0)
        else:
            info["Path"] = repo.owner
        return info

    def _revisions(self, repo: Repo) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {"Branches": [], "Tags": []}
        for name, (kind, folder) in sorted(self.state.store.revisions(repo).items()):
            if name == "main":  # Hugging Face's name for the default branch
                continue
            snap = self.state.store.snapshot(folder)
            group = "Branches" if kind == "branch" else "Tags"
            out[group].append({"Revision": name, "CommitId": snap.commit, "CreatedAt": snap.mtime})
        return out

    def _listing(self, repo: Repo, snap: Snapshot, query: dict[str, list[str]]) -> Reply:
        root = _arg(query, "Root").strip("/")
        if not snap.is_dir(root):
            return self.error(404, "", f"{root} does not exist in {repo.repo_id}")
        recursive = _arg(query, "Recursive", "false").lower() in ("1", "true")
        items = snap.entries(root, recursive)
        if repo.repo_type == "datasets":
            try:
                number, size = int(_arg(query, "PageNumber", "1")), int(_arg(query, "PageSize", "100"))
            except ValueError:
                return self.error(400, "", "PageNumber and PageSize must be integers")
            size = min(size, self.state.knobs.ms_page_cap or size)
            page = items[(number - 1) * size : number * size]
            rev = _arg(query, "Revision", "master")
            return self.envelope({
                "Files": [self._entry(p, f, snap, asked=rev) for p, f in page],
                "TotalCount": len(items),
            })
        # the real repo/files silently stops at 3000 entries
        items = items[: self.state.ms_files_limit]
        return self.envelope({"Files": [self._entry(p, f, snap) for p, f in items]})

    @staticmethod
    def _entry(path: str, f: FileEntry | None, snap: Snapshot, asked: str | None = None) -> dict[str, Any]:
        """One listing entry; ``asked`` (datasets): the revision asked for, the commit
        then goes in ``CommitId`` as the dataset tree gives it."""
        entry: dict[str, Any] = {
            "Name": path.rsplit("/", 1)[-1], "Path": path,
            "CommitMessage": "Emulated commit", "CommittedDate": snap.mtime,
            "CommitterName": "raydf-hub-emulator", "InCheck": False,
        }
        if asked is None:
            entry["Revision"] = snap.commit
        else:
            entry.update(Revision=asked, CommitId=snap.commit)
        if f is None:
            oid = hashlib.sha1(f"{snap.commit}:{path}".encode()).hexdigest()
            entry.update(Type="tree", Size=0, Sha256="", IsLFS=False, Id=oid, Mode="40000")
        else:
            entry.update(Type="blob", Size=f.size, Sha256=f.sha256, IsLFS=f.lfs, Id=f.blob_id, Mode="100644")
        return entry

    def _file(self, repo: Repo, snap: Snapshot, path: str) -> Reply:
        if not path:
            return self.error(400, "", "FilePath is required")
        entry = snap.by_path.get(path.lstrip("/"))
        if entry is None:
            return self.error(404, "", f"file {path} does not exist in {repo.repo_id}")
        key = f"ms:{repo.repo_type}/{repo.repo_id}:{entry.path}"
        if entry.lfs and self.state.knobs.ms_redirect:
            location = signed_url(self.state, entry, key, f"ms:{repo.repo_type}/{repo.repo_id}")
            kind = "download" if self.command == "GET" else "api"
            return Reply(302, [("Location", location)], kind=kind, file_key=key)
        name = entry.path.rsplit("/", 1)[-1]
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}"),
            ("ETag", f'"{entry.sha256}"'),
        ]
        return self.file_reply(entry, key, headers)
