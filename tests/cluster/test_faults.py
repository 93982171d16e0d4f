"""Faults during a fan-out on a real 4-node cluster: what must hold in each.

The origin is capped so that a fan-out lasts long enough to be hit in the
middle; a test waits for a stated condition (a node has pieces, a partial file
exists), never for a fixed time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import ray

import raydf
from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME
from raydf.errors import FanoutError
from raydf.pieces import piece_length
from raydf.report import Report
from raydf.testing.cluster import LocalCluster, seed_actors, wait_until
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20
SHARD = 32 * MiB
IN_FLIGHT = 8 * piece_length(SHARD)  # the most a lost seed can have had on its way


@pytest.fixture(scope="module")
def record() -> Iterator[Callable[..., None]]:
    """Collect what each fault cost; with RAYDF_RELIABILITY_REPORT set, write it as a
    Markdown table there (the README's Reliability section is made from it)."""
    rows: list[str] = []

    def add(fault: str, outcome: str, origin: int, repo: int) -> None:
        rows.append(f"| {fault} | {outcome} | {origin / MiB:.1f} MiB | {repo / MiB:.1f} MiB | "
                    f"{origin / repo:.2f} |")

    yield add
    target = os.environ.get("RAYDF_RELIABILITY_REPORT")
    if target:
        header = ["| fault | what survived | origin bytes | repo bytes | origin / repo |",
                  "|---|---|---|---|---|"]
        Path(target).write_text("\n".join(header + rows) + "\n")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())



def running_job(url: str) -> Callable[[], dict[str, Any] | None]:
    def find() -> dict[str, Any] | None:
        try:  # the scheduler may not exist yet, or be the one a test killed
            sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
            jobs = ray.get(sched.snapshot.remote())["jobs"].values()
        except (ValueError, ray.exceptions.RayActorError):
            return None
        return next((j for j in jobs if j["url"] == url and not j["done"]), None)

    return find


def start(pool: ThreadPoolExecutor, hub: HubEmulator, url: str, dest: str) -> Future[Report]:
    return pool.submit(raydf.fanout, url, dest, hf_endpoint=hub.hf_endpoint)


@pytest.fixture
def slow_origin(hub: HubEmulator) -> Iterator[None]:
    hub.reset_stats()
    hub.set_knobs(bandwidth=20e6)
    yield
    hub.clear_knobs()


def test_a_killed_peer_is_named_the_others_finish_and_a_rerun_completes_it_from_peers(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
    slow_origin: None, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/peerloss", shard_sizes=[SHARD], seed=31)
    victim = cluster.node_ids[2]
    future = start(pool, hub, "hf://org/peerloss", "/models/peerloss")
    wait_until("the victim to hold pieces",
               lambda: (j := running_job("hf://org/peerloss")()) and j["received"].get(victim))
    ray.kill(ray.get_actor(f"raydf-peer-{victim}", namespace=NAMESPACE))
    report = future.result(timeout=300)
    by_node = {n.node_id: n for n in report.nodes}
    assert not report.ok and not by_node[victim].ok and "lost" in (by_node[victim].error or "")
    for node in cluster.node_ids:
        if node != victim:
            assert by_node[node].ok
            assert files_of(cluster.path_on(node, "/models/peerloss")) == files_of(src)
    first = hub.stats()["download_bytes"]
    # The seed keeps a piece until two peers hold it: losing one peer costs nothing.
    # (Small files another test already brought may come from the nodes' caches.)
    assert SHARD <= first <= repo_bytes(src)
    record("PeerActor killed mid-fan-out", "3 of 4 nodes complete, the lost one named",
           first, repo_bytes(src))
    hub.reset_stats()
    again = raydf.fanout("hf://org/peerloss", "/models/peerloss", hf_endpoint=hub.hf_endpoint)
    assert again.ok and hub.stats()["download_bytes"] == 0
    assert files_of(cluster.path_on(victim, "/models/peerloss")) == files_of(src)
    record("re-run after a lost peer", "4 of 4 (the lost node from peers)", 0, repo_bytes(src))


def test_a_killed_seed_is_replaced_and_the_fanout_completes(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
    slow_origin: None, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/seedloss", shard_sizes=[SHARD], seed=32)
    future = start(pool, hub, "hf://org/seedloss", "/models/seedloss")
    wait_until("pieces on some node",
               lambda: (j := running_job("hf://org/seedloss")()) and any(j["received"].values()))
    seeds = [name for name, serving in seed_actors().items() if serving]
    assert len(seeds) == 1
    ray.kill(ray.get_actor(seeds[0], namespace=NAMESPACE))
    report = future.result(timeout=300)
    assert report.ok, report.nodes
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/seedloss")) == files_of(src)
    assert hub.stats()["download_bytes"] <= repo_bytes(src) + IN_FLIGHT
    record("seed killed mid-fan-out", "4 of 4, a new seed took over",
           hub.stats()["download_bytes"], repo_bytes(src))


def test_a_killed_scheduler_is_a_clear_error_and_a_rerun_resumes(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
    slow_origin: None, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/schedloss", shard_sizes=[SHARD], seed=33)
    future = start(pool, hub, "hf://org/schedloss", "/models/schedloss")
    job = wait_until("a quarter of the shard on the nodes",
                     lambda: (j := running_job("hf://org/schedloss")())
                     and sum(j["received"].values()) >= SHARD)
    assert job
    ray.kill(ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE))
    with pytest.raises(FanoutError, match="scheduler died"):
        future.result(timeout=300)
    first = hub.stats()["download_bytes"]
    hub.reset_stats()
    again = raydf.fanout("hf://org/schedloss", "/models/schedloss", hf_endpoint=hub.hf_endpoint)
    assert again.ok, again.nodes
    assert hub.stats()["download_bytes"] < repo_bytes(src)  # what nodes had was kept
    assert first + hub.stats()["download_bytes"] <= repo_bytes(src) + IN_FLIGHT
    record("scheduler killed, then re-run", "clear error; the re-run completed 4 of 4",
           first + hub.stats()["download_bytes"], repo_bytes(src))
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/schedloss")) == files_of(src)
    # No job's seed is left; only the new scheduler's standby (no token).
    assert list(seed_actors().values()) == [False]


def test_a_corrupt_origin_byte_is_read_again_and_every_node_completes(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/corrupt", shard_sizes=[8 * MiB], seed=34)
    hub.reset_stats()
    hub.set_knobs(corrupt_next=1)  # whichever file's download comes first
    try:
        report = raydf.fanout("hf://org/corrupt", "/models/corrupt", hf_endpoint=hub.hf_endpoint)
    finally:
        hub.clear_knobs()
    # The seed caught the file's digest failing, read it again and the pieces
    # that differed were replaced on every holder.
    assert report.ok, report.nodes
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/corrupt")) == files_of(src)
        assert not list(cluster.node_root(node).rglob("*.partial"))
    largest = max(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert hub.stats()["download_bytes"] <= repo_bytes(src) + 2 * largest
    record("one corrupted origin byte", "read again by the seed, healed on 4 of 4",
           hub.stats()["download_bytes"], repo_bytes(src))


def test_origin_5xx_and_truncated_bodies_are_ridden_out(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/flaky", shard_sizes=[8 * MiB], seed=35)
    hub.reset_stats()
    hub.set_knobs(fail_next=2, fail_status=503)
    hub.set_knobs(truncate_next=1)
    try:
        report = raydf.fanout("hf://org/flaky", "/models/flaky", hf_endpoint=hub.hf_endpoint)
    finally:
        hub.clear_knobs()
    assert report.ok, report.nodes
    assert hub.stats()["status_counts"].get("503") == 2
    record("two 503s and a truncated body", "4 of 4, retried with backoff",
           hub.stats()["download_bytes"], repo_bytes(src))
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/flaky")) == files_of(src)


def test_two_fanouts_of_one_repo_at_once_share_one_origin_read_and_two_repos_both_finish(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
    record: Callable[..., None],
) -> None:
    one = make_model(hub_root, "org/same", shard_sizes=[12 * MiB], seed=36)
    other = make_model(hub_root, "org/other", shard_sizes=[12 * MiB], seed=37)
    hub.reset_stats()
    runs = [start(pool, hub, "hf://org/same", "/models/same"),
            start(pool, hub, "hf://org/same", "/models/same"),
            start(pool, hub, "hf://org/other", "/models/other")]
    reports = [r.result(timeout=300) for r in runs]
    assert all(r.ok for r in reports), [r.nodes for r in reports if not r.ok]
    assert reports[0].job_id == reports[1].job_id != reports[2].job_id
    # Without sharing the "same" repo would have cost twice; the small files the
    # two repos have in common may travel once or twice (separate jobs).
    assert repo_bytes(one) < hub.stats()["download_bytes"] <= repo_bytes(one) + repo_bytes(other)
    record("same repo twice + another repo, at once", "all 3 complete, the same repo shared",
           hub.stats()["download_bytes"], 2 * repo_bytes(one) + repo_bytes(other))
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/same")) == files_of(one)
        assert files_of(cluster.path_on(node, "/models/other")) == files_of(other)


def test_two_repos_sharing_a_shard_fanned_out_at_once_both_finish(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
    slow_origin: None, record: Callable[..., None],
) -> None:
    # Same seed, same shard: one file content that two jobs assemble on each node
    # at once (one assembly per node, fed by both jobs' transfers).
    twin_a = make_model(hub_root, "org/twin-a", shard_sizes=[SHARD], seed=39)
    twin_b = make_model(hub_root, "org/twin-b", shard_sizes=[SHARD], seed=39)
    shard = "model-00001-of-00001.safetensors"
    assert (twin_a / shard).read_bytes() == (twin_b / shard).read_bytes()
    runs = [start(pool, hub, "hf://org/twin-a", "/models/twin-a"),
            start(pool, hub, "hf://org/twin-b", "/models/twin-b")]
    reports = [r.result(timeout=300) for r in runs]
    assert all(r.ok for r in reports), [r.nodes for r in reports if not r.ok]
    assert reports[0].job_id != reports[1].job_id
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/twin-a")) == files_of(twin_a)
        assert files_of(cluster.path_on(node, "/models/twin-b")) == files_of(twin_b)
        assert not list(cluster.node_root(node).rglob("*.partial"))
    # Separate jobs: the shared shard may come from the origin once or twice.
    assert hub.stats()["download_bytes"] <= repo_bytes(twin_a) + repo_bytes(twin_b)
    record("two repos sharing a shard, at once", "both complete on 4 of 4",
           hub.stats()["download_bytes"], repo_bytes(twin_a) + repo_bytes(twin_b))


def test_a_removed_node_is_named_and_the_others_finish(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
    slow_origin: None, record: Callable[..., None],
) -> None:
    # Last in this module: the cluster has one node fewer afterwards.
    src = make_model(hub_root, "org/nodeloss", shard_sizes=[SHARD], seed=38)
    victim = cluster.node_ids[3]
    future = start(pool, hub, "hf://org/nodeloss", "/models/nodeloss")
    wait_until("the victim to hold pieces",
               lambda: (j := running_job("hf://org/nodeloss")()) and j["received"].get(victim))
    cluster.remove_node(victim)
    report = future.result(timeout=300)
    by_node = {n.node_id: n for n in report.nodes}
    assert not by_node[victim].ok and by_node[victim].error
    for node in cluster.node_ids:
        if node != victim:
            assert by_node[node].ok, by_node[node]
            assert files_of(cluster.path_on(node, "/models/nodeloss")) == files_of(src)
    assert SHARD <= hub.stats()["download_bytes"] <= repo_bytes(src)
    record("a whole node removed mid-fan-out", "3 of 4 complete, the lost one named",
           hub.stats()["download_bytes"], repo_bytes(src))
