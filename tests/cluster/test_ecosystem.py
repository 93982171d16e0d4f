"""Fitting in: the Hugging Face cache layout, status, warm, cache commands, metrics, logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import ray

import raydf
from raydf.testing.cluster import LocalCluster, wait_until
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20



def cli(cluster: LocalCluster, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "raydf"), *args,
                           "--address", str(cluster.address)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_hf_cache_layout_is_read_offline_by_huggingface_hub(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    src = make_model(hub_root, "org/cached", shard_sizes=[6 * MiB], seed=61)
    report = raydf.fanout("hf://org/cached", "/hf-cache", hf_endpoint=hub.hf_endpoint,
                          layout="hf-cache")
    assert report.ok, report.nodes
    node = cluster.node_ids[0]
    cache_dir = cluster.path_on(node, "/hf-cache")
    code = (
        "import sys; from huggingface_hub import hf_hub_download, snapshot_download\n"
        "p = snapshot_download('org/cached', cache_dir=sys.argv[1], local_files_only=True)\n"
        "print(p); print(hf_hub_download('org/cached', 'config.json', cache_dir=sys.argv[1]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache_dir.parent / "hf-home")}
    out = subprocess.run([sys.executable, "-c", code, str(cache_dir)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    snapshot = Path(out.stdout.splitlines()[0])
    assert snapshot.parent.parent.name == "models--org--cached"
    for path in src.rglob("*"):
        if path.is_file():
            got = snapshot / path.relative_to(src)
            assert got.is_symlink() and got.read_bytes() == path.read_bytes()
    refs = (cache_dir / "models--org--cached" / "refs" / "main").read_text()
    assert refs == report.commit == snapshot.name


def test_warm_fills_caches_only_and_a_later_get_is_placed_from_them(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    src = make_model(hub_root, "org/warm", shard_sizes=[6 * MiB], seed=62)
    report = json.loads(cli(cluster, "warm", "hf://org/warm", "--json", "--no-progress",
                            "--hf-endpoint", hub.hf_endpoint))
    assert all(n["ok"] for n in report["nodes"]) and report["origin_bytes"] > 0
    for node in cluster.node_ids:
        blobs = cluster.node_root(node) / "cache" / "blobs"
        assert any(b.stat().st_size == 6 * MiB for b in blobs.iterdir())
    hub.reset_stats()
    assert raydf.fanout("hf://org/warm", "/models/warm", hf_endpoint=hub.hf_endpoint).ok
    assert hub.stats()["download_bytes"] == 0
    for node in cluster.node_ids:
        shard = cluster.path_on(node, "/models/warm/model-00001-of-00001.safetensors")
        assert shard.read_bytes() == (src / "model-00001-of-00001.safetensors").read_bytes()


def test_status_shows_jobs_progress_and_cache_use(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    make_model(hub_root, "org/status", shard_sizes=[4 * MiB], seed=63)
    report = raydf.fanout("hf://org/status", "/models/status", hf_endpoint=hub.hf_endpoint)
    text = cli(cluster, "status")
    assert f"job {report.job_id} done hf://org/status" in text
    assert text.count("cache ") >= len(cluster.node_ids)
    data = json.loads(cli(cluster, "status", "--json"))
    assert set(cluster.node_ids) <= set(data["nodes"])
    assert all(snap["cache_bytes"] >= 4 * MiB for n, snap in data["nodes"].items()
               if n in cluster.node_ids)


def test_cache_ls_rm_and_gc_on_every_node(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    make_model(hub_root, "org/gc", shard_sizes=[5 * MiB], seed=64)
    report = raydf.fanout("hf://org/gc", "/models/gc", hf_endpoint=hub.hf_endpoint)
    assert report.ok
    listing = json.loads(cli(cluster, "cache", "ls", "--json"))
    # (a file this small is filed under its sha256 and its git sha1: one inode)
    shard_keys = {row["key"] for rows in listing.values() for row in rows
                  if row["bytes"] == 5 * MiB and row["key"].startswith("sha256-")}
    assert len(shard_keys) == 1 and all(
        any(r["key"] in shard_keys and r["in_use"] for r in listing[n]) for n in cluster.node_ids)
    # rm: the blob leaves every cache, the placed file stays (a separate link)
    key = shard_keys.pop()
    removed = json.loads(cli(cluster, "cache", "rm", key))
    assert all(removed[n] == 2 for n in cluster.node_ids)  # the key and its alias
    for node in cluster.node_ids:
        assert not (cluster.node_root(node) / "cache" / "blobs" / key).exists()
        assert cluster.path_on(node, "/models/gc/model-00001-of-00001.safetensors").exists()
    # gc: blobs whose destinations are gone are dropped
    for node in cluster.node_ids:
        for path in cluster.path_on(node, "/models/gc").iterdir():
            path.unlink()
    freed = json.loads(cli(cluster, "cache", "gc"))
    assert all(freed[n]["blobs"] >= 1 for n in cluster.node_ids), freed


def test_metrics_reach_ray_prometheus_endpoints_and_logs_are_greppable(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    make_model(hub_root, "org/metrics", shard_sizes=[6 * MiB], seed=65)
    report = raydf.fanout("hf://org/metrics", "/models/metrics", hf_endpoint=hub.hf_endpoint)
    assert report.ok
    ports = {n["NodeID"]: n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]}

    def scrape() -> str:
        texts = []
        for port in ports.values():
            try:
                texts.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except httpx.HTTPError:
                continue
        text = "\n".join(texts)
        wanted = ("ray_raydf_origin_bytes", "ray_raydf_p2p_bytes", "ray_raydf_pieces",
                  "ray_raydf_piece_seconds_bucket", "ray_raydf_active_transfers")
        return text if all(w in text for w in wanted) else ""

    assert wait_until("raydf metrics on the nodes' endpoints", scrape)
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    lines = [line for p in (session / "logs").glob("worker-*") if p.suffix in (".out", ".err")
             for line in p.read_text(errors="replace").splitlines()
             if "raydf event=file_verified" in line and f"jobs={report.job_id}" in line]
    # the shard (new to every node) was verified once on each node, and says so
    shard = [line for line in lines if "file=model-00001-of-00001.safetensors" in line]
    assert sorted(line.split("node=")[1][:8] for line in shard) == sorted(
        n[:8] for n in cluster.node_ids), lines


def test_progress_bar_draws_on_a_terminal(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path,
) -> None:
    import pty

    make_model(hub_root, "org/tty", shard_sizes=[8 * MiB], seed=66)
    hub.set_knobs(bandwidth=20e6)
    try:
        pid, fd = pty.fork()
        if pid == 0:  # the child: raydf get with a terminal on stderr
            os.execv(str(Path(sys.executable).parent / "raydf"), [
                "raydf", "get", "hf://org/tty", "-O", "/models/tty", "-r",
                "--address", str(cluster.address), "--hf-endpoint", hub.hf_endpoint])
        output = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        hub.clear_knobs()
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "MiB/s" in text and "%" in text and "\r" in text
    assert "nodes done" in text
