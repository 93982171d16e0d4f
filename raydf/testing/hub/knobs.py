"""Knobs that make the emulator behave like a hub under stress.

* ``bandwidth``: bytes/s for all file-content responses together (one token
  bucket shared by every connection of every listener); ``None`` uncaps.
* ``per_connection``: bytes/s for each file-content response on its own, as a
  CDN caps one stream (why parallel ranged GETs win), from its first byte: a
  new response gets no burst, so many short ranged GETs on one stream are no
  faster than one long one; ``None`` uncaps.
* ``rate_limit=(K, window_s)``: at most K requests per client address in any
  sliding window of ``window_s`` seconds on the HF and ModelScope listeners
  (the CDN and ``/_emulator/*`` are exempt); more are answered 429 and are not
  counted against the window. ``None`` removes the limit.
* ``fail_next=K`` (status ``fail_status``, default 503), ``truncate_next=K``
  (full Content-Length, connection closed after half the body),
  ``corrupt_next=K`` (one byte in the middle of the body flipped): the next K
  matching responses; ``delay=s``: every matching response waits ``s`` first.
  Each takes the ``match`` given in the same call: ``"download"`` (file content
  GETs: resolve, CDN, ModelScope ``/repo``; the default), ``"api"`` (everything
  else) or ``"any"``. Truncation and corruption apply only to responses with a
  body of at least 2 bytes.
* ``stall_next=K`` with ``stall_s=N`` (default 30): the next K matching
  responses send their headers, then no byte for N seconds (as Xet bridges
  have been seen to), then the body.
* ``budgets={"resolvers": [K, W], "api": [K, W]}``: the Hub's own request
  budgets, a fixed window of W seconds per client address and quota. Every
  answer under a budget announces it (``RateLimit: "resolvers";r=<left>;
  t=<s to reset>`` and ``RateLimit-Policy: "fixed window";"resolvers";q=K;w=W``);
  past K, 429 with ``Retry-After``. ``resolvers`` are HF ``/resolve/`` and
  ModelScope ``/repo`` requests; ``api`` is every other hub request (the CDN is
  exempt). ``None`` (or ``{}``) removes them.
* ``xet=True``: Hugging Face LFS files are Xet-backed: ``/resolve/`` answers
  302 to a bridge url on the CDN host with ``X-Xet-Hash``, a ``xet-auth``
  ``Link``, ``X-Linked-Size`` and ``X-Linked-Etag``; the bridge's url is
  presigned for GET, so a HEAD on it is refused with 403, and it sends no
  ``ETag`` or ``Last-Modified``.
* ``ms_redirect=True``: ModelScope LFS files answer ``/repo`` with a 302 to
  the CDN host (object storage), as the real hub does for large files.
* ``ms_page_cap=N``: ModelScope dataset tree pages hold at most N entries,
  whatever ``PageSize`` asks (the real server caps at 100).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

MATCHES = ("download", "api", "any")
_FAULTS = ("fail_next", "truncate_next", "corrupt_next", "stall_next")
_FLAGS = ("xet", "ms_redirect")
KNOB_NAMES = frozenset(
    {"bandwidth", "per_connection", "rate_limit", "fail_status", "delay", "match", "stall_s",
     "budgets", "ms_page_cap", *_FAULTS, *_FLAGS}
)
BUDGET_NAMES = ("resolvers", "api")


class TokenBucket:
    """A byte-rate limiter; threads that overdraw it sleep off their debt."""

    def __init__(self, rate: float, *, full: bool = True) -> None:
        """``full``: start with a burst's worth (a shared cap); else empty (a cap
        per response: each starts at the rate, not ahead of it)."""
        if rate <= 0:
            raise ValueError(f"a rate must be positive, got {rate}")
        self.rate = float(rate)
        # A small burst (50 ms worth) keeps the cap honest over short windows.
        self.burst = max(self.rate * 0.05, 16 * 2**10)
        self._tokens = self.burst if full else 0.0
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def consume(self, n: int) -> None:
        """Take ``n`` bytes, sleeping until the bucket can afford them."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate) - n
            self._stamp = now
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class RateLimiter:
    """A sliding-window request counter per client address."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"rate_limit wants (K >= 1, window > 0), got ({limit}, {window})")
        self.limit = int(limit)
        self.window = float(window)
        self._seen: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> int | None:
        """Record a request; None if allowed, else whole seconds until a slot frees."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(client, collections.deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if len(seen) < self.limit:
                seen.append(now)
                return None
            return max(1, math.ceil(seen[0] + self.window - now))


class Budget:
    """A fixed-window request budget per client address, as the Hub announces it."""

    def __init__(self, name: str, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"budget {name!r} wants [K >= 1, window > 0], got [{limit}, {window}]")
        self.name = name
        self.limit = int(limit)
        self.window = float(window)
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (window start, used)
        self._lock = threading.Lock()

    def take(self, client: str) -> tuple[bool, int, int]:
        """Count one request: (allowed, remaining after it, whole seconds to the reset)."""
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(client, (now, 0))
            if now >= start + self.window:
                start, used = now, 0
            allowed = used < self.limit
            if allowed:
                used += 1
            self._windows[client] = (start, used)
        return allowed, self.limit - used, max(1, math.ceil(start + self.window - now))

    def headers(self, remaining: int, reset_s: int) -> list[tuple[str, str]]:
        return [
            ("RateLimit", f'"{self.name}";r={remaining};t={reset_s}'),
            ("RateLimit-Policy", f'"fixed window";"{self.name}";q={self.limit};w={round(self.window)}'),
        ]


@dataclass
class Actions:
    """What the knobs do to one response."""

    delay: float = 0.0
    fail: int | None = None
    truncate: bool = False
    corrupt: bool = False
    stall: float = 0.0


def _matches(match: str, kind: str) -> bool:
    return match == "any" or match == kind


class Knobs:
    """The current knob settings (thread-safe); see the module docstring."""

    def __init__(self, bandwidth: float | None = None, per_connection: float | None = None) -> None:
        self._lock = threading.Lock()
        self._defaults = {"bandwidth": bandwidth, "per_connection": per_connection}
        self.clear()

    def clear(self) -> None:
        """Back to the construction-time caps, no rate limit, no faults, no delay."""
        with self._lock:
            self._settings: dict[str, Any] = {}
            self.aggregate: TokenBucket | None = None
            self.per_connection: float | None = None
            self.limiter: RateLimiter | None = None
            self.budgets: dict[str, Budget] = {}
            self.xet = False
            self.ms_redirect = False
            self.ms_page_cap: int | None = None
            self._stall_s = 30.0
            self._faults: dict[str, list[Any]] = {name: [0, "download"] for name in _FAULTS}
            self._delay: tuple[float, str] = (0.0, "download")
            self._fail_status = 503
        self.set(**{k: v for k, v in self._defaults.items() if v is not None})

    def set(self, **knobs: Any) -> None:
        """Change the given knobs only; raise TypeError/ValueError on bad ones."""
        unknown = set(knobs) - KNOB_NAMES
        if unknown:
            raise TypeError(f"unknown knob(s) {sorted(unknown)}; known: {sorted(KNOB_NAMES)}")
        match = knobs.get("match", "download")
        if match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {match!r}")
        with self._lock:
            if "bandwidth" in knobs:
                rate = knobs["bandwidth"]
                self.aggregate = TokenBucket(rate) if rate else None
            if "per_connection" in knobs:
                rate = knobs["per_connection"]
                self.per_connection = float(rate) if rate else None
            if "rate_limit" in knobs:
                limit = knobs["rate_limit"]
                self.limiter = RateLimiter(*limit) if limit else None
            if "budgets" in knobs:
                given = knobs["budgets"] or {}
                unknown_budgets = set(given) - set(BUDGET_NAMES)
                if unknown_budgets:
                    raise ValueError(f"unknown budget(s) {sorted(unknown_budgets)}; known: "
                                     f"{list(BUDGET_NAMES)}")
                self.budgets = {name: Budget(name, *given[name]) for name in given}
            for flag in _FLAGS:
                if flag in knobs:
                    setattr(self, flag, bool(knobs[flag]))
            if "ms_page_cap" in knobs:
                cap = knobs["ms_page_cap"]
                self.ms_page_cap = int(cap) if cap else None
            if "stall_s" in knobs:
                self._stall_s = float(knobs["stall_s"])
            if "fail_status" in knobs:
                self._fail_status = int(knobs["fail_status"])
            for name in _FAULTS:
                if name in knobs:
                    self._faults[name] = [int(knobs[name]), match]
            if "delay" in knobs:
                self._delay = (float(knobs["delay"]), match)
            self._settings.update(knobs)

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-able values, counters as they stand now."""
        with self._lock:
            out = {k: v for k, v in self._settings.items() if k not in _FAULTS}
            out.update({name: count for name, (count, _) in self._faults.items()})
            return out

    def take(self, kind: str, body_len: int) -> Actions:
        """Decide (and count down) what happens to one response of ``kind``."""
        actions = Actions()
        with self._lock:
            delay, match = self._delay
            if delay > 0 and _matches(match, kind):
                actions.delay = delay
            if self._claim("stall_next", kind):
                actions.stall = self._stall_s
            if self._claim("fail_next", kind):
                actions.fail = self._fail_status
            elif body_len >= 2:
                actions.truncate = self._claim("truncate_next", kind)
                actions.corrupt = not actions.truncate and self._claim("corrupt_next", kind)
        return actions

    def _claim(self, name: str, kind: str) -> bool:
        count, match = self._faults[name]
        if count > 0 and _matches(match, kind):
            self._faults[name][0] = count - 1
            return True
        return False
