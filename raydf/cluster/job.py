"""One fan-out job's bookkeeping inside the scheduler, and its report."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from raydf.blame import Blame
from raydf.cluster.spec import TaskSpec
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
    seed: Any  # None while the job waits for a replacement of a lost seed
    peers: dict[str, Any]  # node id -> PeerActor handle of the target nodes
    dest: str
    limits: Limits
    budget: int | None
    fingerprint: str | None = None
    started: float = field(default_factory=time.monotonic)
    state: PlanState | None = None
    crc: dict[PieceId, int] = field(default_factory=dict)
    seed_held: set[PieceId] = field(default_factory=set)  # fetched, not yet released
    node_bytes: dict[str, int] = field(default_factory=dict)  # verified files' bytes
    node_received: dict[str, int] = field(default_factory=dict)  # pieces' bytes
    node_done: dict[str, float] = field(default_factory=dict)
    node_error: dict[str, str] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    p2p_bytes: int = 0
    blame: Blame = field(default_factory=Blame)  # failure counts per sender and receiver
    healed: list[tuple[str, dict[int, int]]] = field(default_factory=list)  # to apply
    corrupt: dict[str, str] = field(default_factory=dict)  # task -> why nobody gets it
    received: list[tuple[float, str, str, int]] = field(default_factory=list)
    origin_times: list[tuple[float, str, int]] = field(default_factory=list)
    origin_bytes: int = 0  # counted from the seeds' fetches, lost seeds included
    seed_requests: dict[str, int] = field(default_factory=dict)  # seed id -> origin requests
    seed_losses: int = 0
    error: str | None = None
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    holders: dict[str, Any] = field(default_factory=dict)  # serve from cache only
    aux: list[tuple[str, str]] = field(default_factory=list)  # layout files, e.g. HF refs
    _events: dict[str, asyncio.Event] = field(default_factory=dict)

    def actor(self, node: str) -> Any:
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

    def fail_node(self, node: str, reason: str) -> None:
        self.node_error.setdefault(node, reason)
        self.node_event(node).set()

    def record_transfer(self, a: Assignment, nbytes: int, file_done: bool) -> None:
        self.received.append((time.time(), a.peer, a.piece[0], a.piece[1]))
        self.served[a.source] = self.served.get(a.source, 0) + nbytes
        self.node_received[a.peer] = self.node_received.get(a.peer, 0) + nbytes
        if a.source != self.seed_id:
            self.p2p_bytes += nbytes
        if file_done:
            self.node_bytes[a.peer] = self.node_bytes.get(a.peer, 0) + self.tasks[a.piece[0]].size

    def report(self, nodes: list[str]) -> Report:
        """The report as it stands, for ``nodes``."""
        rows = []
        for node in nodes:
            ok = node in self.node_done and node not in self.node_error
            rows.append(NodeReport(
                node_id=node,
                path=self.dest,
                bytes=self.node_bytes.get(node, 0),
                seconds=round(self.node_done.get(node, time.monotonic() - self.started), 3),
                ok=ok,
                error=None if ok else (self.node_error.get(node) or self.error),
            ))
        return Report(
            url=self.plan.url,
            commit=self.plan.commit,
            files=len(self.plan.files),
            bytes=self.plan.total_bytes,
            origin_bytes=self.origin_bytes,
            origin_requests=sum(self.seed_requests.values()),
            p2p_bytes=self.p2p_bytes,
            seconds=round(time.monotonic() - self.started, 3),
            nodes=rows,
            served={("seed" if h.startswith("seed-") else h): b for h, b in self.served.items()},
            job_id=self.job_id,
            corrupt=sorted(self.corrupt.values()),
        )


def describe(exc: BaseException) -> str:
    """A one-line reason, without a remote traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
