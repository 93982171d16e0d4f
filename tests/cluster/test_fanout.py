"""The P2P engine on a real 4-node Ray cluster, with the hub emulator as origin."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import raydf
from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME
from raydf.testing.cluster import LocalCluster, burn_cpu, wait_until
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def alpha(hub_root: Path) -> Path:
    return make_model(hub_root, "org/alpha", shard_sizes=[24 * MiB, 9 * MiB], seed=1)


@pytest.fixture(scope="module")
def alpha_report(cluster: LocalCluster, hub: HubEmulator, alpha: Path) -> tuple[raydf.Report, dict]:
    hub.reset_stats()
    report = raydf.fanout("hf://org/alpha", "/models/alpha", hf_endpoint=hub.hf_endpoint)
    return report, hub.stats()


def test_every_node_ends_with_byte_identical_verified_files(
    cluster: LocalCluster, alpha: Path, alpha_report: tuple[raydf.Report, dict]
) -> None:
    report, _ = alpha_report
    assert report.ok, report.nodes
    assert sorted(n.node_id for n in report.nodes) == sorted(cluster.node_ids)
    expected = _files(alpha)
    for node in cluster.node_ids:
        assert _files(cluster.path_on(node, "/models/alpha")) == expected
        assert not list(cluster.node_root(node).rglob("*.partial"))


def test_origin_bytes_equal_repo_bytes_and_no_token_reaches_the_cdn(
    alpha: Path, alpha_report: tuple[raydf.Report, dict]
) -> None:
    report, stats = alpha_report
    assert stats["download_bytes"] == _repo_bytes(alpha) == report.bytes
    assert report.origin_bytes == report.bytes
    assert stats["by_listener"]["cdn"]["requests"] > 0  # LFS shards came via the CDN
    assert stats["cdn_authorization_headers"] == 0


def test_peers_serve_each_other_a_measurable_share(
    alpha_report: tuple[raydf.Report, dict]
) -> None:
    report, _ = alpha_report
    by_peers = sum(b for holder, b in report.served.items() if holder != "seed")
    assert report.p2p_bytes == by_peers
    # 4 nodes received 4x the repo; the seed sent at most what peers did not.
    assert sum(report.served.values()) == 4 * report.bytes
    assert by_peers >= 0.25 * sum(report.served.values())


def test_origin_requests_are_the_same_for_one_node_and_four(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    make_model(hub_root, "org/count", shard_sizes=[12 * MiB, 5 * MiB], seed=21)
    runs = []
    for name, nodes in (("one", "raydf/sim-node=0"), ("four", "auto")):
        cluster.clear_caches()  # both runs start cold
        hub.reset_stats()
        report = raydf.fanout("hf://org/count", f"/models/count-{name}", nodes=nodes,
                              hf_endpoint=hub.hf_endpoint)
        assert report.ok
        runs.append((report, hub.stats()))
    (one, one_stats), (four, four_stats) = runs
    assert (len(one.nodes), len(four.nodes)) == (1, 4)
    assert one_stats["requests"] == four_stats["requests"], (one_stats, four_stats)
    assert one_stats["download_bytes"] == four_stats["download_bytes"] == four.bytes
    assert one.origin_requests == four.origin_requests == four_stats["requests"]


def test_peers_receive_pieces_while_the_seed_is_still_fetching_the_file(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    make_model(hub_root, "org/stream", shard_sizes=[32 * MiB], seed=3)
    hub.set_knobs(bandwidth=40e6)  # 0.8 s for the shard: the origin is the bottleneck
    try:
        report = raydf.fanout("hf://org/stream", "/models/stream", hf_endpoint=hub.hf_endpoint)
    finally:
        hub.clear_knobs()
    assert report.ok
    sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
    timeline = ray.get(sched.timeline.remote(report.job_id))
    shard_task = max({t for _, t, _ in timeline["origin"]},
                     key=lambda t: sum(1 for _, x, _ in timeline["origin"] if x == t))
    last_origin = max(t for t, task, _ in timeline["origin"] if task == shard_task)
    first_received = min(t for t, _, task, _ in timeline["received"] if task == shard_task)
    assert first_received < last_origin


def test_a_model_four_times_the_node_budget_completes(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    src = make_model(hub_root, "org/big", shard_sizes=[24 * MiB, 16 * MiB], seed=4)
    budget = 8 * MiB
    assert _repo_bytes(src) >= 4 * budget
    report = raydf.fanout("hf://org/big", "/models/big", memory_budget=budget,
                          hf_endpoint=hub.hf_endpoint)
    assert report.ok, report.nodes
    expected = _files(src)
    for node in cluster.node_ids:
        assert _files(cluster.path_on(node, "/models/big")) == expected
        peer = ray.get_actor(f"raydf-peer-{node}", namespace=NAMESPACE)
        snap = ray.get(peer.snapshot.remote())
        assert snap["budget"] == budget and snap["pinned_bytes"] <= budget


def test_a_rerun_costs_zero_origin_bytes(hub: HubEmulator, hub_root: Path) -> None:
    make_model(hub_root, "org/rerun", shard_sizes=[8 * MiB], seed=5)
    first = raydf.fanout("hf://org/rerun", "/models/rerun", hf_endpoint=hub.hf_endpoint)
    hub.reset_stats()
    again = raydf.fanout("hf://org/rerun", "/models/rerun-again", hf_endpoint=hub.hf_endpoint)
    assert first.ok and again.ok
    assert first.origin_bytes >= 8 * MiB  # the shard at least was new to the cluster
    assert again.origin_bytes == 0 and hub.stats()["download_bytes"] == 0


def test_the_same_files_from_the_other_hub_cost_zero_origin_bytes(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    src = make_model(hub_root, "org/twohubs", shard_sizes=[8 * MiB], seed=6)
    assert raydf.fanout("hf://org/twohubs", "/models/th-hf", hf_endpoint=hub.hf_endpoint).ok
    hub.reset_stats()
    report = raydf.fanout("modelscope://org/twohubs", "/models/th-ms",
                          ms_endpoint=hub.ms_endpoint)
    assert report.ok
    assert hub.stats()["download_bytes"] == 0
    for node in cluster.node_ids:
        assert _files(cluster.path_on(node, "/models/th-ms")) == _files(src)


def test_get_inside_a_ray_task_returns_the_path_on_that_node(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    src = make_model(hub_root, "org/serve", shard_sizes=[8 * MiB], seed=7)
    assert raydf.fanout("hf://org/serve", "/models/serve", hf_endpoint=hub.hf_endpoint).ok
    node = cluster.node_ids[1]

    @ray.remote(num_cpus=0)
    def load(endpoint: str) -> str:
        return raydf.get("hf://org/serve", "/models/serve-get", hf_endpoint=endpoint)

    hub.reset_stats()
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    path = ray.get(load.options(scheduling_strategy=strategy).remote(hub.hf_endpoint))
    assert Path(path) == cluster.path_on(node, "/models/serve-get")
    assert _files(Path(path)) == _files(src)
    assert hub.stats()["download_bytes"] == 0  # the node's cache had every file
    others = [n for n in cluster.node_ids if n != node]
    assert not any(cluster.path_on(n, "/models/serve-get").exists() for n in others)


def test_concurrent_gets_on_every_node_share_one_listing_and_one_origin_read(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, tmp_path: Path
) -> None:
    src = make_model(hub_root, "org/together", shard_sizes=[12 * MiB], seed=8)
    cluster.clear_caches()
    hub.reset_stats()

    @ray.remote(num_cpus=0)
    def load(endpoint: str) -> str:
        return raydf.get("hf://org/together", "/models/together", hf_endpoint=endpoint)

    refs = [load.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
            .remote(hub.hf_endpoint) for n in cluster.node_ids]
    paths = ray.get(refs)
    assert paths == [str(cluster.path_on(n, "/models/together")) for n in cluster.node_ids]
    for path in paths:
        assert _files(Path(path)) == _files(src)
    stats = hub.stats()
    assert stats["download_bytes"] == _repo_bytes(src)
    # Exactly what one plain download of the repo costs: one caller resolved
    # and listed, the others joined its job.
    assert stats["requests"] == _one_plain_download_requests(hub, tmp_path), stats


def _one_plain_download_requests(hub: HubEmulator, tmp_path: Path) -> int:
    from raydf.cache import NodeCache
    from raydf.local import download
    from raydf.options import make_request

    hub.reset_stats()
    request = make_request("hf://org/together", str(tmp_path / "plain"),
                           hub_options={"hf_endpoint": hub.hf_endpoint})
    backend = request.open_backend()
    try:
        plan = request.make_plan(backend)
        download(plan, backend, tmp_path / "plain", NodeCache(tmp_path / "cache"))
    finally:
        backend.close()
    return int(hub.stats()["requests"])



@ray.remote(num_cpus=0)
class _Burner:
    def burn(self, seconds: float) -> float:
        return burn_cpu(seconds)


def test_the_cpu_meter_counts_workers_on_every_node_even_once_they_exited(
    cluster: LocalCluster,
) -> None:
    """What the benchmarks charge a run (CPU s per delivered GB): an actor on a
    simulated node burns CPU and is killed before the meter stops; its CPU counts."""
    node = cluster.node_ids[-1]
    with cluster.cpu_meter() as meter:
        burner = _Burner.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        spent = ray.get(burner.burn.remote(0.5))
        seen = meter.samples
        wait_until("the meter to sample the burnt CPU", lambda: meter.samples > seen)
        ray.kill(burner)
    assert meter.seconds >= spent >= 0.5
