"""Hugging Face routes, as ``huggingface_hub`` (2.x and 0.36) calls them.

* ``GET /api/{models,datasets,spaces}/{owner}/{name}[/revision/{rev}][?blobs=true]``: repo info.
* ``GET /api/{type}s/{owner}/{name}/tree/{rev}[/{path}]?recursive=&expand=``: paged
  listing (``tree_page_size`` entries, next page in an absolute ``Link`` header).
* ``GET /api/{type}s/{owner}/{name}/refs``: branches and tags.
* ``HEAD|GET /[datasets/|spaces/]{owner}/{name}/resolve/{rev}/{path}``: a regular
  file answers 200 (``ETag`` = git blob sha1, ranges honoured); an LFS file
  answers 302 to the CDN with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``;
  with the ``xet`` knob, 302 to the Xet bridge with ``X-Xet-Hash`` and a
  ``xet-auth`` link as well (a HEAD on the bridge is refused, as on the Hub).
* A renamed repo (``moved_to`` in its .hub.json) answers every url under its
  old name with 307 and a relative ``Location`` under the new one.
* ``GET /api/whoami-v2``; ``GET /api/agent-harnesses`` answers 404 (2.x asks).

Errors carry ``X-Error-Code`` (RepoNotFound, GatedRepo, RevisionNotFound,
EntryNotFound) and ``X-Error-Message``, and a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

from raydf.testing.hub.cdn import signed_url, xet_hash
from raydf.testing.hub.knobs import RateLimiter
from raydf.testing.hub.repos import REPO_TYPES, FileEntry, Repo, Snapshot
from raydf.testing.hub.server import BaseHandler, Reply

_CODES = frozenset({"RepoNotFound", "GatedRepo", "RevisionNotFound", "EntryNotFound"})
BAD_TOKEN = "Invalid credentials in Authorization header"


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _is_true(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("1", "true")


class HfHandler(BaseHandler):
    """The Hugging Face API listener."""

    listener = "hf"

    def error(self, status: int, code: str, message: str) -> Reply:
        headers = [("X-Error-Message", message)]
        if code in _CODES:
            headers.append(("X-Error-Code", code))
        return self.json_reply({"error": message}, status, headers)

    def rate_limited(self, wait: int, limiter: RateLimiter) -> Reply:
        resource = "resolvers" if "/resolve/" in self.path else "api"
        reply = self.error(429, "", f"You have exceeded the rate limit for action '{resource}'.")
        reply.headers += [
            ("Retry-After", str(wait)),
            ("RateLimit", f'"{resource}";r=0;t={wait}'),
            ("RateLimit-Policy", f'"fixed window";"{resource}";q={limiter.limit};w={round(limiter.window)}'),
        ]
        return reply

    def quota(self, path: str) -> str:
        return "resolvers" if "/resolve/" in path else "api"

    def route(self, method: str, path: str, query: dict[str, list[str]]) -> Reply:
        if method not in ("GET", "HEAD"):
            return self.error(405, "", f"{method} is not supported by the emulator")
        segs = [unquote(s) for s in path.split("/")[1:]]
        if segs[:1] == ["api"]:
            return self._api(segs[1:], query)
        repo_type = "models"
        if segs[:1] in (["datasets"], ["spaces"]):
            repo_type, segs = segs[0], segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve":
            return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
        return self.error(404, "", f"Not Found: {path}")

    # -- access --------------------------------------------------------------
    def _open(self, repo_type: str, repo_id: str, rev: str, content: bool) -> tuple[Repo, Snapshot] | Reply:
        """The repo and snapshot, or the error reply a real hub would give."""
        token = self.token()
        repo = self.state.store.get(repo_type, repo_id)
        moved = self.state.store.moved(repo_type, repo_id) if repo is None else None
        if moved is not None:
            # As the Hub answers a renamed repo: 307, relative, same route under the new name.
            location = self.path.replace(f"/{repo_id}/", f"/{moved}/", 1)
            if location == self.path:
                location = self.path.replace(f"/{repo_id}", f"/{moved}", 1)
            return Reply(307, [("Location", location)])
        why = self.state.access(repo, token, content)
        if why == "bad_token":
            return self.error(401, "", BAD_TOKEN)
        if why in ("not_found", "private"):
            status = 404 if token is not None else 401
            return self.error(status, "RepoNotFound", "Repository not found")
        if why == "gated":
            status = 403 if token is not None else 401
            msg = f"Access to model {repo_id} is restricted and you are not in the authorized list."
            return self.error(status, "GatedRepo", msg)
        assert repo is not None
        snap = self.state.store.resolve(repo, rev)
        if snap is None:
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, snap

    # -- /api ------------------------------------------------------------------
    def _api(self, segs: list[str], query: dict[str, list[str]]) -> Reply:
        if segs == ["agent-harnesses"]:
            return self.error(404, "", "Not Found")
        if segs == ["whoami-v2"]:
            user = self.state.tokens.get(self.token() or "")
            if user is None:
                return self.error(401, "", BAD_TOKEN)
            return self.json_reply({"type": "user", "name": user, "auth": {"type": "access_token"}})
        if len(segs) < 3 or segs[0] not in REPO_TYPES:
            return self.error(404, "", "Not Found")
        repo_type, repo_id, rest = segs[0], f"{segs[1]}/{segs[2]}", segs[3:]
        if rest == [] or (len(rest) == 2 and rest[0] == "revision"):
            opened = self._open(repo_type, repo_id, rest[1] if rest else "main", content=False)
            if isinstance(opened, Reply):
                return opened
            return self.json_reply(self._info(*opened, blobs=_is_true(query, "blobs")))
        if len(rest) >= 2 and rest[0] == "tree":
            opened = self._open(repo_type, repo_id, rest[1], content=False)
            if isinstance(opened, Reply):
                return opened
            return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]).strip("/"), *opened, query)
        if rest == ["refs"]:
            opened = self._open(repo_type, repo_id, "main", content=False)
            if isinstance(opened, Reply):
                return opened
            return self.json_reply(self._refs(opened[0]))
        return self.error(404, "", "Not Found")

    def _info(self, repo: Repo, snap: Snapshot, blobs: bool) -> dict[str, Any]:
        siblings = []
        for f in snap.files:
            sibling: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sibling.update(size=f.size, blobId=f.blob_id)
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id, "author": repo.owner, "sha": snap.commit,
            "lastModified": _iso(snap.mtime), "createdAt": _iso(snap.mtime),
            "private": repo.private, "gated": repo.gated or False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(f.size for f in snap.files),
        }
        if repo.repo_type == "models":
            info["modelId"] = repo.repo_id
        return info

    def _refs(self, repo: Repo) -> dict[str, Any]:
        out: dict[str, Any] = {"branches": [], "tags": [], "converts": []}
        for name, (kind, folder) in sorted(self.state.store.revisions(repo).items()):
            if name == "master":  # ModelScope's name for the default branch
                continue
            commit = self.state.store.snapshot(folder).commit
            group, prefix = ("branches", "heads") if kind == "branch" else ("tags", "tags")
            out[group].append({"name": name, "ref": f"refs/{prefix}/{name}", "targetCommit": commit})
        return out

    def _tree(
        self, repo_type: str, repo_id: str, rev: str, under: str, repo: Repo, snap: Snapshot,
        query: dict[str, list[str]],
    ) -> Reply:
        if not snap.is_dir(under):
            return self.error(404, "EntryNotFound", f"{under} does not exist on \"{rev}\"")
        items = snap.entries(under, recursive=_is_true(query, "recursive"))
        cursor = query.get("cursor", [""])[0]
        try:
            offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        except ValueError:
            return self.error(400, "", f"Invalid cursor {cursor!r}")
        size = self.state.tree_page_size
        expand = _is_true(query, "expand")
        page = [self._tree_entry(p, f, snap, expand) for p, f in items[offset : offset + size]]
        headers = []
        if offset + size < len(items):
            nxt = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
            tail = f"/{quote(under)}" if under else ""
            params = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "cursor")
            url = (
                f"{self.state.endpoints['hf']}/api/{repo_type}/{repo_id}/tree/{quote(rev, safe='')}{tail}"
                f"?{params + '&' if params else ''}cursor={nxt}"
            )
            headers.append(("Link", f'<{url}>; rel="next"'))
        return self.json_reply(page, headers=headers)

    @staticmethod
    def _tree_entry(path: str, f: FileEntry | None, snap: Snapshot, expand: bool) -> dict[str, Any]:
        if f is None:
            oid = hashlib.sha1(f"{snap.commit}:{path}".encode()).hexdigest()
            entry: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": path}
        else:
            entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        if expand:
            date = _iso(snap.mtime)
            entry["lastCommit"] = {"id": snap.commit, "title": "Emulated commit", "date": date}
        return entry

    # -- resolve ---------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> Reply:
        opened = self._open(repo_type, repo_id, rev, content=True)
        if isinstance(opened, Reply):
            return opened
        _, snap = opened
        entry = snap.by_path.get(path)
        if entry is None:
            reply = self.error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"")
            reply.headers.append(("X-Repo-Commit", snap.commit))
            return reply
        key = f"hf:{repo_type}/{repo_id}:{path}"
        kind = "download" if self.command == "GET" else "api"
        if entry.lfs:
            xet = self.state.knobs.xet
            target = signed_url(self.state, entry, key, f"hf:{repo_type}/{repo_id}", bridge=xet)
            headers = [
                ("Location", target),
                ("X-Repo-Commit", snap.commit),
                ("X-Linked-Etag", f'"{entry.sha256}"'),
                ("X-Linked-Size", str(entry.size)),
                ("ETag", f'"{entry.blob_id}"'),
            ]
            if xet:
                prefix = "" if repo_type == "models" else f"{repo_type}/"
                refresh = (f"{self.state.endpoints['hf']}/api/{repo_type}/{repo_id}/xet-read-token/"
                           f"{snap.commit}")
                headers += [("X-Xet-Hash", xet_hash(entry)),
                            ("Link", f'<{refresh}>; rel="xet-auth"'),
                            ("X-Repo-Path", f"{prefix}{repo_id}")]
            return Reply(302, headers, kind=kind, file_key=key)
        headers = [
            ("X-Repo-Commit", snap.commit),
            ("ETag", f'"{entry.git_sha1}"'),
            ("Content-Type", mimetypes.guess_type(path)[0] or "application/octet-stream"),
        ]
        return self.file_reply(entry, key, headers)
