"""Trust on a real 4-node cluster: who may receive bytes, and bad bytes that heal.

* Access per caller: bytes of a gated or private repo reach a caller only after
  the hub accepted that caller's own token, wherever they come from (the nodes'
  caches, another job's assembly in flight).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import ray

import raydf
from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME
from raydf.errors import GatedRepoError, HubError, RepoNotFound
from raydf.testing.cluster import LocalCluster, wait_until
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta

MiB = 2**20
ALICE = "hf_alice_approved_token_0001"  # approved for gated repos
BOB = "hf_bob_not_approved_token_0002"  # a valid token whose user is not approved
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def hub(hub_root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(hub_root, tokens={ALICE: "alice", BOB: "bob"},
                     approved={"alice"}) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def nothing_at(cluster: LocalCluster, dest: str) -> bool:
    return all(not any(cluster.path_on(n, dest).rglob("*")) for n in cluster.node_ids
               if cluster.path_on(n, dest).exists())


def running_job(url: str) -> dict[str, Any] | None:
    try:
        sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
        jobs = ray.get(sched.snapshot.remote())["jobs"].values()
    except (ValueError, ray.exceptions.RayActorError):
        return None
    return next((j for j in jobs if j["url"] == url and not j["done"]), None)


def cli_exit(cluster: LocalCluster, hub: HubEmulator, url: str, dest: str,
             *token: str) -> tuple[int, str]:
    args = [str(BIN / "raydf"), "get", url, "-O", dest, "-r", "--address",
            str(cluster.address), "--no-progress", "--hf-endpoint", hub.hf_endpoint]
    if token:
        args += ["--hf-token", token[0]]
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    return done.returncode, done.stderr


def test_a_gated_repo_in_the_nodes_caches_reaches_no_caller_the_hub_refuses(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    src = make_model(hub_root, "org/gated-cached", shard_sizes=[4 * MiB], seed=61)
    write_repo_meta(hub_root, "org/gated-cached", gated="manual")
    url = "hf://org/gated-cached"
    report = raydf.fanout(url, "/models/gated-a", hf_endpoint=hub.hf_endpoint, hf_token=ALICE)
    assert report.ok, report.nodes
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/gated-a")) == files_of(src)
    hub.reset_stats()
    with pytest.raises(GatedRepoError, match="gated"):
        raydf.fanout(url, "/models/gated-anon", hf_endpoint=hub.hf_endpoint, hf_token="")
    with pytest.raises(GatedRepoError, match="no access yet"):
        raydf.fanout(url, "/models/gated-bob", hf_endpoint=hub.hf_endpoint, hf_token=BOB)
    code, err = cli_exit(cluster, hub, url, "/models/gated-cli", BOB)
    assert code == 3, err
    assert "gated" in err and BOB not in err
    for dest in ("/models/gated-anon", "/models/gated-bob", "/models/gated-cli"):
        assert nothing_at(cluster, dest), dest
    # The hub was asked, and refused: no file content went out.
    assert hub.stats()["download_bytes"] == 0
    assert hub.stats()["status_counts"].get("401", 0) >= 1
    assert hub.stats()["status_counts"].get("403", 0) >= 2


def test_a_private_repo_in_the_nodes_caches_reaches_no_anonymous_caller(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    make_model(hub_root, "org/private-cached", shard_sizes=[4 * MiB], seed=62)
    write_repo_meta(hub_root, "org/private-cached", private=True)
    url = "hf://org/private-cached"
    report = raydf.fanout(url, "/models/private-a", hf_endpoint=hub.hf_endpoint, hf_token=BOB)
    assert report.ok, report.nodes
    with pytest.raises(RepoNotFound):
        raydf.fanout(url, "/models/private-anon", hf_endpoint=hub.hf_endpoint, hf_token="")
    assert nothing_at(cluster, "/models/private-anon")


def test_a_gated_repo_in_flight_for_an_approved_caller_reaches_no_refused_caller(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, pool: ThreadPoolExecutor,
) -> None:
    src = make_model(hub_root, "org/gated-flight", shard_sizes=[48 * MiB], seed=63)
    write_repo_meta(hub_root, "org/gated-flight", gated="manual")
    url = "hf://org/gated-flight"
    hub.set_knobs(bandwidth=8e6)
    try:
        first = pool.submit(raydf.fanout, url, "/models/flight-a", hf_endpoint=hub.hf_endpoint,
                            hf_token=ALICE)
        wait_until("the approved caller's job to have pieces on a node",
                   lambda: (j := running_job(url)) and any(j["received"].values()))
        for token in ("", BOB):
            with pytest.raises(HubError, match="gated"):
                raydf.fanout(url, f"/models/flight-{token or 'anon'}",
                             hf_endpoint=hub.hf_endpoint, hf_token=token)
        still_running = running_job(url) is not None
        report = first.result(timeout=300)
    finally:
        hub.clear_knobs()
    assert still_running, "the refused callers must have asked while the first job ran"
    assert report.ok, report.nodes
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/flight-a")) == files_of(src)
    assert nothing_at(cluster, "/models/flight-anon")
    assert nothing_at(cluster, f"/models/flight-{BOB}")
