"""The CDN listener: where LFS redirects point (HF's CDN and Xet bridge, ModelScope's storage).

It serves content by sha256 under a signed, expiring url, like the real
``cdn-lfs`` hosts: ``{cdn}/repos/<repo hash>/<sha256>?expires=<unix
time>&sig=<hmac>``; with the ``xet`` knob, by Xet hash as ``cas-bridge`` does:
``{cdn}/xet-bridge/<xet hash>?expires=...&sig=...``, GET only (a HEAD is
refused with 403, there is no ETag). It never asks for a token; any Authorization header that
reaches it is counted as a leak (``cdn_authorization_headers``). It runs on
another loopback address than the hub, so clients see a cross-host redirect and
must drop the token, as they do on the internet.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from raydf.testing.hub.repos import FileEntry
from raydf.testing.hub.server import BaseHandler, HubState, Reply

URL_TTL_S = 3600
BRIDGE_PREFIX = "/xet-bridge/"


def _sig(state: HubState, path: str, expires: int) -> str:
    return hmac.new(state.secret, f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def xet_hash(entry: FileEntry) -> str:
    """A stand-in for a file's Xet merkle hash: 64 hex digits, fixed per content."""
    return hashlib.sha256(f"xet:{entry.sha256}".encode()).hexdigest()


def signed_url(
    state: HubState, entry: FileEntry, file_key: str, repo_key: str, *, bridge: bool = False
) -> str:
    """A fresh signed CDN url for ``entry``; registers it so the CDN can serve it.

    ``bridge``: a Xet bridge url (``/xet-bridge/<xet hash>``), presigned for GET
    only: the CDN refuses a HEAD on it with 403 and sends no ETag.
    """
    repo_hash = hashlib.sha256(repo_key.encode()).hexdigest()[:16]
    path = (f"{BRIDGE_PREFIX}{xet_hash(entry)}" if bridge
            else f"/repos/{repo_hash}/{entry.sha256}")
    with state.cdn_lock:
        state.cdn_objects[path] = (entry, file_key)
    expires = int(time.time()) + URL_TTL_S
    return f"{state.endpoints['cdn']}{path}?expires={expires}&sig={_sig(state, path, expires)}"


class CdnHandler(BaseHandler):
    """GET/HEAD of a signed url, ranges included; S3-style XML errors."""

    listener = "cdn"

    def error(self, status: int, code: str, message: str) -> Reply:
        body = f"<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return Reply(status, [("Content-Type", "application/xml")], body.encode())

    def route(self, method: str, path: str, query: dict[str, list[str]]) -> Reply:
        if method not in ("GET", "HEAD"):
            return self.error(405, "MethodNotAllowed", f"{method} is not allowed")
        with self.state.cdn_lock:
            found = self.state.cdn_objects.get(path)
        if found is None:
            return self.error(404, "NoSuchKey", "The specified key does not exist.")
        expires = query.get("expires", ["0"])[0]
        sig = query.get("sig", [""])[0]
        if not expires.isdigit() or not hmac.compare_digest(sig, _sig(self.state, path, int(expires))):
            return self.error(403, "AccessDenied", "Invalid signature")
        if int(expires) < time.time():
            return self.error(403, "AccessDenied", "Request has expired")
        entry, file_key = found
        if path.startswith(BRIDGE_PREFIX):
            if method == "HEAD":  # a url presigned for GET does not sign a HEAD
                reply = self.error(403, "AccessDenied", "Signature does not match (presigned for GET)")
                reply.file_key = file_key
                return reply
            return self.file_reply(entry, file_key, [("Content-Type", "application/octet-stream")])
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("ETag", f'"{entry.sha256}"'),
            ("Cache-Control", "public, max-age=604800, immutable"),
        ]
        return self.file_reply(entry, file_key, headers)
