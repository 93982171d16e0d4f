"""Exit 0 means every file is on every node: the cases that used to break it.

Each test is a case a platform engineer meets on day one (an empty file, a
folder in the way, a long name, many jobs at once, two revisions into one
folder, a caller that dies, Ctrl-C and re-run), run on a real 2-node cluster
against the hub emulator.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import ray

import raydf
from raydf.backends.base import RemoteFile
from raydf.cluster.handles import PeerHandle
from raydf.cluster.peer import CALL_THREADS, PULL_THREADS
from raydf.cluster.protocol import PeerJoin, Pull, PullBatch, PullFailed, Received
from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME, peer_for, scheduler
from raydf.cluster.spec import TaskSpec
from raydf.errors import RaydfError
from raydf.testing.cluster import LocalCluster, wait_until
from raydf.testing.faults import StalledLender
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta

pytestmark = pytest.mark.cluster

MiB = 2**20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(2, root=tmp_path_factory.mktemp("nodes")) as c:
        yield c


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub")


@pytest.fixture(scope="module")
def hub(hub_root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(hub_root) as emulator:
        yield emulator


@pytest.fixture
def slow_origin(hub: HubEmulator) -> Iterator[None]:
    hub.reset_stats()
    hub.set_knobs(bandwidth=20e6)
    yield
    hub.clear_knobs()


def repo(hub_root: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    folder = hub_root / "models" / repo_id
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def job_of(url: str) -> dict[str, Any] | None:
    """The scheduler's status of the newest job for ``url`` (None if there is none)."""
    try:
        sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
        jobs = list(ray.get(sched.snapshot.remote())["jobs"].values())
    except (ValueError, ray.exceptions.RayActorError):
        return None
    mine = [j for j in jobs if j["url"] == url]
    return mine[-1] if mine else None


def cli(cluster: LocalCluster, hub: HubEmulator, *args: str) -> subprocess.Popen[str]:
    """``raydf get`` in its own process (a real caller that can be killed)."""
    env = {**os.environ, "HF_ENDPOINT": hub.hf_endpoint}
    return subprocess.Popen(
        [sys.executable, "-m", "raydf.cli", "get", *args, "--address", str(cluster.address),
         "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )


def test_a_repo_with_an_empty_file_reaches_every_node(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    src = repo(hub_root, "org/empty", {"__init__.py": b"", "config.json": b'{"a": 1}',
                                       "sub/.gitkeep": b""})
    report = raydf.fanout("hf://org/empty", "/models/empty", hf_endpoint=hub.hf_endpoint)
    assert report.ok, [n.error for n in report.nodes]
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/empty")) == files_of(src)


def test_a_folder_in_the_way_of_one_file_fails_that_node_and_names_the_path(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    src = repo(hub_root, "org/blocked", {"config.json": b'{"b": 2}', "weights.bin": os.urandom(MiB)})
    blocked, free = cluster.node_ids
    (cluster.path_on(blocked, "/models/blocked") / "weights.bin" / "x").mkdir(parents=True)
    report = raydf.fanout("hf://org/blocked", "/models/blocked", hf_endpoint=hub.hf_endpoint)
    by_node = {n.node_id: n for n in report.nodes}
    assert not report.ok
    assert not by_node[blocked].ok and "weights.bin" in (by_node[blocked].error or "")
    assert by_node[free].ok
    assert files_of(cluster.path_on(free, "/models/blocked")) == files_of(src)


def test_a_file_name_near_255_bytes_is_placed_on_every_node(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    long_name = "n" * 245 + ".json"  # 250 bytes: fits, but not with a suffix of 8 more
    src = repo(hub_root, "org/longname", {long_name: b'{"c": 3}', "other.bin": os.urandom(4096)})
    report = raydf.fanout("hf://org/longname", "/models/longname", hf_endpoint=hub.hf_endpoint)
    assert report.ok, [n.error for n in report.nodes]
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/longname")) == files_of(src)


def test_ten_different_jobs_at_once_on_two_nodes_all_complete(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    sources = {i: make_model(hub_root, f"org/many{i}", shard_sizes=[8 * MiB], seed=100 + i)
               for i in range(10)}
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = {i: pool.submit(raydf.fanout, f"hf://org/many{i}", f"/models/many{i}",
                                  hf_endpoint=hub.hf_endpoint) for i in sources}
        reports = {i: f.result(timeout=600) for i, f in futures.items()}
    for i, report in reports.items():
        assert report.ok, (i, [n.error for n in report.nodes])
        for node in cluster.node_ids:
            assert files_of(cluster.path_on(node, f"/models/many{i}")) == files_of(sources[i])


def test_a_peer_whose_every_thread_waits_on_a_stalled_holder_still_lends(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    """Many jobs at once can make every call thread of every peer a pull waiting
    on another peer's lend. Here node b's peer has every call thread (and every
    pull thread) taken by pulls whose bytes do not come; node a then pulls from
    b, and must get its piece: lends have threads of their own. (When lends
    shared the call threads, a's lend waited out LEND_TIMEOUT and the pull failed.)"""
    src = repo(hub_root, "org/lendfree", {"w.bin": os.urandom(MiB)})
    a, b = cluster.node_ids
    first = raydf.fanout("hf://org/lendfree", "/models/lendfree", hf_endpoint=hub.hf_endpoint,
                         nodes="raydf/sim-node=1")
    assert [n.node_id for n in first.nodes if n.ok] == [b], [n.error for n in first.nodes]
    _, tasks = ray.get(scheduler().job_plan(first.job_id))
    peer_a, peer_b = PeerHandle(peer_for(a)), PeerHandle(peer_for(b))
    lend_job, stalled_job = "lend-free-test", "stalled-test"
    busy = CALL_THREADS + 4  # more pulls than b has threads for them
    never = RemoteFile("never.bin", "never.bin", busy * 1024, sha256="0" * 64)
    blocked = TaskSpec("never", never, ("never.bin",), 1024)
    stalled = StalledLender.remote()
    ray.get(peer_b.offer(PeerJoin(lend_job, tuple(tasks))))
    ray.get(peer_a.prepare(PeerJoin(lend_job, tuple(tasks), "/models/lendfree-a")))
    ray.get(peer_b.prepare(PeerJoin(stalled_job, (blocked,))))
    waiting = [peer_b.pull_batch(PullBatch(stalled_job, (Pull("never", i, None, "stalled"),),
                                           {"stalled": PeerHandle(stalled)}))
               for i in range(busy)]
    try:
        wait_until("every pull thread of b to wait on the stalled bytes",
                   lambda: ray.get(stalled.waiting.remote()) >= PULL_THREADS)
        pulls = tuple(Pull(t.task_id, i, None, b) for t in tasks for i in range(t.num_pieces))
        outcomes = ray.get(peer_a.pull_batch(PullBatch(lend_job, pulls, {b: peer_b})),
                           timeout=300)
        assert all(isinstance(o, Received) for o in outcomes), outcomes
        assert files_of(cluster.path_on(a, "/models/lendfree-a")) == files_of(src)
    finally:
        ray.get(stalled.open.remote())
        gave_up = [o for batch in ray.get(waiting, timeout=300) for o in batch]
        for peer, job, discard in ((peer_a, lend_job, []), (peer_b, lend_job, []),
                                   (peer_b, stalled_job, ["never"])):
            ray.get(peer.finish_job(job, discard))
    assert len(gave_up) == busy and all(isinstance(o, PullFailed) for o in gave_up), gave_up


def test_a_second_revision_into_a_destination_being_written_is_refused_never_mixed(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, slow_origin: None,
) -> None:
    main = make_model(hub_root, "org/tworev", shard_sizes=[32 * MiB], seed=7)
    make_model(hub_root, "org/tworev@v2", shard_sizes=[32 * MiB], seed=8)
    write_repo_meta(hub_root, "org/tworev", branches={"v2": "tworev@v2"})
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(raydf.fanout, "hf://org/tworev", "/models/tworev",
                            hf_endpoint=hub.hf_endpoint)
        wait_until("the first job to run",
                   lambda: (j := job_of("hf://org/tworev")) and any(j["received"].values()))
        with pytest.raises(RaydfError, match="/models/tworev"):
            raydf.fanout("hf://org/tworev", "/models/tworev", hf_endpoint=hub.hf_endpoint,
                         hf_revision="v2")
        assert first.result(timeout=300).ok
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/tworev")) == files_of(main)


@pytest.fixture
def slower_origin(hub: HubEmulator) -> Iterator[None]:
    """Slow enough that a 128 MiB job outlasts a caller's lease by far."""
    hub.reset_stats()
    hub.set_knobs(bandwidth=4e6)
    yield
    hub.clear_knobs()


def test_a_caller_killed_with_sigkill_cancels_its_job_within_seconds(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, slower_origin: None,
) -> None:
    make_model(hub_root, "org/orphan", shard_sizes=[128 * MiB], seed=9)
    caller = cli(cluster, hub, "hf://org/orphan", "-O", "/models/orphan", "-r")
    wait_until("the job to receive pieces",
               lambda: (j := job_of("hf://org/orphan")) and any(j["received"].values()))
    os.killpg(caller.pid, signal.SIGKILL)
    caller.wait()
    job = wait_until("the scheduler to close the orphaned job",
                     lambda: (j := job_of("hf://org/orphan")) and j["done"] and j, timeout=60)
    assert job["done"]
    read = hub.stats()["download_bytes"]
    assert read < 128 * MiB  # it stopped reading the origin, not ran to the end
    for node in cluster.node_ids:
        assert not (cluster.path_on(node, "/models/orphan") / "model-00001-of-00001.safetensors").exists()


def test_sigterm_to_raydf_get_cancels_the_transfer_and_exits_143(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, slower_origin: None,
) -> None:
    make_model(hub_root, "org/termed", shard_sizes=[128 * MiB], seed=10)
    caller = cli(cluster, hub, "hf://org/termed", "-O", "/models/termed", "-r")
    wait_until("the job to receive pieces",
               lambda: (j := job_of("hf://org/termed")) and any(j["received"].values()))
    caller.send_signal(signal.SIGTERM)
    _, err = caller.communicate(timeout=60)
    assert caller.returncode == 143 and "terminated" in err, err
    job = wait_until("the job to close", lambda: (j := job_of("hf://org/termed")) and j["done"] and j,
                     timeout=60)
    assert job["done"] and hub.stats()["download_bytes"] < 128 * MiB
    for node in cluster.node_ids:
        assert not (cluster.path_on(node, "/models/termed") / "model-00001-of-00001.safetensors").exists()


def test_interrupted_at_half_a_rerun_reads_the_origin_at_most_1_15_times_the_repo(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, slower_origin: None,
) -> None:
    # Slow enough that the shard is still incomplete on the nodes when the
    # cancelled job closes: the re-run must resume from the pieces they kept.
    src = make_model(hub_root, "org/resume", shard_sizes=[128 * MiB], seed=11)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    caller = cli(cluster, hub, "hf://org/resume", "-O", "/models/resume", "-r")
    wait_until("every node to hold half of the repo",
               lambda: (j := job_of("hf://org/resume")) and len(j["received"]) == 2
               and min(j["received"].values()) >= size // 2, timeout=120)
    caller.send_signal(signal.SIGINT)
    _, err = caller.communicate(timeout=60)
    assert caller.returncode == 130, err
    closed = wait_until("the interrupted job to close",
                        lambda: (j := job_of("hf://org/resume")) and j["done"] and j)
    assert min(closed["received"].values()) < size  # not complete: what was kept must be reused
    again = raydf.fanout("hf://org/resume", "/models/resume", hf_endpoint=hub.hf_endpoint)
    assert again.ok
    assert hub.stats()["download_bytes"] <= 1.15 * size
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/resume")) == files_of(src)


def peer_snapshots(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    return {n: ray.get(ray.get_actor(f"raydf-peer-{n}", namespace=NAMESPACE).snapshot.remote())
            for n in cluster.node_ids}


def test_peers_drop_the_jobs_of_a_scheduler_that_died_and_gc_is_not_busy_for_ever(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, slower_origin: None,
) -> None:
    make_model(hub_root, "org/schedlost", shard_sizes=[64 * MiB], seed=12)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(raydf.fanout, "hf://org/schedlost", "/models/schedlost",
                             hf_endpoint=hub.hf_endpoint)
        running = wait_until("the job to receive pieces",
                             lambda: (j := job_of("hf://org/schedlost")) and any(j["received"].values())
                             and j)
        ray.kill(ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE))
        with pytest.raises(RaydfError, match="scheduler died"):
            future.result(timeout=120)
    assert all(running["job_id"] in s["jobs"] for s in peer_snapshots(cluster).values())
    # No new job has come: `raydf cache gc` must still not find the dead job's files busy.
    from raydf.admin import cache_command

    results = cache_command("gc", None, local=False)
    assert all("skipped_busy" not in r for node, r in results.items() if node in cluster.node_ids)
    assert all(running["job_id"] not in s["jobs"] for s in peer_snapshots(cluster).values())


def test_a_cache_folder_removed_under_running_peers_is_recreated_for_the_next_jobs(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    src = repo(hub_root, "org/cachegone", {"a.bin": os.urandom(3 * MiB), "b.json": b"{}"})
    first = raydf.fanout("hf://org/cachegone", "/models/cachegone", hf_endpoint=hub.hf_endpoint)
    assert first.ok
    for node in cluster.node_ids:
        shutil.rmtree(cluster.node_root(node) / "cache")
    other = repo(hub_root, "org/cachegone2", {"c.bin": os.urandom(2 * MiB)})
    after = raydf.fanout("hf://org/cachegone2", "/models/cachegone2", hf_endpoint=hub.hf_endpoint)
    again = raydf.fanout("hf://org/cachegone", "/models/cachegone-again", hf_endpoint=hub.hf_endpoint)
    assert after.ok, [n.error for n in after.nodes]
    assert again.ok, [n.error for n in again.nodes]
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/cachegone2")) == files_of(other)
        assert files_of(cluster.path_on(node, "/models/cachegone-again")) == files_of(src)


def test_a_full_disk_on_a_node_is_exit_5_before_the_transfer(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    repo(hub_root, "org/nospace", {"big.bin": os.urandom(8 * MiB), "small.json": b"{}"})
    full = cluster.node_ids[0]
    cache = cluster.node_root(full) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(cache)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        caller = cli(cluster, hub, "hf://org/nospace", "-O", "/models/nospace", "-r")
        _, err = caller.communicate(timeout=300)
        assert caller.returncode == 5, err
        assert "no space left" in err
        assert not list(cache.rglob("*.partial"))
        assert not (cluster.path_on(full, "/models/nospace") / "big.bin").exists()
    finally:
        subprocess.run(["umount", str(cache)], check=True)


def test_a_rerun_right_after_a_node_died_skips_it_with_one_clear_line(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    # Last in this module: it removes a node of the shared cluster.
    src = repo(hub_root, "org/nodegone", {"w.bin": os.urandom(2 * MiB), "c.json": b"{}"})
    assert raydf.fanout("hf://org/nodegone", "/models/nodegone", hf_endpoint=hub.hf_endpoint).ok
    alive, gone = cluster.node_ids
    cluster.remove_node(gone)
    caller = cli(cluster, hub, "hf://org/nodegone", "-O", "/models/nodegone-2", "-r", "--nodes", "all")
    _, err = caller.communicate(timeout=300)
    assert caller.returncode == 0, err
    assert "RpcError" not in err and "Traceback" not in err
    assert f"node {gone[:12]} left the cluster" in err
    assert files_of(cluster.path_on(alive, "/models/nodegone-2")) == files_of(src)
