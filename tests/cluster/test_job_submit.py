"""`ray job submit -- raydf get ...` against a `ray start --head` cluster on this machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.testing.hub import HubEmulator, make_model

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
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
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True,
                       timeout=120)


def test_ray_job_submit_runs_raydf_get_end_to_end(
    head: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    address, env = head
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
