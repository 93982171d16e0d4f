"""The public entry points: ``fanout``, ``get`` and ``download_here``."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from raydf.backends.base import hub_requests
from raydf.cache import NodeCache, node_path
from raydf.cluster.job import describe
from raydf.errors import FanoutError, unwrap
from raydf.local import download
from raydf.options import TOPOLOGY_LABEL, Request, make_request
from raydf.policy import Limits
from raydf.progress import ProgressBar
from raydf.report import NodeReport, Report

if TYPE_CHECKING:
    from raydf.cluster.handles import SchedulerHandle

__all__ = ["download_here", "fanout", "get", "run_fanout"]

_POLL_SECONDS = 0.5  # how often a caller with a progress bar redraws it
_POLL_WAIT = 3.0  # a long-poll's longest wait (well inside the scheduler's CALLER_LEASE)


def fanout(
    url: str,
    dest: str,
    *,
    recursive: bool = True,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    nodes: str = "auto",
    address: str | None = None,
    memory_budget: int | None = None,
    limits: Limits | None = None,
    progress: bool = False,
    layout: str = "files",
    topology_label: str = TOPOLOGY_LABEL,
    **hub_options: str | None,
) -> Report:
    """Deliver ``url`` to ``dest`` on every target node; return the report.

    ``nodes``: ``auto`` (GPU nodes if any, else all), ``gpu``, ``all`` or a
    label selector ``key=value``. ``layout="hf-cache"`` makes ``dest`` a Hugging
    Face cache folder (see :mod:`raydf.layout`). ``hub_options``: ``hf_token``,
    ``hf_revision``, ``hf_endpoint``, ``ms_token``, ``ms_revision``,
    ``ms_endpoint`` (else the environment). ``topology_label``: the Ray node
    label that names each node's zone; pieces then cross zones about once each
    (``""``: ignore zones). Starts a local Ray cluster if none
    is running. The report's ``ok`` is true only when every node has every
    file, verified.

    >>> report = raydf.fanout("hf://Qwen/Qwen2.5-0.5B", "/models/qwen")  # doctest: +SKIP
    """
    from raydf.cluster.service import connect, target_nodes

    request = make_request(url, dest, recursive=recursive, include=include, exclude=exclude,
                           hub_options=hub_options, layout=layout)
    connect(address)
    return run_fanout(request, target_nodes(nodes), memory_budget=memory_budget,
                      limits=limits, progress=progress, topology_label=topology_label)


def get(
    url: str,
    dest: str,
    *,
    recursive: bool = True,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    **hub_options: str | None,
) -> str:
    """Make ``url`` present at ``dest`` on *this* node and return the local path.

    Meant for a Ray task or actor (a Serve replica's ``__init__``, a Train
    worker): pieces come from nodes that already have them, the origin only
    for what the cluster lacks, and a node that already has the files gets
    them from its cache at once.

    >>> path = raydf.get("hf://org/model", "/models/m")  # doctest: +SKIP
    """
    import ray

    from raydf.cluster.service import connect

    request = make_request(url, dest, recursive=recursive, include=include, exclude=exclude,
                           hub_options=hub_options)
    connect(None)
    node = ray.get_runtime_context().get_node_id()
    report = run_fanout(request, [node])
    if not report.ok:
        raise FanoutError(f"{url} could not be delivered to this node: "
                          f"{report.nodes[0].error if report.nodes else 'no report'}")
    return str(node_path(request.dest))


def run_fanout(
    request: Request,
    nodes: list[str],
    *,
    memory_budget: int | None = None,
    limits: Limits | None = None,
    progress: bool = False,
    place: bool = True,
    topology_label: str = TOPOLOGY_LABEL,
    auto: bool = False,
) -> Report:
    """Run one fan-out of a checked request to ``nodes`` (Ray already connected).

    ``place=False`` fills the nodes' caches only (``raydf warm``).
    ``topology_label``: the node label naming each node's zone ("": no zones).
    ``auto``: a warm of a repo the usage book recorded (``raydf warm --auto``),
    not counted as a request; a public one at its recorded commit is planned
    without the hub.

    Joins a running job for the same request (and token) instead of starting
    another, so concurrent callers share one listing and one origin read.
    """
    import ray

    from raydf.cluster.handles import PeerHandle
    from raydf.cluster.protocol import JobRequest
    from raydf.cluster.service import (
        existing_peers,
        fingerprint,
        peer_for,
        scheduler,
        seed_for,
    )

    limits = limits or Limits()
    # The scheduler first: on a fresh cluster its worker (then its standby seed's)
    # starts while the peers' do.
    sched = scheduler()
    peers = {node: PeerHandle(peer_for(node)) for node in nodes}
    key = fingerprint(request) + ("" if place else ":cache-only")
    # This call's lease on the job: renewed by every status poll, so the job
    # notices when this process is gone (kill -9, `ray job stop`).
    caller = uuid.uuid4().hex
    dest = str(request.dest_dir if request.recursive else request.dest) if place else ""
    while True:
        running = ray.get(sched.claim(key, dest, nodes, request.url))
        if running is None:
            break
        if ray.get(sched.join(running, peers, caller, not auto)):
            return _await_report(sched, running, nodes, request, limits, progress, caller)
    job = uuid.uuid4().hex[:12]
    ask = JobRequest(job, request.without_secrets(), place, limits, memory_budget, key, caller,
                     topology_label=topology_label, auto=auto)
    try:
        # The token goes to the seed only; the scheduler lists, plans and runs the
        # job with it, and owns the seed from here (it dies with the job).
        seed = seed_for(sched, request, limits.origin_fetches)
        holders = {n: PeerHandle(p) for n, p in existing_peers().items()}
        ray.get(sched.start(ask, seed, peers, holders))
    except BaseException as exc:
        # Ctrl-C (or an error) while the job was being planned or started: the
        # scheduler stops it before it starts, or cancels it if it runs.
        with contextlib.suppress(Exception):
            ray.get(sched.cancel(job, nodes, caller))
        ray.get(sched.release(key))
        if isinstance(exc, Exception):
            raise unwrap(exc) from None
        raise
    return _await_report(sched, job, nodes, request, limits, progress, caller)


def _await_report(
    sched: SchedulerHandle, job: str, nodes: list[str], request: Request, limits: Limits,
    progress: bool, caller: str,
) -> Report:
    """Wait for ``nodes`` of ``job``: draw progress, replace a lost seed, cancel on Ctrl-C.

    The status is a long-poll scoped to ``nodes``: it answers at once when
    something changed that this caller must act on (a lost seed), else after
    ``_POLL_WAIT`` (``_POLL_SECONDS`` with a progress bar), so an idle caller
    costs the scheduler one call every few seconds, which also renews its lease.
    """
    import ray

    from raydf.cluster.service import seed_for

    bar: ProgressBar | None = None
    wait_s = _POLL_SECONDS if progress else _POLL_WAIT
    try:
        waiting = sched.wait(job, nodes)
        seen = -1
        polling = sched.poll(job, caller, nodes, seen, 0.0)
        while True:
            try:
                if ray.wait([waiting], timeout=0)[0]:
                    report: Report = ray.get(waiting)
                    return report
                if not ray.wait([waiting, polling], timeout=_POLL_SECONDS)[0]:
                    continue
                if not ray.wait([polling], timeout=0)[0]:
                    continue  # the report is ready: returned above
                status = ray.get(polling)
            except ray.exceptions.ActorUnavailableError:
                # A passing hiccup (e.g. a node of the cluster just went away):
                # the scheduler is alive; ask again.
                waiting = sched.wait(job, nodes)
                polling = sched.poll(job, caller, nodes, seen, 0.0)
                continue
            seen = status.version
            polling = sched.poll(job, caller, nodes, seen, wait_s)
            if status.needs_seed:
                # Only callers hold the token, so a caller makes the replacement.
                ray.get(sched.add_seed(job, seed_for(sched, request, limits.origin_fetches)))
            if progress:
                bar = bar or ProgressBar(status.bytes * len(nodes), request.source.name)
                # Per node: the slowest node's share, and how many are complete.
                shares = [status.received.get(n, 0) / max(status.bytes, 1) for n in nodes]
                complete = sum(status.nodes.get(n, 0) >= status.bytes for n in nodes)
                bar.set(sum(status.received.get(n, 0) for n in nodes),
                        f"{request.source.name} | slowest node {min(shares):.0%} | "
                        f"{complete}/{len(nodes)} nodes done")
    except KeyboardInterrupt:
        ray.get(sched.cancel(job, nodes, caller))
        raise
    except ray.exceptions.ActorDiedError as exc:
        raise FanoutError(
            "the raydf scheduler died during the fan-out; run the same command again: "
            f"what nodes already received is kept and not fetched again ({describe(exc)})"
        ) from None
    finally:
        if bar is not None:
            bar.close()


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
        requests = backend.requests
        by_kind = hub_requests(backend)
    finally:
        backend.close()
    return Report(
        url=plan.url,
        commit=plan.commit,
        files=len(plan.files),
        bytes=plan.total_bytes,
        origin_bytes=result.origin_bytes,
        origin_requests=requests,
        hub_requests=by_kind,
        p2p_bytes=0,
        seconds=time.monotonic() - started,
        nodes=[NodeReport("local", str(node_path(request.dest)), plan.total_bytes,
                          result.seconds, True)],
    )
