"""Usage-based warming on a real cluster: the scheduler records what jobs ask
for, ``raydf warm --auto`` warms the most requested, and ``--follow`` gives a
node that joins the cluster those repos from its peers, costing the hub nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import raydf
from raydf.testing.cluster import LocalCluster, wait_until
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta
from raydf.warming import Warmed, follow, recorded, warm_auto

pytestmark = pytest.mark.cluster

MiB = 2**20
TOKEN = "hf_secret_token_1234"  # alice's, in the conftest's hub
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(2, root=tmp_path_factory.mktemp("nodes")) as c:
        yield c


@pytest.fixture(scope="module")
def repos(hub_root: Path) -> dict[str, Path]:
    made = {
        "popular": make_model(hub_root, "org/popular", shard_sizes=[4 * MiB, 2 * MiB], seed=61),
        "rare": make_model(hub_root, "org/rare", shard_sizes=[MiB], seed=62),
        "secret": make_model(hub_root, "org/secret", shard_sizes=[MiB], seed=63),
    }
    write_repo_meta(hub_root, "org/secret", private=True)
    return made


def digests(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def cached(cluster: LocalCluster, node: str, repo: Path) -> bool:
    """Whether ``node``'s cache holds every file of ``repo``, byte for byte."""
    return digests(repo) <= digests(cluster.node_root(node) / "cache" / "blobs")


def get(cluster: LocalCluster, hub: HubEmulator, name: str, node: int, **options: str) -> None:
    report = raydf.fanout(f"hf://org/{name}", f"/models/{name}", nodes=f"raydf/sim-node={node}",
                          address=cluster.address, hf_endpoint=hub.hf_endpoint, **options)
    assert report.ok, [n.error for n in report.nodes]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """This test's environment without any Hugging Face token (no HF_TOKEN, no token file)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RAYDF_DEBUG")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "HF_HOME": str(tmp_path / "hf-home")}


def test_gets_are_recorded_and_warm_auto_top_1_fills_another_nodes_cache_from_peers(
    cluster: LocalCluster, hub: HubEmulator, repos: dict[str, Path]
) -> None:
    get(cluster, hub, "popular", 0)
    get(cluster, hub, "popular", 0)
    get(cluster, hub, "rare", 0)
    ranked = recorded(5)
    assert [(u.url, u.count, u.public) for u in ranked] == [
        ("hf://org/popular", 2, True), ("hf://org/rare", 1, True)]
    assert ranked[0].key.endpoint == hub.hf_endpoint and len(ranked[0].commit) == 40
    node1 = cluster.node_ids[1]
    assert not cached(cluster, node1, repos["popular"])

    (warmed,) = warm_auto(1, selector="raydf/sim-node=1")

    assert warmed.ok, warmed.line()
    assert cached(cluster, node1, repos["popular"])
    assert not cached(cluster, node1, repos["rare"])  # only the top 1
    assert not (cluster.path_on(node1, "/models/popular")).exists()  # cache only
    assert warmed.report is not None and warmed.report.origin_bytes == 0  # from node 0
    assert [u.count for u in recorded(5)] == [2, 1]  # an auto warm is not a request


def test_a_private_repo_without_a_token_is_skipped_with_a_line_and_exit_3(
    cluster: LocalCluster, hub: HubEmulator, repos: dict[str, Path], tmp_path: Path
) -> None:
    get(cluster, hub, "secret", 0, hf_token=TOKEN)
    node1 = cluster.node_ids[1]
    command = [sys.executable, "-m", "raydf.cli", "warm", "--auto", "--top", "3", "--nodes",
               "raydf/sim-node=1", "--address", str(cluster.address), "--no-progress"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=cli_env(tmp_path))

    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    (skipped,) = [line for line in lines if "org/secret" in line]
    assert skipped.startswith("raydf: error: hf://org/secret@")
    assert "pass --hf-token" in skipped and "HF_TOKEN" in skipped and "skipped" in skipped
    assert sum("org/popular@" in line or "org/rare@" in line for line in lines) == 2
    assert cached(cluster, node1, repos["rare"])
    assert not cached(cluster, node1, repos["secret"])

    again = subprocess.run([*command, "--hf-token", TOKEN], capture_output=True, text=True,
                           timeout=300, env=cli_env(tmp_path))

    assert again.returncode == 0, again.stderr
    assert cached(cluster, node1, repos["secret"])
    assert TOKEN not in again.stderr + again.stdout


def test_follow_warms_a_joining_node_from_its_peers_without_a_hub_request(
    cluster: LocalCluster, hub: HubEmulator, repos: dict[str, Path]
) -> None:
    # A token of its own, so no job before this one shares its fingerprint (the
    # scheduler reuses a listing for the same request within RELIST_AFTER): a
    # public repo is planned from the recorded listing whatever the token.
    token = "hf_follow_token_0003"
    hub.tokens[token] = "alice"
    stop, watching = threading.Event(), threading.Event()
    warmed: list[tuple[str, list[Warmed]]] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            follow(stop, 1, every=0.5, tokens={"hf_token": token},
                   watching=lambda nodes: watching.set(),
                   on_node=lambda node, results: warmed.append((node, results)))
        except BaseException as exc:
            failed.append(exc)
            watching.set()

    thread = threading.Thread(target=run, name="follow", daemon=True)
    thread.start()
    try:
        assert watching.wait(60) and not failed, failed
        hub.reset_stats()
        new = cluster.add_node()
        wait_until("the follower to warm the new node", lambda: warmed or failed, timeout=240)
    finally:
        stop.set()
        thread.join(60)
    assert not failed, failed
    ((node, (result,)),) = warmed
    assert node == new
    assert result.ok and result.usage.url == "hf://org/popular", result.line()
    assert cached(cluster, new, repos["popular"])
    stats = hub.stats()
    assert (stats["requests"], stats["bytes"], stats["download_bytes"]) == (0, 0, 0), stats
    report = result.report
    assert report is not None
    assert (report.origin_bytes, report.origin_requests) == (0, 0)
    assert report.p2p_bytes == report.bytes == sum(
        p.stat().st_size for p in repos["popular"].rglob("*") if p.is_file())


def test_the_follow_command_warms_a_joining_node_and_stops_on_sigterm(
    cluster: LocalCluster, hub: HubEmulator, repos: dict[str, Path], tmp_path: Path
) -> None:
    hub.tokens["hf_cli_follow_token_0004"] = "alice"  # a fingerprint of its own (see above)
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raydf.cli", "warm", "--auto", "--follow", "--top", "1",
             "--address", str(cluster.address), "--no-progress",
             "--hf-token", "hf_cli_follow_token_0004"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=cli_env(tmp_path))
        try:
            wait_until("the follower to watch", lambda: "raydf: following" in err.read_text(),
                       timeout=120)
            hub.reset_stats()
            new = cluster.add_node()
            wait_until("the follower to warm the new node",
                       lambda: f"node {new[:12]} joined" in err.read_text(), timeout=240)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
    text = err.read_text()
    assert proc.returncode == 143, text
    assert f"node {new[:12]} joined: warmed 1/1 repos: hf://org/popular@" in text, text
    assert "Traceback" not in text and out == ""
    assert cached(cluster, new, repos["popular"])
    assert hub.stats()["requests"] == 0
