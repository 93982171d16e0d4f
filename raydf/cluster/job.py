"""One fan-out job's bookkeeping inside the scheduler, and its report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from raydf.blame import Blame
from raydf.cluster.handles import PeerHandle, SeedHandle
from raydf.cluster.metrics import metrics
from raydf.cluster.spec import TaskSpec
from raydf.errors import RaydfError, exit_code
from raydf.plan import RepoPlan
from raydf.policy import Assignment, Limits, PieceId, PlanState
from raydf.report import NodeReport, Report

__all__ = ["Job", "describe"]


@dataclass
class Job:
    """What the scheduler knows about one job; peers may join while it runs."""

    job_id: str
    plan: RepoPlan
    tasks: dict[str, TaskSpec]
    seed_id: str
    seed: SeedHandle | None  # None while the job waits for a replacement of a lost seed
    peers: dict[str, PeerHandle]  # node id -> the peer of each target node
    dest: str
    limits: Limits
    budget: int | None
    fingerprint: str | None = None
    started: float = field(default_factory=time.monotonic)
    state: PlanState | None = None
    crc: dict[PieceId, int] = field(default_factory=dict)
    seed_held: set[PieceId] = field(default_factory=set)  # fetched, not yet released
    moved: set[PieceId] = field(default_factory=set)  # a pull of it ended since the last look
    unreleased: list[PieceId] = field(default_factory=list)  # out of the plan, the seed not told
    node_bytes: dict[str, int] = field(default_factory=dict)  # verified files' bytes
    node_received: dict[str, int] = field(default_factory=dict)  # pieces' bytes
    node_done: dict[str, float] = field(default_factory=dict)
    node_error: dict[str, str] = field(default_factory=dict)
    node_code: dict[str, int] = field(default_factory=dict)  # exit code of each failure
    node_skipped: dict[str, str] = field(default_factory=dict)  # nodes gone before they joined
    served: dict[str, int] = field(default_factory=dict)
    p2p_bytes: int = 0
    cross_zone_bytes: int = 0  # from holders in another zone than the receiver's
    blame: Blame = field(default_factory=Blame)  # failure counts per sender and receiver
    healed: list[tuple[str, dict[int, int]]] = field(default_factory=list)  # to apply
    corrupt: dict[str, str] = field(default_factory=dict)  # task -> why nobody gets it
    senders: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (node, task) ->
    suspects: list[tuple[str, str, str]] = field(default_factory=list)  # (node, task, why)
    received: list[tuple[float, str, str, int]] = field(default_factory=list)
    origin_times: list[tuple[float, str, int]] = field(default_factory=list)
    origin_bytes: int = 0  # counted from the seeds' fetches, lost seeds included
    seed_requests: dict[str, int] = field(default_factory=dict)  # seed id -> origin requests
    seed_hub_requests: dict[str, dict[str, int]] = field(default_factory=dict)  # ... by kind
    seed_losses: int = 0
    topology_label: str = ""  # the node label naming each node's zone ("": no zones)
    error: str | None = None
    error_type: str = ""  # the RaydfError class behind ``error``, for the caller's exit code
    closed: bool = False
    ending: bool = False  # its run finished driving: joiners must start a new job
    joining: int = 0  # joins preparing their nodes right now
    draining: float | None = None  # when every caller cancelled (no more origin reads)
    leases: dict[str, tuple[frozenset[str], float]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    holders: dict[str, PeerHandle] = field(default_factory=dict)  # serve from cache only
    introduced: set[tuple[str, str]] = field(default_factory=set)  # (receiver, holder) it knows
    aux: list[tuple[str, str]] = field(default_factory=list)  # layout files, e.g. HF refs
    _events: dict[str, asyncio.Event] = field(default_factory=dict)
    version: int = 0  # grows when a node completes or fails, the seed is lost or back
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def changed(self) -> None:
        """Something a waiting caller must hear about happened: wake its long-poll."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, seen: int, timeout: float) -> None:
        """Return once ``version`` is past ``seen``, the job closed, or after ``timeout`` s."""
        if self.version > seen or self.closed or timeout <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def renew(self, caller: str, nodes: list[str]) -> None:
        """``caller`` (waiting for ``nodes``) is alive now."""
        known = self.leases.get(caller, (frozenset(), 0.0))[0]
        self.leases[caller] = (known | frozenset(nodes), time.monotonic())

    def actor(self, node: str) -> PeerHandle:
        """The PeerActor of ``node``, a target or a serving-only holder."""
        return self.peers.get(node) or self.holders[node]

    def node_event(self, node: str) -> asyncio.Event:
        """Set once ``node`` completed or failed."""
        return self._events.setdefault(node, asyncio.Event())

    def complete_node(self, node: str) -> None:
        if self.corrupt:  # every other file is placed; this one cannot be
            self.fail_node(node, next(iter(self.corrupt.values())))
            return
        if node not in self.node_done:
            self.node_done[node] = time.monotonic() - self.started
        self.node_event(node).set()
        self.changed()

    def reopen_node(self, node: str) -> None:
        """``node`` must take a file again (its verified copy was bad): not done yet."""
        self.node_done.pop(node, None)
        self.node_event(node).clear()

    def skip_node(self, node: str, reason: str) -> None:
        """``node`` left the cluster before it joined: no longer a target."""
        self.peers.pop(node, None)
        self.node_skipped[node] = reason
        self.node_event(node).set()
        self.changed()

    def fail_node(self, node: str, reason: str | BaseException, code: int = 1) -> None:
        """``node`` failed: ``reason`` is a line or the error (its exit code then
        comes from its kind, see :func:`raydf.errors.exit_code`)."""
        if isinstance(reason, BaseException):
            cause = getattr(reason, "cause", None)
            code = exit_code(cause if isinstance(cause, BaseException) else reason)
            reason = describe(reason)
        if node not in self.node_error:
            self.node_error[node] = reason
            self.node_code[node] = code
        self.node_event(node).set()
        self.changed()

    def record_transfer(self, a: Assignment, nbytes: int, file_done: bool) -> None:
        self.received.append((time.time(), a.peer, a.piece[0], a.piece[1]))
        self.served[a.source] = self.served.get(a.source, 0) + nbytes
        self.node_received[a.peer] = self.node_received.get(a.peer, 0) + nbytes
        if a.source != self.seed_id:
            self.p2p_bytes += nbytes
        if self.state is not None and self.state.crosses(a):
            self.cross_zone_bytes += nbytes
            metrics().cross_zone_bytes.inc(nbytes)
        if file_done:
            self.node_bytes[a.peer] = self.node_bytes.get(a.peer, 0) + self.tasks[a.piece[0]].size

    def report(self, nodes: list[str]) -> Report:
        """The report as it stands, for ``nodes``."""
        rows = []
        for node in nodes:
            if node in self.node_skipped:
                continue
            ok = node in self.node_done and node not in self.node_error
            rows.append(NodeReport(
                node_id=node,
                path=self.dest,
                bytes=self.node_bytes.get(node, 0),
                seconds=round(self.node_done.get(node, time.monotonic() - self.started), 3),
                ok=ok,
                error=None if ok else (self.node_error.get(node) or self.error),
                exit_code=0 if ok else self.node_code.get(node, 1),
            ))
        return Report(
            url=self.plan.url,
            commit=self.plan.commit,
            files=len(self.plan.files),
            bytes=self.plan.total_bytes,
            origin_bytes=self.origin_bytes,
            origin_requests=sum(self.seed_requests.values()),
            hub_requests=_sum_kinds(self.seed_hub_requests.values()),
            p2p_bytes=self.p2p_bytes,
            cross_zone_bytes=self.cross_zone_bytes,
            seconds=round(time.monotonic() - self.started, 3),
            nodes=rows,
            served={("seed" if h.startswith("seed-") else h): b for h, b in self.served.items()},
            skipped={n: self.node_skipped[n] for n in nodes if n in self.node_skipped},
            job_id=self.job_id,
            error_type=self.error_type,
            corrupt=sorted(self.corrupt.values()),
        )


def _sum_kinds(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for by_kind in counts:
        for kind, n in by_kind.items():
            total[kind] = total.get(kind, 0) + n
    return total


def error_type(exc: BaseException) -> str:
    """The RaydfError class name of ``exc`` (or of the error inside a Ray task error)."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    return type(exc).__name__ if isinstance(exc, RaydfError) else ""


def describe(exc: BaseException) -> str:
    """A one-line reason, without a remote traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
