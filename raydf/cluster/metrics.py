"""Prometheus metrics through ``ray.util.metrics`` and greppable log lines.

Ray exports these on every node's metrics endpoint (``MetricsExportPort`` in
``ray.nodes()``) with the prefix ``ray_``: ``ray_raydf_origin_bytes_total``,
``ray_raydf_p2p_bytes_total``, ``ray_raydf_cross_zone_bytes_total``, ``ray_raydf_pieces_total``,
``ray_raydf_piece_seconds`` (histogram) and ``ray_raydf_active_transfers``.

Log lines go to the actors' Ray log files (``/tmp/ray/session_latest/logs``),
one per event, ``key=value`` so they grep well::

    raydf event=file_verified node=1a2b3c4d job=5e6f7a8b9c0d file=model-00001-of-00004.safetensors bytes=...
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

__all__ = ["log_event", "metrics"]

_logger = logging.getLogger("raydf")
PIECE_SECONDS_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class _Metrics:
    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.origin_bytes = Counter(
            "raydf_origin_bytes", description="Bytes read from the origin hub by seeds.")
        self.p2p_bytes = Counter(
            "raydf_p2p_bytes", description="Bytes peers received through the object store.",
            tag_keys=("node",))
        self.cross_zone_bytes = Counter(
            "raydf_cross_zone_bytes",
            description="Bytes peers received from a holder in another zone.")
        self.pieces = Counter(
            "raydf_pieces", description="Pieces peers received and verified.",
            tag_keys=("node",))
        self.piece_seconds = Histogram(
            "raydf_piece_seconds", description="Time to pull, check and write one piece.",
            boundaries=PIECE_SECONDS_BOUNDARIES, tag_keys=("node",))
        self.active_transfers = Gauge(
            "raydf_active_transfers", description="Transfers and origin fetches in flight.")


@cache
def metrics() -> _Metrics:
    """The process's metric objects (created on first use, inside an actor)."""
    return _Metrics()


def log_event(event: str, **fields: Any) -> None:
    """One ``raydf event=... key=value`` line at INFO on the ``raydf`` logger."""
    if not _logger.handlers and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if _logger.level == logging.NOTSET:
        _logger.setLevel(logging.INFO)
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    _logger.info("raydf event=%s %s", event, text)
