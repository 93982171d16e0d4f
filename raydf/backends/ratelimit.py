"""How often to ask the hub again, and how much of its quota is left.

* **Retries.** :class:`RetryPolicy`: capped exponential backoff (1 s doubling
  to 8 s, 5 retries, as the official clients do) that honours ``Retry-After``
  and ``RateLimit: ...;t=N``, even above the cap.
* **Budget.** The hubs announce what is left of a quota on every answer
  (``RateLimit: "resolvers";r=<left>;t=<seconds to reset>``, the IETF draft
  the Hub uses). :class:`RequestBudget` keeps that per quota, shared by every
  thread of the seed, and holds a request back until the window resets
  rather than spend one the hub would refuse with a 429.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

__all__ = ["RequestBudget", "RetryPolicy"]

_RATELIMIT_T = re.compile(r"\bt=(\d+)")
_RATELIMIT = re.compile(r'^\s*"([^"]*)"\s*;(.*)$')
_POLICY_QUOTA = re.compile(r'"([^"]*)"\s*;\s*q=(\d+)')


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failing request."""

    retries: int = 5
    base: float = 1.0
    cap: float = 8.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        hinted = _server_hint(response) if response is not None else None
        backoff = min(self.cap, self.base * 2**attempt)
        # The server's word wins, even above our cap: hammering a hub that said
        # "wait 55 s" is how a cluster gets its whole IP range banned.
        return hinted if hinted is not None else backoff


def _server_hint(response: httpx.Response) -> float | None:
    after = response.headers.get("Retry-After")
    if after is not None:
        try:
            return max(0.0, float(after))
        except ValueError:
            pass
    match = _RATELIMIT_T.search(response.headers.get("RateLimit", ""))
    return float(match.group(1)) if match else None


@dataclass
class _Quota:
    """One quota the hub named: what is left of it and when it resets."""

    remaining: int | None = None  # None: not announced (yet), nothing held back
    reset_at: float = 0.0
    limit: int | None = None  # from RateLimit-Policy ``q=``, the size of a fresh window
    in_flight: int = 0


class RequestBudget:
    """What the hub says is left of each of its quotas, shared by all threads.

    The hub names the quota a request counts against in the ``RateLimit``
    header of its answer (``"api"``, ``"resolvers"``); requests of one kind
    (:data:`KINDS`) count against the quota their answers named. Before a
    request is sent, :meth:`acquire` takes one unit; when none is left it
    waits until the announced reset, so the hub never has to refuse. Units
    taken by requests still in flight are kept off what the next answer
    announces (those requests may not have been counted yet), which errs on
    the side of waiting. A 429's ``Retry-After`` empties the quota for
    everyone until then. Until the first answer to a kind came back, one
    request of that kind goes out alone: a burst of threads must not spend a
    budget before the hub had a chance to announce it.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._quotas: dict[str, _Quota] = {}
        self._named: dict[str, str] = {}  # request kind -> quota name the hub gave
        self._learned: set[str] = set()  # kinds whose first answer came back
        self._probing: set[str] = set()  # kinds whose first request is out
        self._answered = threading.Condition(self._lock)
        self.waited_s = 0.0

    def __repr__(self) -> str:
        with self._lock:
            parts = [f"{name}: {q.remaining if q.remaining is not None else '?'} left"
                     for name, q in sorted(self._quotas.items())]
        return f"<RequestBudget {', '.join(parts) or 'nothing announced'}>"

    def acquire(self, kind: str) -> str | None:
        """Take one unit for a request of ``kind``, waiting for a reset if none is left.

        Returns the quota's name (to give back to :meth:`settle`), or None.
        """
        while True:
            with self._lock:
                if kind not in self._learned:
                    if kind in self._probing:
                        self._answered.wait()
                        continue
                    self._probing.add(kind)
                    return None
                name = self._named.get(kind)
                quota = self._quotas.get(name) if name is not None else None
                if quota is None:
                    return None
                now = self._clock()
                if quota.remaining is not None and now >= quota.reset_at and quota.reset_at:
                    # The window the last answer spoke of is over.
                    quota.remaining = (None if quota.limit is None
                                       else max(0, quota.limit - quota.in_flight))
                    quota.reset_at = 0.0
                if quota.remaining is None or quota.remaining > 0:
                    if quota.remaining is not None:
                        quota.remaining -= 1
                    quota.in_flight += 1
                    return name
                wait = max(0.0, quota.reset_at - now)
            self._sleep(wait)
            with self._lock:
                self.waited_s += wait

    def settle(self, kind: str, taken: str | None, response: httpx.Response | None) -> None:
        """Give back what :meth:`acquire` took, and learn from the hub's answer."""
        announced = _rate_limit(response) if response is not None else None
        with self._lock:
            if taken is not None:
                self._quotas[taken].in_flight -= 1
            if kind in self._probing:
                self._probing.discard(kind)
                if response is not None:
                    self._learned.add(kind)
                self._answered.notify_all()
            if response is None:
                return
            if announced is not None:
                name, remaining, reset_s = announced
                self._named[kind] = name
                quota = self._quotas.setdefault(name, _Quota())
                quota.limit = _policy_quota(response, name) or quota.limit
                now = self._clock()
                left = max(0, remaining - quota.in_flight)
                if quota.remaining is None or not quota.reset_at or now >= quota.reset_at:
                    quota.remaining, quota.reset_at = left, now + reset_s
                else:
                    # Same window: answers arrive out of order, and an older one
                    # (more left, a later reset) must not undo a newer one.
                    quota.remaining = min(quota.remaining, left)
                    quota.reset_at = min(quota.reset_at, now + reset_s)
            if response.status_code == 429:
                refused = self._named.get(kind)
                hint = _server_hint(response)
                if refused is not None and hint is not None:
                    quota = self._quotas[refused]
                    quota.remaining = 0
                    quota.reset_at = max(quota.reset_at, self._clock() + hint)


def _rate_limit(response: httpx.Response) -> tuple[str, int, float] | None:
    """``(quota name, remaining, seconds to reset)`` from a ``RateLimit`` header."""
    match = _RATELIMIT.match(response.headers.get("RateLimit", ""))
    if not match:
        return None
    params = dict(p.strip().partition("=")[::2] for p in match.group(2).split(";") if "=" in p)
    try:
        return match.group(1), int(params["r"]), float(params["t"])
    except (KeyError, ValueError):
        return None


def _policy_quota(response: httpx.Response, name: str) -> int | None:
    for quoted, quota in _POLICY_QUOTA.findall(response.headers.get("RateLimit-Policy", "")):
        if quoted == name:
            return int(quota)
    return None
