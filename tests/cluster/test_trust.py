"""Trust on a real 4-node cluster: who may receive bytes, and bad bytes that heal.

* Access per caller: bytes of a gated or private repo reach a caller only after
  the hub accepted that caller's own token, wherever they come from (the nodes'
  caches, another job's assembly in flight).
* A cache that cannot lie: a blob changed after it was verified (a same-size
  write through a hard-linked destination) is hashed again, dropped, and the
  file comes from a good peer; it is never placed or served as good.
* Corruption heals: a file the origin sent bad bytes for is read again by the
  seed, the pieces that differ are replaced on every holder and the job
  completes; a file that stays bad is placed nowhere (exit 4), the rest is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import ray

import raydf
from raydf.api import run_fanout
from raydf.cache import NodeCache
from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME
from raydf.errors import GatedRepoError, HubError, RepoNotFound
from raydf.options import make_request
from raydf.pieces import piece_length
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
def record() -> Iterator[Callable[..., None]]:
    """With RAYDF_RELIABILITY_REPORT set, append this module's rows to the table
    tests/cluster/test_faults.py writes there (run them in one pytest call)."""
    rows: list[str] = []

    def add(fault: str, outcome: str, origin: int, repo: int) -> None:
        rows.append(f"| {fault} | {outcome} | {origin / MiB:.1f} MiB | {repo / MiB:.1f} MiB | "
                    f"{origin / repo:.2f} |")

    yield add
    target = os.environ.get("RAYDF_RELIABILITY_REPORT")
    if target and rows:
        with open(target, "a") as out:
            out.write("\n".join(rows) + "\n")


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


def fan_ok(hub: HubEmulator, url: str, dest: str, nodes: list[str]) -> None:
    """Fan ``url`` out to ``nodes``; every node must succeed."""
    request = make_request(url, dest, hub_options={"hf_endpoint": hub.hf_endpoint})
    report = run_fanout(request, nodes)
    assert report.ok, [n.error for n in report.nodes if not n.ok]


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
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
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
    record("gated repo in the nodes' caches; no token, unapproved token, CLI",
           "all 3 refused (exit 3), nothing at their destinations",
           hub.stats()["download_bytes"], repo_bytes(src))


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
    record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/gated-flight", shard_sizes=[48 * MiB], seed=63)
    write_repo_meta(hub_root, "org/gated-flight", gated="manual")
    url = "hf://org/gated-flight"
    hub.reset_stats()
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
    record("gated repo in flight for an approved caller; 2 callers without access",
           "both refused (exit 3); the approved job 4 of 4",
           hub.stats()["download_bytes"], repo_bytes(src))


def repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def read_twice(hub: HubEmulator, repo_id: str, src: Path) -> dict[str, int]:
    """Files of ``repo_id`` whose content the origin sent more than once: path -> bytes."""
    sizes = {p.relative_to(src).as_posix(): p.stat().st_size for p in src.rglob("*") if p.is_file()}
    out = {}
    for key, used in hub.stats()["by_file"].items():
        prefix = f"hf:models/{repo_id}:"
        if key.startswith(prefix) and used["bytes"] > sizes[key[len(prefix):]]:
            out[key[len(prefix):]] = used["bytes"]
    return out


@pytest.mark.parametrize("nodes", [1, 4])
def test_one_corrupted_origin_response_is_read_again_and_every_node_completes_byte_identical(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, nodes: int,
    record: Callable[..., None],
) -> None:
    repo_id = f"org/heal-{nodes}"
    src = make_model(hub_root, repo_id, shard_sizes=[12 * MiB], seed=80 + nodes)
    targets = cluster.node_ids[:nodes]
    selector = "raydf/sim-node=0" if nodes == 1 else "auto"
    hub.reset_stats()
    hub.set_knobs(corrupt_next=1)  # whichever file's download comes first
    try:
        report = raydf.fanout(f"hf://{repo_id}", f"/models/heal-{nodes}",
                              hf_endpoint=hub.hf_endpoint, nodes=selector)
    finally:
        hub.clear_knobs()
    assert report.ok, [n.error for n in report.nodes if not n.ok]
    assert sorted(n.node_id for n in report.nodes) == sorted(targets)
    for node in targets:
        assert files_of(cluster.path_on(node, f"/models/heal-{nodes}")) == files_of(src)
        assert not list(cluster.node_root(node).rglob("*.partial"))
    # One file was read again from the origin (the corrupted one), within the bound.
    (bad, sent), = read_twice(hub, repo_id, src).items()
    size = (src / bad).stat().st_size
    assert sent == 2 * size
    assert hub.stats()["download_bytes"] <= repo_bytes(src) + 2 * size
    record(f"one corrupted origin response, {nodes} node{'s' if nodes > 1 else ''}",
           f"the file read again by the seed; {nodes} of {nodes} byte-identical",
           hub.stats()["download_bytes"], repo_bytes(src))


def test_a_file_the_origin_keeps_corrupting_exits_4_after_3_reads_and_the_rest_is_placed(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    base = make_model(hub_root, "org/rot-base", shard_sizes=[8 * MiB], seed=90)
    assert raydf.fanout("hf://org/rot-base", "/models/rot-base", hf_endpoint=hub.hf_endpoint).ok
    # The same files plus one the nodes do not have: only its downloads are hit.
    src = make_model(hub_root, "org/rot", shard_sizes=[8 * MiB], seed=90)
    (src / "README.md").write_bytes((base / "README.md").read_bytes())
    extra = 6 * MiB
    (src / "extra.bin").write_bytes(bytes(range(256)) * (extra // 256))
    hub.reset_stats()
    hub.set_knobs(corrupt_next=1000)
    try:
        code, err = cli_exit(cluster, hub, "hf://org/rot", "/models/rot")
    finally:
        hub.clear_knobs()
    assert code == 4, err
    assert "extra.bin" in err and "3 whole reads" in err
    # Attempts bounded, counted at the emulator: three whole reads of the one file.
    pieces = -(-extra // piece_length(extra))
    used = hub.stats()["by_file"]["hf:models/org/rot:extra.bin"]
    assert used["bytes"] == 3 * extra
    assert hub.stats()["download_requests"] == 3 * pieces
    good = {k: v for k, v in files_of(src).items() if k != "extra.bin"}
    for node in cluster.node_ids:
        assert files_of(cluster.path_on(node, "/models/rot")) == good
        assert not list(cluster.node_root(node).rglob("*.partial"))
    record("the origin corrupts every response of one file",
           "exit 4 after 3 reads of it; the other files placed, it not, no partial",
           hub.stats()["download_bytes"], repo_bytes(src))


def test_a_same_size_write_through_a_destination_is_never_placed_or_served_again(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/poison", shard_sizes=[8 * MiB], seed=95)
    shard = "model-00001-of-00001.safetensors"
    n0, n1, _, n3 = cluster.node_ids

    def fan(dest: str, nodes: list[str]) -> None:
        fan_ok(hub, "hf://org/poison", dest, nodes)

    fan("/models/poison", [n0, n1])
    target = cluster.path_on(n0, f"/models/poison/{shard}")
    with open(target, "r+b") as f:  # root ignores the 0444 mode of the shared inode
        f.seek((src / shard).stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert target.read_bytes() != (src / shard).read_bytes()
    hub.reset_stats()
    # The next job on that node, and on a node without the file.
    fan("/models/poison-again", [n0, n3])
    for node in (n0, n3):
        assert files_of(cluster.path_on(node, "/models/poison-again")) == files_of(src)
    # A good peer (node 1) supplied the shard: nothing came from the origin.
    assert hub.stats()["by_file"].get(f"hf:models/org/poison:{shard}", {}).get("bytes", 0) == 0
    record("same-size write through a destination (shared inode)",
           "re-hashed and dropped; that node and one without the file byte-identical "
           "from a good peer", hub.stats()["download_bytes"], repo_bytes(src))
    fan("/models/poison", [n0])  # the poisoned destination itself is placed again
    assert files_of(cluster.path_on(n0, "/models/poison")) == files_of(src)


def _rot(blob: Path) -> None:
    """Flip one byte of a cached blob and put its mtime back: bit rot that no stamp sees."""
    st = blob.stat()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.chmod(blob, st.st_mode)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_bit_rot_in_a_cached_blob_is_never_served_or_placed_and_the_job_completes(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/bitrot", shard_sizes=[8 * MiB], seed=97)
    shard = "model-00001-of-00001.safetensors"
    n0, _, n2, _ = cluster.node_ids

    def fan(dest: str, nodes: list[str]) -> None:
        fan_ok(hub, "hf://org/bitrot", dest, nodes)

    fan("/models/bitrot", [n0])  # only node 0 holds the shard
    placed = cluster.path_on(n0, f"/models/bitrot/{shard}")
    blobs = [b for b in (cluster.node_root(n0) / "cache" / "blobs").iterdir()
             if b.stat().st_ino == placed.stat().st_ino]
    assert blobs  # (a blob may be linked under more than one digest)
    _rot(blobs[0])
    hub.reset_stats()
    # Node 2 lacks the file and can only take it from node 0's rotten copy or the origin.
    fan("/models/bitrot-again", [n0, n2])
    for node in (n0, n2):
        assert files_of(cluster.path_on(node, "/models/bitrot-again")) == files_of(src)
        assert not list(cluster.node_root(node).rglob("*.partial"))
    used = hub.stats()["by_file"].get(f"hf:models/org/bitrot:{shard}", {}).get("bytes", 0)
    assert used <= (src / shard).stat().st_size  # the origin supplied it once, no more
    record("a cached blob written, its mtime set back",
           "its ctime moved: hashed again and dropped; both nodes byte-identical, the file "
           "read once from the origin", hub.stats()["download_bytes"], repo_bytes(src))


def test_a_copy_rotten_below_the_file_system_is_blamed_on_its_node_and_the_job_heals(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, record: Callable[..., None],
) -> None:
    src = make_model(hub_root, "org/media-rot", shard_sizes=[8 * MiB], seed=98)
    shard = "model-00001-of-00001.safetensors"
    n0, _, _, n3 = cluster.node_ids

    def fan(dest: str, nodes: list[str]) -> None:
        fan_ok(hub, "hf://org/media-rot", dest, nodes)

    fan("/models/media-rot", [n0])
    placed = cluster.path_on(n0, f"/models/media-rot/{shard}")
    cache = NodeCache(cluster.node_root(n0) / "cache")
    blobs = [b for b in cache.blobs.iterdir() if b.stat().st_ino == placed.stat().st_ino]
    _rot(blobs[0])
    for blob in blobs:  # the stamps agree: no metadata shows the change
        cache._write_stamp(blob.name, blob)
    hub.reset_stats()
    fan("/models/media-rot-again", [n0, n3])
    for node in (n0, n3):
        assert files_of(cluster.path_on(node, "/models/media-rot-again")) == files_of(src)
        assert not list(cluster.node_root(node).rglob("*.partial"))
    used = hub.stats()["by_file"].get(f"hf:models/org/media-rot:{shard}", {}).get("bytes", 0)
    assert used == (src / shard).stat().st_size  # no good copy left: the origin, once
    record("a cached copy rotten below the file system (stamp unchanged)",
           "the receiver's digest fails; the sender's copy hashed, dropped, its placement "
           "taken back; both nodes byte-identical", hub.stats()["download_bytes"],
           repo_bytes(src))
