"""HTTP plumbing shared by the three listeners: routing hooks, knobs, accounting, streaming.

A handler subclass implements :meth:`BaseHandler.route` (what to answer) and
:meth:`BaseHandler.error` (how this hub spells an error); this module does the
rest the same way for every hub: rate limit, injected faults and delays, range
parsing, zero-copy streaming with ``os.sendfile`` (capped streams go out in
token-bucket sized ``sendfile`` chunks), and counting every body byte the
kernel accepted.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from raydf.testing.hub.accounting import Accounting
from raydf.testing.hub.knobs import Actions, Budget, Knobs, RateLimiter, TokenBucket
from raydf.testing.hub.repos import FileEntry, Repo, RepoStore

_CHUNK = 8 * 2**20


@dataclass
class Reply:
    """What to answer: a bytes body, or ``length`` bytes of ``file`` from ``start``."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: FileEntry | None = None
    start: int = 0
    length: int = 0
    kind: str = "api"
    file_key: str | None = None

    @property
    def body_len(self) -> int:
        return self.length if self.file is not None else len(self.body)


class Unsatisfiable(Exception):
    """A Range header no byte of the file satisfies (answer 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) for a single ``bytes=`` range; None to serve the whole file.

    Malformed and multi-range headers are ignored, as RFC 9110 allows.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[6:].strip().partition("-")
    if not sep or not (first.isdigit() or (first == "" and last.isdigit())):
        return None
    if first == "":  # suffix form: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), min(n, size)
    start = int(first)
    if last and (not last.isdigit() or int(last) < start):
        return None
    if start >= size:
        raise Unsatisfiable
    end = min(int(last), size - 1) if last else size - 1
    return start, end - start + 1


class HubState:
    """Everything the listeners share."""

    def __init__(
        self, store: RepoStore, tokens: dict[str, str], approved: set[str], knobs: Knobs,
        tree_page_size: int, ms_files_limit: int,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.approved = approved
        self.knobs = knobs
        self.accounting = Accounting()
        self.tree_page_size = tree_page_size
        self.ms_files_limit = ms_files_limit
        self.endpoints: dict[str, str] = {}
        self.secret = os.urandom(16)  # signs CDN urls
        # What the CDN may serve: "/repos/<repo hash>/<sha256>" -> (file, accounting
        # key), filled when a resolve answer hands out a signed url for it.
        self.cdn_objects: dict[str, tuple[FileEntry, str]] = {}
        self.cdn_lock = threading.Lock()
        self.stopping = threading.Event()  # ends stalls early when the emulator stops

    def access(self, repo: Repo | None, token: str | None, content: bool) -> str | None:
        """None if allowed, else why not: "bad_token", "not_found", "private" or "gated".

        Any valid token reads a private repo; gated repos list freely but their
        file content needs a token whose user is in ``approved``, as on the hubs.
        """
        if token is not None and token not in self.tokens:
            return "bad_token"
        user = self.tokens.get(token) if token is not None else None
        if repo is None:
            return "not_found"
        if repo.private and user is None:
            return "private"
        if content and repo.gated and user not in self.approved:
            return "gated"
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHandler], state: HubState) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up on a kept-alive connection (a killed seed) is
        normal; anything else is printed, as socketserver does."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class BaseHandler(BaseHTTPRequestHandler):
    """Common request cycle; subclasses route."""

    protocol_version = "HTTP/1.1"
    server_version = "raydf-hub-emulator/1"
    disable_nagle_algorithm = True
    listener = "hf"
    server: _Server

    # -- hooks -------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, list[str]]) -> Reply:
        """The answer to one request (``path`` still percent-encoded)."""
        raise NotImplementedError

    def error(self, status: int, code: str, message: str) -> Reply:
        """An error answer as this hub spells it (``code`` is HF's X-Error-Code)."""
        raise NotImplementedError

    def quota(self, path: str) -> str:
        """Which of the Hub's request budgets (``knobs.BUDGET_NAMES``) a request counts against."""
        return "api"

    def budget_refused(self, wait: int, budget: Budget) -> Reply:
        """The 429 once a request ``budget`` is spent; ``wait`` is Retry-After."""
        reply = self.error(429, "", f"You have exceeded the rate limit for action '{budget.name}'.")
        reply.headers.append(("Retry-After", str(wait)))
        return reply

    def rate_limited(self, wait: int, limiter: RateLimiter) -> Reply:
        """The 429 answer once ``limiter`` refused a request; ``wait`` is Retry-After."""
        reply = self.error(429, "RateLimited", f"Too many requests, retry in {wait} s")
        reply.headers.append(("Retry-After", str(wait)))
        return reply

    # -- helpers for routes ------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def json_reply(self, obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
        body = json.dumps(obj).encode()
        return Reply(status, [("Content-Type", "application/json"), *(headers or [])], body)

    def file_reply(self, entry: FileEntry, file_key: str, headers: list[tuple[str, str]]) -> Reply:
        """200 or 206 with the file (or the asked range) as body; 416 if unsatisfiable."""
        headers = [*headers, ("Accept-Ranges", "bytes")]
        kind = "download" if self.command == "GET" else "api"
        try:
            rng = parse_range(self.headers.get("Range"), entry.size)
        except Unsatisfiable:
            reply = self.error(416, "RangeNotSatisfiable", f"Range not satisfiable for {entry.size} bytes")
            reply.headers += [*headers, ("Content-Range", f"bytes */{entry.size}")]
            reply.kind, reply.file_key = kind, file_key
            return reply
        if rng is None:
            return Reply(200, headers, file=entry, length=entry.size, kind=kind, file_key=file_key)
        start, length = rng
        headers.append(("Content-Range", f"bytes {start}-{start + length - 1}/{entry.size}"))
        return Reply(206, headers, file=entry, start=start, length=length, kind=kind, file_key=file_key)

    # -- request cycle -----------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks read stats, not logs."""

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the HTTP layer itself (bad request line, unknown method), counted too."""
        self.close_connection = True
        self._send(self.error(code, HTTPStatus(code).phrase.replace(" ", ""), message or ""), Actions())

    def _handle(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.send_error(400, f"Bad Content-Length {length!r}")
            return
        body = self.rfile.read(int(length)) if int(length) else b""
        url = urlsplit(self.path)
        if self.listener == "hf" and url.path.startswith("/_emulator/"):
            self._send(self._control(url.path, body), Actions(), count=False)
            return
        try:
            reply = self.route(self.command, url.path, parse_qs(url.query))
        except (OSError, ValueError) as exc:  # a bad .hub.json, a file gone: tell the client
            reply = self.error(500, "InternalError", f"{type(exc).__name__}: {exc}")
        limiter = self.state.knobs.limiter
        wait = limiter.check(self.client_address[0]) if limiter and self.listener != "cdn" else None
        budget = (self.state.knobs.budgets.get(self.quota(url.path))
                  if self.listener != "cdn" else None)
        if limiter and wait is not None:
            reply = self.rate_limited(wait, limiter)
            actions = Actions()
        elif budget is not None and not (taken := budget.take(self.client_address[0]))[0]:
            reply = self.budget_refused(taken[2], budget)
            reply.headers += budget.headers(0, taken[2])
            actions = Actions()
        else:
            if budget is not None:
                reply.headers += budget.headers(*taken[1:])
            actions = self.state.knobs.take(reply.kind, reply.body_len)
        if actions.delay:
            time.sleep(actions.delay)
        if actions.fail is not None:
            failed = self.error(actions.fail, "InjectedFailure", f"injected failure ({actions.fail})")
            failed.kind, failed.file_key = reply.kind, reply.file_key
            reply = failed
        self._send(reply, actions)

    def _send(self, reply: Reply, actions: Actions, count: bool = True) -> None:
        head_only = self.command == "HEAD"
        if actions.truncate:
            self.close_connection = True
        lines = [f"HTTP/1.1 {reply.status} {_phrase(reply.status)}", f"Server: {self.server_version}"]
        lines += [f"{k}: {v}" for k, v in reply.headers]
        lines.append(f"Content-Length: {reply.body_len}")
        if self.close_connection:
            lines.append("Connection: close")
        # Header values must be latin-1; a unicode path in a message is not worth a crash.
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
        client = self.client_address[0]
        content = reply.file is not None and reply.kind == "download" and not head_only
        if count:
            self.state.accounting.request(
                self.listener, client, reply.status, reply.file_key, content,
                "Authorization" in (getattr(self, "headers", None) or {}),
            )

        def sent(n: int) -> None:
            if count:
                self.state.accounting.sent(self.listener, client, n, reply.file_key, content)

        self.state.accounting.begin()
        try:
            self.connection.sendall(head)
            if head_only:
                return
            if actions.stall:
                self.state.stopping.wait(actions.stall)
            if reply.file is not None:
                self._send_file(reply, actions, sent)
            else:
                self._send_bytes(reply.body, actions, sent)
        except OSError:  # the client went away: what it took is counted
            self.close_connection = True
        finally:
            self.state.accounting.end()

    def _send_bytes(self, body: bytes, actions: Actions, sent: Callable[[int], None]) -> None:
        data = bytearray(body)
        if actions.corrupt:
            data[len(data) // 2] ^= 0xFF
        view = memoryview(data)[: len(data) // 2 if actions.truncate else len(data)]
        while view:
            n = self.connection.send(view)
            sent(n)
            view = view[n:]

    def _send_file(self, reply: Reply, actions: Actions, sent: Callable[[int], None]) -> None:
        assert reply.file is not None
        knobs = self.state.knobs
        caps = [b for b in (knobs.aggregate,) if b is not None]
        if knobs.per_connection:
            caps.append(TokenBucket(knobs.per_connection, full=False))
        step = int(min(b.burst for b in caps)) if caps else _CHUNK
        total = reply.length // 2 if actions.truncate else reply.length
        flip = reply.length // 2 if actions.corrupt else -1
        out = self.connection.fileno()
        with open(reply.file.local, "rb") as fh:
            done = 0
            while done < total:
                n = min(step, total - done)
                if done == flip:
                    byte = os.pread(fh.fileno(), 1, reply.start + done)
                    self.connection.sendall(bytes([byte[0] ^ 0xFF]))
                    sent(1)
                    done += 1
                    continue
                if done < flip < done + n:
                    n = flip - done
                for cap in caps:
                    cap.consume(n)
                k = os.sendfile(out, fh.fileno(), reply.start + done, n)
                if k == 0:  # the file shrank under us: the client must see a short body
                    raise ConnectionAbortedError("file changed while being served")
                sent(k)
                done += k

    def _control(self, path: str, body: bytes) -> Reply:
        """``/_emulator/{stats,reset,knobs}``: the test-control API (not counted)."""
        state = self.state
        if path == "/_emulator/stats" and self.command == "GET":
            return self.json_reply(state.accounting.snapshot())
        if path == "/_emulator/reset" and self.command == "POST":
            state.accounting.reset()
            return self.json_reply({"ok": True})
        if path == "/_emulator/knobs" and self.command == "GET":
            return self.json_reply(state.knobs.describe())
        if path == "/_emulator/knobs" and self.command == "POST":
            try:
                knobs = json.loads(body or b"{}")
                if knobs.pop("clear", False):
                    state.knobs.clear()
                state.knobs.set(**knobs)
            except (TypeError, ValueError) as exc:
                return self.json_reply({"error": str(exc)}, 400)
            return self.json_reply(state.knobs.describe())
        return self.json_reply({"error": f"no control route {self.command} {path}"}, 404)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Listener:
    """One HTTP server on its own thread."""

    def __init__(self, host: str, port: int, handler: type[BaseHandler], state: HubState) -> None:
        self.server = _Server((host, port), handler, state)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"hub-{handler.listener}", daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop accepting, then cut open keep-alive connections so their threads end."""
        self.server.shutdown()
        with self.server.connections_lock:
            conns = list(self.server.connections)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        self.server.server_close()
        self.thread.join()

