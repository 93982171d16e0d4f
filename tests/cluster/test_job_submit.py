"""`ray job submit -- raydf get ...` against a `ray start --head` cluster on this machine."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raydf.testing.cluster import wait_until
from raydf.testing.hub import HubEmulator, make_model

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], str]]:
    # The cluster's workers inherit RAYDF_CACHE: a cold cache of this test's own.
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}",
               RAYDF_CACHE=str(tmp_path_factory.mktemp("cache")))
    gcs, dashboard = free_port(), free_port()
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=120,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}", env, f"127.0.0.1:{gcs}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)


def test_ray_job_submit_runs_raydf_get_end_to_end(
    head: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    address, env, _ = head
    make_model(tmp_path / "hub", "org/job", shard_sizes=[6 * 2**20], seed=9)
    out = tmp_path / "models" / "job"
    with HubEmulator(tmp_path / "hub") as hub:
        result = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--",
             str(BIN / "raydf"), "get", "hf://org/job", "-O", str(out), "-r", "--json",
             "--hf-endpoint", hub.hf_endpoint],
            env=env, capture_output=True, text=True, timeout=300,
        )
        stats = hub.stats()
    assert result.returncode == 0, result.stdout + result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines()
               if line.startswith("{") and '"origin_bytes"' in line]
    assert len(reports) == 1
    report = reports[0]
    assert all(n["ok"] for n in report["nodes"]) and len(report["nodes"]) == 1
    assert report["origin_bytes"] == stats["download_bytes"] == report["bytes"]
    expected = tmp_path / "hub" / "models" / "org" / "job"
    for path in expected.rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(expected)).read_bytes() == path.read_bytes()


def raydf_jobs(env: dict[str, str], gcs: str) -> list[dict[str, Any]]:
    """The raydf scheduler's jobs on the cluster at ``gcs`` (`raydf status --json`)."""
    done = subprocess.run([str(BIN / "raydf"), "status", "--json", "--address", gcs], env=env,
                          capture_output=True, text=True, timeout=120)
    scheduler = json.loads(done.stdout)["scheduler"] if done.returncode == 0 else None
    return list(scheduler["jobs"].values()) if scheduler else []


def test_ray_job_stop_stops_the_transfer_and_places_nothing(
    head: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    address, env, gcs = head
    make_model(tmp_path / "hub", "org/stopped", shard_sizes=[96 * 2**20], seed=10)
    out = tmp_path / "models" / "stopped"
    with HubEmulator(tmp_path / "hub", bandwidth=4e6) as hub:
        submitted = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--no-wait", "--address", address, "--",
             str(BIN / "raydf"), "get", "hf://org/stopped", "-O", str(out), "-r",
             "--hf-endpoint", hub.hf_endpoint],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )
        job_id = re.search(r"raysubmit_\w+", submitted.stdout + submitted.stderr)
        assert job_id is not None, submitted.stdout + submitted.stderr
        wait_until("the transfer to start", lambda: hub.stats()["download_bytes"] > 0,
                   timeout=180)
        subprocess.run([str(BIN / "ray"), "job", "stop", "--address", address, job_id.group(0)],
                       env=env, capture_output=True, text=True, timeout=120, check=True)
        wait_until("the raydf job to close",
                   lambda: (jobs := raydf_jobs(env, gcs)) and all(j["done"] for j in jobs),
                   timeout=120)
        read = hub.stats()["download_bytes"]
    assert read < 96 * 2**20  # it stopped reading the hub long before the end
    assert not (out / "model-00001-of-00001.safetensors").exists()
