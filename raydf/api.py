"""The public entry points: ``get``, ``fanout`` and ``download_here``."""

from __future__ import annotations

import time

from raydf.cache import NodeCache, node_path
from raydf.local import download
from raydf.options import Request
from raydf.progress import ProgressBar
from raydf.report import NodeReport, Report

__all__ = ["download_here"]


def download_here(request: Request, *, progress: bool = False) -> Report:
    """Fetch ``request`` onto this machine only, straight from the origin (no Ray)."""
    started = time.monotonic()
    backend = request.open_backend()
    try:
        plan = request.make_plan(backend)
        dest = node_path(request.dest_dir)
        bar = ProgressBar(plan.total_bytes, request.source.name, enabled=None if progress else False)
        result = download(plan, backend, dest, NodeCache(), on_bytes=bar.advance)
        bar.close()
        requests = backend.requests  # type: ignore[attr-defined]
    finally:
        backend.close()
    return Report(
        url=plan.url,
        commit=plan.commit,
        files=len(plan.files),
        bytes=plan.total_bytes,
        origin_bytes=result.origin_bytes,
        origin_requests=requests,
        p2p_bytes=0,
        seconds=time.monotonic() - started,
        nodes=[NodeReport("local", str(node_path(request.dest)), plan.total_bytes,
                          result.seconds, True)],
    )
