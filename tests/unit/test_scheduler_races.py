"""The real SchedulerActor (a plain class) planning and driving jobs through
fake handles, without Ray: how it owns a job from the listing on, and races
whose timing a cluster cannot pin down, made exact by gates the fakes wait on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import cast

import pytest

from raydf.backends.base import RemoteFile
from raydf.cluster import joining as joining_module
from raydf.cluster import scheduler as scheduler_module
from raydf.cluster import seed_pool
from raydf.cluster.handles import PeerHandle, SeedHandle
from raydf.cluster.planning import plan_job
from raydf.cluster.protocol import (
    Fetched,
    Holdings,
    JobRequest,
    JobSpec,
    PeerJoin,
    PullBatch,
    PullOutcome,
    Received,
    SeedStats,
)
from raydf.cluster.scheduler import SchedulerActor
from raydf.cluster.spec import TaskSpec
from raydf.errors import AccessDenied
from raydf.options import make_request
from raydf.plan import RepoPlan
from raydf.policy import Limits
from raydf.report import Report

MiB = 2**20


class FakeSeed:
    """A seed that lists ``listing`` (or raises ``refusal``) once ``plan_gate``
    opens, and holds every piece it is asked to fetch."""

    def __init__(self) -> None:
        self.fetched: list[tuple[str, int]] = []
        self.killed = False
        self.listing = RepoPlan("hf://org/m", "c" * 40, ())
        self.refusal: Exception | None = None
        self.plan_gate: asyncio.Event | None = None
        self.listing_asked = asyncio.Event()
        self.tasks: list[TaskSpec] = []
        self.gone = asyncio.Event()  # set when killed
        self.adopted: RepoPlan | None = None

    async def plan(self) -> RepoPlan:
        self.listing_asked.set()
        if self.plan_gate is not None:
            await self.plan_gate.wait()
        if self.refusal is not None:
            raise self.refusal
        return self.listing

    async def add_tasks(self, tasks: list[TaskSpec]) -> None:
        self.tasks.extend(tasks)

    async def adopt(self, plan: RepoPlan, tasks: list[TaskSpec]) -> None:
        self.adopted = plan
        self.tasks.extend(tasks)

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
        self.gone.set()


class FakePeer:
    """A peer whose ``prepare`` and ``pull_batch`` wait for a gate when one is set."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}  # task -> pieces, of the jobs it joined
        self.prepare_gate: asyncio.Event | None = None
        self.pull_gate: asyncio.Event | None = None
        self.pulling = asyncio.Event()  # set once a pull_batch is waiting on its gate
        self.preparing = asyncio.Event()  # set once a prepare is waiting on its gate
        self.received: set[tuple[str, int]] = set()
        self.prepared: list[PeerJoin] = []
        self.finished: list[str] = []
        self.finish_gate: asyncio.Event | None = None
        self.finishing = asyncio.Event()  # set once a finish_job is waiting on its gate

    async def prepare(self, join: PeerJoin) -> Holdings:
        self.prepared.append(join)
        self.sizes.update((t.task_id, t.num_pieces) for t in join.tasks)
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
            have = sum(task == pull.task_id for task, _ in self.received)
            outcomes.append(Received(MiB, 0.01, 7, have == self.sizes[pull.task_id]))
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
    monkeypatch.setattr(joining_module, "alive_nodes", lambda: [])
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
        a, b = FakePeer(), FakePeer()
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
        a = FakePeer()
        a.finish_gate = asyncio.Event()
        job_id = await scheduler.submit(one_file_job(1), as_seed(seeds[0]), as_peers(a=a))
        await asyncio.wait_for(a.finishing.wait(), 10)  # closing: a is finishing the job
        late = await scheduler.join(job_id, as_peers(b=FakePeer()))
        claim = asyncio.ensure_future(scheduler.claim("fp"))
        a.finish_gate.set()
        leads = await asyncio.wait_for(claim, 10)
        return late, leads, scheduler._jobs[job_id].closed, a.finished

    late, leads, closed, finished = asyncio.run(scenario())
    assert late is False
    assert leads is None  # no running job to join: this caller leads a new one
    assert closed  # ... once the old one closed
    assert finished == ["j1"]


def ask_for(url: str, dest: str, *, layout: str = "files", place: bool = True) -> JobRequest:
    request = make_request(url, dest, layout=layout,
                           hub_options={"hf_endpoint": "http://127.0.0.1:9", "hf_token": "hf_x"})
    return JobRequest("j2", request.without_secrets(), place, Limits(), None, "fp2", "caller")


def listing(*files: tuple[str, int, str]) -> RepoPlan:
    return RepoPlan("hf://org/m", "c" * 40, tuple(
        RemoteFile(path, path, size, sha256=digest) for path, size, digest in files))


def test_the_scheduler_lists_through_the_seed_plans_the_job_and_runs_it(
    seeds: list[FakeSeed],
) -> None:
    """The caller hands a request and a seed holding its token; the scheduler
    lists through that seed, plans (one task per distinct content, the
    layout), tells the seed the tasks, and drives the job to the end."""
    seed = FakeSeed()  # the caller's, holding its token
    seed.listing = listing(("a.bin", MiB, "1" * 64), ("copy/a.bin", MiB, "1" * 64),
                           ("b.bin", MiB, "2" * 64))

    async def scenario() -> tuple[Report, FakePeer]:
        scheduler = SchedulerActor()
        a = FakePeer()
        job_id = await scheduler.start(ask_for("hf://org/m", "/models/m"), as_seed(seed),
                                       as_peers(a=a))
        return await asyncio.wait_for(scheduler.wait(job_id, ["a"]), 10), a

    report, a = asyncio.run(scenario())
    assert report.ok, [n.error for n in report.nodes]
    assert report.files == 3 and report.nodes[0].bytes == 2 * MiB
    (join,) = a.prepared
    assert join.dest == "/models/m"
    assert sorted(p for t in join.tasks for p in t.paths) == ["a.bin", "b.bin", "copy/a.bin"]
    assert seed.tasks == list(join.tasks)  # the seed serves exactly the job's tasks
    assert len(seed.fetched) == 2  # one origin read per distinct content


def test_plan_job_lays_out_the_hugging_face_cache_and_fills_caches_only_when_asked() -> None:
    plan = listing(("config.json", 10, "3" * 64))
    cached = plan_job(ask_for("hf://org/m", "/hf/hub", layout="hf-cache"), plan)
    assert cached.aux == (("models--org--m/refs/main", "c" * 40),)
    (task,) = cached.tasks
    assert task.paths[0].startswith("models--org--m/blobs/")
    assert task.links == (("models--org--m/snapshots/" + "c" * 40 + "/config.json",
                           "../../blobs/" + task.paths[0].rsplit("/", 1)[1]),)
    warm = plan_job(ask_for("hf://org/m", "/models/m", place=False), plan)
    assert warm.dest == "" and warm.tasks[0].paths == ("config.json",)


def test_a_listing_the_hub_refuses_kills_the_seed_and_lets_the_next_caller_lead(
    seeds: list[FakeSeed],
) -> None:
    seed = FakeSeed()
    seed.refusal = AccessDenied("org/m is gated: request access on the Hub")

    async def scenario() -> tuple[BaseException | None, str | None, FakePeer]:
        scheduler = SchedulerActor()
        assert await scheduler.claim("fp2") is None  # this caller leads
        a = FakePeer()
        error = None
        try:
            await scheduler.start(ask_for("hf://org/m", "/models/m"), as_seed(seed),
                                  as_peers(a=a))
        except AccessDenied as exc:
            error = exc
        next_caller = await asyncio.wait_for(scheduler.claim("fp2"), 10)
        return error, next_caller, a

    error, next_caller, a = asyncio.run(scenario())
    assert isinstance(error, AccessDenied) and "gated" in str(error)
    assert seed.killed  # its token goes with it
    assert next_caller is None  # the next caller leads: nothing was left claimed
    assert a.prepared == []  # no node joined a job that never started


def test_a_caller_cancelling_while_its_job_is_planned_starts_nothing(
    seeds: list[FakeSeed],
) -> None:
    """Ctrl-C during the listing: the caller's cancel reaches the scheduler before
    the job exists; once the listing returns, no node is prepared, no origin
    byte read, the seed killed."""
    seed = FakeSeed()
    seed.listing = listing(("a.bin", MiB, "1" * 64))
    seed.plan_gate = asyncio.Event()

    async def scenario() -> tuple[str, bool, FakePeer]:
        scheduler = SchedulerActor()
        a = FakePeer()
        starting = asyncio.ensure_future(scheduler.start(
            ask_for("hf://org/m", "/models/m"), as_seed(seed), as_peers(a=a)))
        await asyncio.wait_for(seed.listing_asked.wait(), 10)
        await scheduler.cancel("j2", ["a"], "caller")
        seed.plan_gate.set()  # type: ignore[union-attr]
        job_id = await asyncio.wait_for(starting, 10)
        return job_id, job_id in scheduler._jobs, a

    job_id, exists, a = asyncio.run(scenario())
    assert job_id == "j2" and not exists
    assert a.prepared == [] and seed.fetched == []
    assert seed.killed


def test_a_seed_handed_to_a_caller_that_never_uses_it_is_killed(
    seeds: list[FakeSeed], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller killed between taking a seed (and giving it the token) and
    starting its job leaves no seed behind; a seed whose job runs stays."""
    monkeypatch.setattr(seed_pool, "HANDED_SEED_TIMEOUT", 0.05)

    async def scenario() -> tuple[FakeSeed, bool, FakeSeed]:
        scheduler = SchedulerActor()
        unused = cast(FakeSeed, await scheduler.new_seed(4))
        used = cast(FakeSeed, await scheduler.new_seed(4))
        last = cast(FakeSeed, await scheduler.new_seed(4))  # handed last: reclaimed last
        used.listing = listing(("a.bin", MiB, "1" * 64))
        busy = FakePeer()
        busy.pull_gate = asyncio.Event()  # the job stays running
        await scheduler.start(ask_for("hf://org/m", "/models/m"), as_seed(used),
                              as_peers(a=busy))
        await asyncio.wait_for(last.gone.wait(), 10)  # every reclaim timer has run
        await asyncio.wait_for(busy.pulling.wait(), 10)
        return unused, used.killed, last

    unused, used_killed, last = asyncio.run(scenario())
    assert unused.killed and last.killed
    assert not used_killed  # (the job is cancelled as the test's event loop closes)


@pytest.mark.parametrize("relist_after", [10.0, 0.0])
def test_a_caller_just_missing_a_finished_job_reuses_its_listing(
    seeds: list[FakeSeed], monkeypatch: pytest.MonkeyPatch, relist_after: float,
) -> None:
    """Callers arriving together share one listing even when one comes as the job
    ends (it leads a new job, whose seed adopts the finished job's plan); past
    RELIST_AFTER the next job lists again."""
    monkeypatch.setattr(scheduler_module, "RELIST_AFTER", relist_after)
    first, second = FakeSeed(), FakeSeed()
    first.listing = listing(("a.bin", MiB, "1" * 64))
    second.listing = listing(("b.bin", MiB, "2" * 64))  # what listing again would find

    async def scenario() -> Report:
        scheduler = SchedulerActor()
        job = await scheduler.start(ask_for("hf://org/m", "/models/m"), as_seed(first),
                                    as_peers(a=FakePeer()))
        await asyncio.wait_for(scheduler.wait(job, ["a"]), 10)
        await asyncio.wait_for(scheduler._jobs[job].runner, 10)  # type: ignore[arg-type]
        late = dataclasses.replace(ask_for("hf://org/m", "/models/m"), job_id="j3")
        again = await scheduler.start(late, as_seed(second), as_peers(b=FakePeer()))
        return await asyncio.wait_for(scheduler.wait(again, ["b"]), 10)

    report = asyncio.run(scenario())
    assert report.ok, [n.error for n in report.nodes]
    if relist_after:
        assert not second.listing_asked.is_set() and second.adopted == first.listing
        assert [t.paths for t in second.tasks] == [("a.bin",)]
    else:
        assert second.listing_asked.is_set() and second.adopted is None
        assert [t.paths for t in second.tasks] == [("b.bin",)]
