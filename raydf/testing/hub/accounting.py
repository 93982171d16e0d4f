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
        self._data: dict[str, Any] = {}
        self.reset()

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

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of every counter."""
        with self._lock:
            return copy.deepcopy(self._data)
