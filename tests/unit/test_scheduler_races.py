"""The real SchedulerActor (a plain class) driving a job through fake handles,
without Ray: races whose timing a cluster cannot pin down, made exact by
gates the fakes wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import cast

import pytest

from raydf.backends.base import RemoteFile
from raydf.cluster import scheduler as scheduler_module
from raydf.cluster.handles import PeerHandle, SeedHandle
from raydf.cluster.protocol import (
    Fetched,
    Holdings,
    JobSpec,
    PeerJoin,
    PullBatch,
    PullOutcome,
    Received,
    SeedStats,
)
from raydf.cluster.scheduler import SchedulerActor
from raydf.cluster.spec import TaskSpec
from raydf.plan import RepoPlan
from raydf.policy import Limits
from raydf.report import Report

MiB = 2**20


class FakeSeed:
    """A seed that holds every piece it is asked to fetch."""

    def __init__(self) -> None:
        self.fetched: list[tuple[str, int]] = []
        self.killed = False

    async def fetch(self, task_id: str, index: int) -> Fetched:
        self.fetched.append((task_id, index))
        return Fetched(crc=7, origin_bytes=MiB, origin_requests=len(self.fetched),
                       hub_requests={"cdn": len(self.fetched)})

    def release(self, pieces: list[tuple[str, int]]) -> None:  # fire and forget
        return None

    async def counts(self) -> SeedStats:
        return SeedStats(False, MiB * len(self.fetched), len(self.fetched), {}, 0)

    def kill(self) -> None:
        self.killed = True


class FakePeer:
    """A peer whose ``prepare`` and ``pull_batch`` wait for a gate when one is set."""

    def __init__(self, pieces: int) -> None:
        self.pieces = pieces
        self.prepare_gate: asyncio.Event | None = None
        self.pull_gate: asyncio.Event | None = None
        self.pulling = asyncio.Event()  # set once a pull_batch is waiting on its gate
        self.preparing = asyncio.Event()  # set once a prepare is waiting on its gate
        self.received: set[tuple[str, int]] = set()
        self.finished: list[str] = []
        self.finish_gate: asyncio.Event | None = None
        self.finishing = asyncio.Event()  # set once a finish_job is waiting on its gate

    async def prepare(self, join: PeerJoin) -> Holdings:
        if self.prepare_gate is not None:
            self.preparing.set()
            await self.prepare_gate.wait()
        return Holdings({})

    async def offer(self, join: PeerJoin) -> Holdings:
        return Holdings({})

    async def pull_batch(self, batch: PullBatch) -> list[PullOutcome]:
        if self.pull_gate is not None:
            self.pulling.set()
            await self.pull_gate.wait()
        outcomes: list[PullOutcome] = []
        for pull in batch.pulls:
            self.received.add((pull.task_id, pull.index))
            outcomes.append(Received(MiB, 0.01, 7, len(self.received) == self.pieces))
        return outcomes

    async def cache_only(self, job_id: str) -> None:
        return None

    async def finish_job(self, job_id: str, discard: list[str] | None = None) -> None:
        if self.finish_gate is not None:
            self.finishing.set()
            await self.finish_gate.wait()
        self.finished.append(job_id)


@pytest.fixture
def seeds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeSeed]]:
    made: list[FakeSeed] = []

    def spawn(fetches: int) -> FakeSeed:
        made.append(FakeSeed())
        return made[-1]

    monkeypatch.setattr(SchedulerActor, "_spawn_seed", staticmethod(spawn))
    monkeypatch.setattr(scheduler_module, "alive_nodes", lambda: [])
    yield made


def as_peers(**fakes: FakePeer) -> dict[str, PeerHandle]:
    """Fakes stand where the scheduler takes PeerHandles (it only awaits their calls)."""
    return cast(dict[str, PeerHandle], fakes)


def as_seed(fake: FakeSeed) -> SeedHandle:
    return cast(SeedHandle, fake)


def one_file_job(pieces: int) -> JobSpec:
    f = RemoteFile("w.bin", "w.bin", pieces * MiB, sha256="0" * 64)
    task = TaskSpec("t", f, ("w.bin",), MiB)
    plan = RepoPlan("hf://org/m", "c" * 40, (f,))
    return JobSpec("j1", plan, (task,), "/models/m", Limits(), fingerprint="fp")


def test_a_node_joining_as_the_last_transfer_finishes_is_driven_to_the_end(
    seeds: list[FakeSeed],
) -> None:
    """Node b joins while node a's last pull is in flight, and b's preparation
    is still running when that pull lands: the job must wait for b, drive it,
    and report both nodes done (it used to end, failing b with "no holder left")."""

    async def scenario() -> tuple[Report, list[str]]:
        scheduler = SchedulerActor()
        a, b = FakePeer(pieces=1), FakePeer(pieces=1)
        a.pull_gate, b.prepare_gate = asyncio.Event(), asyncio.Event()
        job_id = await scheduler.submit(one_file_job(1), as_seed(seeds[0]), as_peers(a=a))
        await asyncio.wait_for(a.pulling.wait(), 10)  # a's last (only) pull is in flight
        joined = asyncio.ensure_future(scheduler.join(job_id, as_peers(b=b)))
        await asyncio.wait_for(b.preparing.wait(), 10)  # the join is preparing b, gated
        a.pull_gate.set()  # the last transfer of the job as it stood finishes
        # Node a completes as the drive loop folds that pull in; the loop then
        # decides, with no await in between, whether the job has run out of work.
        await asyncio.wait_for(scheduler._jobs[job_id].node_event("a").wait(), 10)
        assert not joined.done()
        b.prepare_gate.set()  # b is ready only now
        assert await asyncio.wait_for(joined, 10)
        report = await asyncio.wait_for(scheduler.wait(job_id, ["a", "b"]), 10)
        return report, b.finished

    report, b_finished = asyncio.run(scenario())
    rows = {row.node_id: row for row in report.nodes}
    assert rows["a"].ok, rows["a"].error
    assert rows["b"].ok, rows["b"].error
    assert rows["b"].bytes == MiB
    assert b_finished == ["j1"]
    assert seeds[0].fetched == [("t", 0)]  # one origin read for both nodes


def test_a_caller_arriving_as_the_job_closes_leads_a_new_job_once_it_closed(
    seeds: list[FakeSeed],
) -> None:
    """A job done driving but still closing (its peers finishing) refuses a join,
    and a claim for the same request waits for it to close, then lets the
    caller lead a new job (joining it there would leave the new node failed,
    "the job ended before this node completed")."""

    async def scenario() -> tuple[bool, str | None, bool, list[str]]:
        scheduler = SchedulerActor()
        a = FakePeer(pieces=1)
        a.finish_gate = asyncio.Event()
        job_id = await scheduler.submit(one_file_job(1), as_seed(seeds[0]), as_peers(a=a))
        await asyncio.wait_for(a.finishing.wait(), 10)  # closing: a is finishing the job
        late = await scheduler.join(job_id, as_peers(b=FakePeer(pieces=1)))
        claim = asyncio.ensure_future(scheduler.claim("fp"))
        a.finish_gate.set()
        leads = await asyncio.wait_for(claim, 10)
        return late, leads, scheduler._jobs[job_id].closed, a.finished

    late, leads, closed, finished = asyncio.run(scenario())
    assert late is False
    assert leads is None  # no running job to join: this caller leads a new one
    assert closed  # ... once the old one closed
    assert finished == ["j1"]
