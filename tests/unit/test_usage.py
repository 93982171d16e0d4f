"""Which repos the cluster's jobs ask for: the usage book (raydf.usage), the
scheduler recording every caller through it (fakes, no Ray), and the checks of
``raydf warm --auto``'s options."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from raydf.backends.base import RemoteFile
from raydf.cli import main
from raydf.cluster import joining as joining_module
from raydf.cluster.handles import PeerHandle, SeedHandle
from raydf.cluster.protocol import Fetched, Holdings, JobRequest, PeerJoin, PullBatch, Received
from raydf.cluster.scheduler import SchedulerActor
from raydf.options import Request, make_request
from raydf.plan import RepoPlan
from raydf.policy import Limits
from raydf.usage import UsageBook, UsageKey

MiB = 2**20
COMMIT = "c" * 40
ENDPOINT = "http://127.0.0.1:9"


def request(url: str = "hf://org/m", *, token: str | None = None, revision: str | None = None,
            include: tuple[str, ...] = (), recursive: bool = True, dest: str = "/models/m",
            ) -> Request:
    options = {"hf_endpoint": ENDPOINT, "hf_token": token, "hf_revision": revision}
    return make_request(url, dest, recursive=recursive, include=include, hub_options=options,
                        environ={})


def plan(url: str = "hf://org/m", commit: str = COMMIT, *, public: bool = True,
         files: int = 1) -> RepoPlan:
    return RepoPlan(url, commit, tuple(
        RemoteFile(f"w{i}.bin", f"w{i}.bin", MiB, sha256=f"{i}" * 64) for i in range(files)),
        public=public)


# -- the book ------------------------------------------------------------


def test_the_most_requested_come_first_ties_going_to_the_latest() -> None:
    book = UsageBook()
    for job, (url, at) in enumerate([("hf://org/a", 1.0), ("hf://org/b", 2.0), ("hf://org/b", 3.0),
                                      ("hf://org/c", 4.0), ("hf://org/a", 5.0),
                                      ("hf://org/d", 6.0)]):
        book.record(f"j{job}", request(url), plan(url), at)
    top = book.top(3)
    assert [(u.url, u.count) for u in top] == [("hf://org/a", 2), ("hf://org/b", 2),
                                                ("hf://org/d", 1)]
    assert top[0].first == 1.0 and top[0].last == 5.0
    assert book.top(0) == [] and len(book.top(10)) == 4


def test_an_entry_is_the_url_commit_endpoint_and_filters_not_the_revision_or_token() -> None:
    book = UsageBook()
    book.record("j1", request(revision="main"), plan(), 1.0)
    book.record("j2", request(revision="c" * 12, token="hf_secret"), plan(), 2.0)
    book.record("j3", request(include=("*.bin",)), plan(), 3.0)
    book.record("j4", request(), plan(commit="d" * 40), 4.0)
    (first, *others) = book.top(10)
    assert first.key == UsageKey("hf://org/m", COMMIT, ENDPOINT) and first.count == 2
    assert {(u.key.commit, u.key.include) for u in others} == {
        (COMMIT, ("*.bin",)), ("d" * 40, ())}
    assert "hf_secret" not in repr(book.top(10))


def test_each_caller_joining_a_job_counts_once_under_its_entry() -> None:
    book = UsageBook()
    book.record("j1", request(), plan(), 1.0)
    book.joined("j1", 2.0)
    book.joined("j1", 3.0)
    book.joined("unknown-job", 4.0)
    (entry,) = book.top(5)
    assert entry.count == 3 and entry.last == 3.0


def test_a_warm_the_book_asked_for_counts_nothing_but_its_joiners_do() -> None:
    book = UsageBook()
    book.record("j1", request(), plan(), 1.0)
    book.record("auto", request(revision=COMMIT), plan(), 2.0, count=False)
    assert book.top(1)[0].count == 1
    book.joined("auto", 3.0)
    assert book.top(1)[0].count == 2


def test_the_book_is_bounded_and_a_new_repo_always_gets_in() -> None:
    book = UsageBook(capacity=3)
    for job, url in enumerate(["hf://org/a", "hf://org/a", "hf://org/b", "hf://org/b",
                               "hf://org/c", "hf://org/c", "hf://org/new"]):
        book.record(f"j{job}", request(url), plan(url), float(job))
    assert len(book) == 3
    assert {u.url for u in book.top(3)} == {"hf://org/b", "hf://org/c", "hf://org/new"}
    book.record("j9", request("hf://org/newer"), plan("hf://org/newer"), 9.0)
    assert {u.url for u in book.top(3)} == {"hf://org/b", "hf://org/c", "hf://org/newer"}


def test_only_hub_repos_are_recorded() -> None:
    book = UsageBook()
    web = make_request("https://example.com/f.bin?X-Amz-Signature=s", "/x", recursive=False)
    assert book.record("j1", web, RepoPlan(web.url, "etag", ()), 1.0) is None
    assert book.top(5) == []


def test_a_public_listing_is_kept_for_a_request_naming_its_exact_commit_only() -> None:
    book = UsageBook()
    book.record("j1", request(), plan(files=2), 1.0)
    kept = book.listing(request(revision=COMMIT))
    assert kept is not None and [f.path for f in kept.files] == ["w0.bin", "w1.bin"]
    assert book.listing(request(revision="main")) is None
    assert book.listing(request(revision=COMMIT, include=("*.json",))) is None
    assert book.listing(request(revision="e" * 40)) is None


def test_a_private_or_gated_repo_keeps_no_listing_and_says_it_needs_a_token() -> None:
    book = UsageBook()
    book.record("j1", request(token="hf_x"), plan(public=False), 1.0)
    (entry,) = book.top(1)
    assert not entry.public and entry.token_option == "--hf-token"
    assert book.listing(request(revision=COMMIT, token="hf_x")) is None
    # Public once, not any more: the listing goes too.
    book.record("j2", request("hf://org/p"), plan("hf://org/p"), 2.0)
    book.record("j3", request("hf://org/p", token="hf_x"), plan("hf://org/p", public=False), 3.0)
    assert book.listing(request("hf://org/p", revision=COMMIT)) is None


def test_listings_are_bounded_in_files_the_lowest_ranked_losing_theirs_first() -> None:
    book = UsageBook(listed_files=5)
    for job, url in enumerate(["hf://org/a", "hf://org/a", "hf://org/b"]):
        book.record(f"j{job}", request(url), plan(url, files=3), float(job))
    assert book.listing(request("hf://org/a", revision=COMMIT)) is not None
    assert book.listing(request("hf://org/b", revision=COMMIT)) is None
    assert book.top(2)[1].url == "hf://org/b"  # still ranked: listed again when warmed


def test_one_file_fetched_without_r_is_kept_under_its_own_name() -> None:
    book = UsageBook()
    url = "hf://org/m/sub/w0.bin"
    one = RepoPlan(url, COMMIT, (RemoteFile("renamed.bin", "sub/w0.bin", MiB, sha256="0" * 64),),
                   public=True)
    book.record("j1", request(url, recursive=False, dest="/tmp/renamed.bin"), one, 1.0)
    kept = book.listing(request(url, revision=COMMIT))
    assert kept is not None and [f.path for f in kept.files] == ["w0.bin"]


def test_an_entry_warms_at_its_commit_and_endpoint() -> None:
    book = UsageBook()
    book.record("j1", request(), plan(), 1.0)
    (entry,) = book.top(1)
    assert entry.hub_options() == {"hf_revision": COMMIT, "hf_endpoint": ENDPOINT}
    assert entry.label() == f"hf://org/m@{COMMIT[:12]}"


# -- the scheduler records every caller ------------------------------------------


class Seed:
    def __init__(self, listing: RepoPlan) -> None:
        self.listing = listing
        self.listed = 0
        self.adopted: list[RepoPlan] = []
        self.fetched: list[tuple[str, int]] = []

    async def plan(self) -> RepoPlan:
        self.listed += 1
        return self.listing

    async def add_tasks(self, tasks: list[object]) -> None:
        return None

    async def adopt(self, plan: RepoPlan, tasks: list[object]) -> None:
        self.adopted.append(plan)

    async def fetch(self, task_id: str, index: int) -> Fetched:
        self.fetched.append((task_id, index))
        return Fetched(crc=7, origin_bytes=MiB, origin_requests=1, hub_requests={})

    def release(self, pieces: list[tuple[str, int]]) -> None:
        return None

    async def counts(self) -> object:
        from raydf.cluster.protocol import SeedStats

        return SeedStats(False, 0, 0, {}, 0)

    def kill(self) -> None:
        return None


class Peer:
    """A peer that already holds every piece it is asked to prepare for."""

    async def prepare(self, join: PeerJoin) -> Holdings:
        return Holdings({t.task_id: tuple(range(t.num_pieces)) for t in join.tasks})

    async def offer(self, join: PeerJoin) -> Holdings:
        return Holdings({})

    async def pull_batch(self, batch: PullBatch) -> list[Received]:
        return [Received(MiB, 0.0, 7, True) for _ in batch.pulls]

    async def cache_only(self, job_id: str) -> None:
        return None

    async def finish_job(self, job_id: str, discard: list[str] | None = None) -> None:
        return None


@pytest.fixture
def no_standby(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SchedulerActor, "_spawn_seed", staticmethod(lambda fetches: Seed(plan())))
    monkeypatch.setattr(joining_module, "alive_nodes", lambda: [])


def ask(job: str, req: Request, *, auto: bool = False) -> JobRequest:
    return JobRequest(job, req.without_secrets(), False, Limits(), None, f"fp-{job}", "caller",
                      auto=auto)


def peers() -> dict[str, PeerHandle]:
    return cast(dict[str, PeerHandle], {"a": Peer()})


@pytest.mark.usefixtures("no_standby")
def test_the_scheduler_counts_each_leading_and_joining_caller_but_not_auto_warms() -> None:
    async def scenario() -> SchedulerActor:
        scheduler = SchedulerActor()
        seed = Seed(plan())
        job = await scheduler.start(ask("j1", request()), cast(SeedHandle, seed), peers())
        await scheduler.join(job, cast(dict[str, PeerHandle], {"b": Peer()}), "other")
        await scheduler.join(job, cast(dict[str, PeerHandle], {"c": Peer()}), "auto", False)
        await scheduler.start(ask("j2", request(revision=COMMIT), auto=True),
                              cast(SeedHandle, Seed(plan())), peers())
        return scheduler

    scheduler = asyncio.run(scenario())
    (entry,) = scheduler.usage(5)
    assert entry.url == "hf://org/m" and entry.commit == COMMIT and entry.count == 2
    assert entry.public and entry.files == 1


@pytest.mark.usefixtures("no_standby")
def test_an_auto_warm_of_a_public_recorded_commit_plans_without_listing() -> None:
    private = Seed(plan("hf://org/p", public=False))
    again = Seed(plan("hf://org/p", public=False))
    auto_seed = Seed(plan())

    async def scenario() -> None:
        scheduler = SchedulerActor()
        await scheduler.start(ask("j1", request()), cast(SeedHandle, Seed(plan())), peers())
        await scheduler.start(ask("j2", request("hf://org/p", token="t")),
                              cast(SeedHandle, private), peers())
        await scheduler.start(ask("j3", request(revision=COMMIT), auto=True),
                              cast(SeedHandle, auto_seed), peers())
        await scheduler.start(ask("j4", request("hf://org/p", revision=COMMIT, token="t"),
                                  auto=True), cast(SeedHandle, again), peers())

    asyncio.run(scenario())
    assert auto_seed.listed == 0 and [p.commit for p in auto_seed.adopted] == [COMMIT]
    assert again.listed == 1 and again.adopted == []  # private: the hub judges the token


# -- the command's options -------------------------------------------------------


@pytest.mark.parametrize(("argv", "says"), [
    (["warm", "--auto", "hf://org/m"], "drop the URL"),
    (["warm", "--follow", "hf://org/m"], "--follow goes with --auto"),
    (["warm", "--top", "2", "hf://org/m"], "--top goes with --auto"),
    (["warm"], "needs a URL"),
    (["warm", "--auto", "--top", "0"], "at least one"),
    (["warm", "--auto", "--hf-revision", "v1"], "drop --hf-revision"),
    (["warm", "--auto", "--include", "*.bin"], "drop --include"),
    (["warm", "--auto", "--follow", "--json"], "drop --json"),
    (["warm", "--auto", "--nodes", "gpus"], "expected all, gpu, auto"),
])
def test_warm_auto_refuses_options_that_mean_nothing_with_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydf: error: ") and says in err and err.count("\n") == 1


def test_warm_help_teaches_auto_follow_and_the_token_rule(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["warm", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needed in ("--auto", "--top K", "--follow", "ray job submit -- raydf warm --auto --follow",
                   "tokens are never stored", "--hf-token / --ms-token", "exit status is 3",
                   "nothing to warm"):
        assert needed in text, needed
