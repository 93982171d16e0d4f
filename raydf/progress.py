"""A progress line on a terminal (stderr), silent elsewhere."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``[#####     ] 45%  115.2/256.0 MiB  80.1 MiB/s  label``, redrawn at most 10x/s."""

    def __init__(self, total: int, label: str = "", *, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._drawn = 0.0

    def set(self, done: int, label: str | None = None) -> None:
        with self._lock:
            self.done = done
            if label is not None:
                self.label = label
            self._draw(force=False)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            self._draw(force=False)

    def close(self) -> None:
        with self._lock:
            self._draw(force=True)
            if self.enabled:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        frac = min(1.0, self.done / self.total)
        rate = self.done / max(now - self._started, 1e-6) / 2**20
        bar = "#" * int(frac * 30)
        self.stream.write(
            f"\r[{bar:<30}] {frac:4.0%} {self.done / 2**20:8.1f}/{self.total / 2**20:.1f} MiB "
            f"{rate:7.1f} MiB/s {self.label}"[:160]
        )
        self.stream.flush()
