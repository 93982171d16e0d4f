"""A token stays with the caller and its seed; Ctrl-C leaves nothing half-done."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import ray

from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME
from raydf.testing.cluster import LocalCluster, seed_actors, wait_until
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta

MiB = 2**20
BIN = Path(sys.executable).parent



def raydf_cli(cluster: LocalCluster, *args: str) -> list[str]:
    return [str(BIN / "raydf"), "get", *args, "--address", str(cluster.address), "--no-progress"]


def ray_processes() -> list[int]:
    """Every Ray process on this machine except this test's own (the caller)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if re.search(rb"raylet|gcs_server|ray::|default_worker|ray/_private", cmdline):
            pids.append(int(entry.name))
    return pids


def processes_holding(secret: bytes) -> list[str]:
    """Scan the readable memory (object store mappings included) of Ray's processes."""
    found = []
    for pid in ray_processes():
        try:
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            mem = open(f"/proc/{pid}/mem", "rb", buffering=0)  # noqa: SIM115
        except OSError:
            continue
        with mem:
            for line in maps:
                fields = line.split()
                if "r" not in fields[1] or fields[-1] in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                try:
                    mem.seek(start)
                    for offset in range(start, end, 64 * MiB):
                        chunk = mem.read(min(64 * MiB + len(secret), end - offset))
                        mem.seek(offset + 64 * MiB)
                        if chunk and secret in chunk:
                            found.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}")
                            raise StopIteration
                except (OSError, ValueError, StopIteration):
                    continue
    return sorted(set(found))


def test_a_token_reaches_no_log_no_output_no_other_process_and_not_the_cdn(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    token = f"hf_{uuid.uuid4().hex}"
    hub.tokens[token] = "alice"
    src = make_model(hub_root, "org/private", shard_sizes=[8 * MiB], seed=51)
    write_repo_meta(hub_root, "org/private", private=True)
    hub.reset_stats()
    env = dict(os.environ, HF_TOKEN=token)
    result = subprocess.run(raydf_cli(cluster, "hf://org/private", "-O", "/models/private", "-r",
                                      "--json", "--hf-endpoint", hub.hf_endpoint),
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '"origin_bytes"' in result.stdout
    assert token not in result.stdout + result.stderr
    for node in cluster.node_ids:
        got = cluster.path_on(node, "/models/private") / "config.json"
        assert got.read_bytes() == (src / "config.json").read_bytes()
    assert hub.stats()["cdn_authorization_headers"] == 0
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    logged = [p for p in session.rglob("*") if p.is_file() and p.stat().st_size < 256 * MiB
              and token.encode() in p.read_bytes()]
    assert logged == []
    assert processes_holding(token.encode()) == []


def test_ctrl_c_leaves_no_partial_file_and_no_actor_but_the_service(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    src = make_model(hub_root, "org/interrupted", shard_sizes=[32 * MiB], seed=52)
    hub.set_knobs(bandwidth=10e6)
    try:
        proc = subprocess.Popen(raydf_cli(cluster, "hf://org/interrupted", "-O",
                                          "/models/interrupted", "-r",
                                          "--hf-endpoint", hub.hf_endpoint),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until("a partial file on a node", lambda: any(
            list((cluster.node_root(n) / "cache" / "partial").glob("*.partial"))
            for n in cluster.node_ids))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        hub.clear_knobs()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
    wait_until("the job to close", lambda: all(
        j["done"] for j in ray.get(sched.snapshot.remote())["jobs"].values()))
    for node in cluster.node_ids:
        # Partial files stay only in the node cache's partial folder (kept, with
        # their verified pieces, for a re-run: issue 12), never beside a final path.
        kept = cluster.node_root(node) / "cache" / "partial"
        assert all(p.parent == kept for p in cluster.node_root(node).rglob("*partial")
                   if p.is_file())
        final = cluster.path_on(node, "/models/interrupted")
        for path in final.rglob("*") if final.exists() else []:
            if path.is_file():  # whatever is at a final path is whole and verified
                assert path.read_bytes() == (src / path.relative_to(final)).read_bytes()
    standby = [name for name, serving in seed_actors().items() if not serving]
    assert len(standby) <= 1  # the scheduler's next seed: no request, no token
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    service = {SCHEDULER_NAME, *standby} | {f"raydf-peer-{n}" for n in cluster.node_ids}
    assert names <= service, names
    from ray.util.state import list_actors

    alive = list_actors(filters=[("state", "=", "ALIVE")])
    assert {a.class_name for a in alive} <= {"SchedulerActor", "PeerActor", "SeedActor"}
    assert sum(a.class_name == "SeedActor" for a in alive) == len(standby)
