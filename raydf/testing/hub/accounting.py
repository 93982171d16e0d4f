"""Thread-safe traffic counters of the emulator (what ``HubEmulator.stats()`` returns).

Bytes are body bytes actually written to sockets (headers are not counted):
each chunk is counted after the kernel took it, so a transfer cut short counts
only what left. Requests to ``/_emulator/*`` are not counted at all.
"""

from __future__ import annotations

import copy
import threading
from typing import Any


def _pair() -> dict[str, int]:
    return {"bytes": 0, "requests": 0}


class Accounting:
    """Counters per file, per client address and per listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._sending = 0  # responses whose body is being written right now
        self._data: dict[str, Any] = {}
        self.reset()

    def begin(self) -> None:
        """A response starts writing its body."""
        with self._lock:
            self._sending += 1

    def end(self) -> None:
        """A response finished (or gave up) writing its body."""
        with self._lock:
            self._sending -= 1
            self._settled.notify_all()

    def reset(self) -> None:
        with self._lock:
            self._data = {
                "bytes": 0,
                "requests": 0,
                "by_file": {},
                "by_client": {},
                "by_listener": {name: _pair() for name in ("hf", "ms", "cdn")},
                "download_bytes": 0,
                "download_requests": 0,
                "cdn_authorization_headers": 0,
                "status_counts": {},
            }

    def request(
        self, listener: str, client: str, status: int, file_key: str | None, download: bool,
        authorization: bool,
    ) -> None:
        """Count one response as it starts (``download``: its body is file content)."""
        with self._lock:
            d = self._data
            d["requests"] += 1
            d["by_client"].setdefault(client, _pair())["requests"] += 1
            d["by_listener"][listener]["requests"] += 1
            if file_key is not None:
                d["by_file"].setdefault(file_key, _pair())["requests"] += 1
            if download:
                d["download_requests"] += 1
            if listener == "cdn" and authorization:
                d["cdn_authorization_headers"] += 1
            key = str(status)
            d["status_counts"][key] = d["status_counts"].get(key, 0) + 1

    def sent(self, listener: str, client: str, n: int, file_key: str | None, download: bool) -> None:
        """Count ``n`` body bytes the kernel accepted."""
        with self._lock:
            d = self._data
            d["bytes"] += n
            d["by_client"].setdefault(client, _pair())["bytes"] += n
            d["by_listener"][listener]["bytes"] += n
            if file_key is not None:
                d["by_file"].setdefault(file_key, _pair())["bytes"] += n
            if download:
                d["download_bytes"] += n

    def snapshot(self, settle: float = 1.0) -> dict[str, Any]:
        """A deep copy of every counter.

        Waits (up to ``settle`` seconds) for responses still being written, so
        that a client that has read a whole body sees it counted: the server
        counts bytes just after the kernel took them, the client may be faster.
        """
        with self._lock:
            self._settled.wait_for(lambda: self._sending == 0, timeout=settle)
            return copy.deepcopy(self._data)
