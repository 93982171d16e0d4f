"""The ``raydf`` command against a real 2-node cluster, run as a user runs it.

Every case starts the CLI as a subprocess with ``--address`` of one shared
LocalCluster and reads its exit status, stdout and stderr: Ray's own lines
must never be there, errors are one line with the README's exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from raydf.testing.cluster import LocalCluster, wait_until
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta

pytestmark = pytest.mark.cluster

KiB, MiB = 2**10, 2**20
REPO_ROOT = Path(__file__).resolve().parents[2]
FILE = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(2, root=tmp_path_factory.mktemp("nodes")) as c:
        yield c


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/m", shard_sizes=[64 * KiB, 32 * KiB], seed=21)
    make_model(root, "org/slow", shard_sizes=[8 * MiB, 8 * MiB], seed=22)
    make_model(root, "org/gated", shard_sizes=[32 * KiB], seed=23)
    write_repo_meta(root, "org/gated", gated="manual")
    return root


@pytest.fixture(scope="module")
def hub(hub_root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(hub_root, tokens={"hf_bob_token_0002": "bob"}) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def fresh(hub: HubEmulator, cluster: LocalCluster) -> None:
    hub.clear_knobs()
    hub.reset_stats()


def raydf(cluster: LocalCluster, hub: HubEmulator, *args: str, cwd: Path | None = None,
          stdout: int | None = subprocess.PIPE, log: Path | None = None,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raydf.cli", *args, "--address", str(cluster.address)],
        stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300, cwd=cwd,
        env=_env(hub, log))


def _env(hub: HubEmulator, log: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_ENDPOINT": hub.hf_endpoint}
    env.pop("RAYDF_DEBUG", None)
    if log is not None:
        env["RAYDF_CLI_LOG"] = str(log)
    return env


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydf: error: "), stderr
    return lines[0]


def test_ray_messages_during_a_fanout_reach_neither_stdout_nor_stderr(
    cluster: LocalCluster, hub: HubEmulator, tmp_path: Path
) -> None:
    hub.set_knobs(bandwidth=4 * MiB)  # about 4 s: time for Ray to speak while it runs
    log, out, err = tmp_path / "cli.log", tmp_path / "stdout", tmp_path / "stderr"
    message = "raylet says: node 0123 has been marked dead (a test message)"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raydf.cli", "get", "hf://org/slow", "-O", "/cli/noise", "-r",
             "--json", "--address", str(cluster.address)],
            stdout=stdout, stderr=stderr, text=True, env=_env(hub, log))
    try:
        sched = wait_until("the scheduler", lambda: _scheduler())
        wait_until("the CLI's job to start", lambda: any(
            job["url"] == "hf://org/slow" for job in ray.get(sched.snapshot.remote())["jobs"].values()))
        # What the raylet does when a node dies: an error message to every driver.
        from ray._private.utils import publish_error_to_driver

        publish_error_to_driver("raydf_test", message,
                                gcs_client=ray._private.worker.global_worker.gcs_client)
        wait_until("Ray's message to reach the CLI (its log, or its output)", lambda: any(
            p.exists() and message in p.read_text() for p in (log, out, err)))
        assert proc.wait(timeout=300) == 0, err.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert message not in out.read_text() + err.read_text()
    report = json.loads(out.read_text())  # one object, alone on stdout
    assert report["ok"] is True and report["files"] > 0
    assert err.read_text() == ""
    assert message in log.read_text()


def _scheduler() -> object:
    try:
        return ray.get_actor("raydf-scheduler", namespace="raydf")
    except ValueError:
        return None


def test_a_gated_repo_without_access_is_exit_3(
    cluster: LocalCluster, hub: HubEmulator
) -> None:
    for token in ([], ["--hf-token", "hf_bob_token_0002"]):
        done = raydf(cluster, hub, "get", "hf://org/gated", "-O", "/cli/gated", "-r",
                     "--no-progress", *token)
        assert done.returncode == 3, done.stderr
        line = one_error_line(done.stderr)
        assert "gated" in line and "hf_bob_token_0002" not in line
    # (Files the caches already hold, e.g. an identical .gitattributes, may be placed.)
    assert not any(list(cluster.path_on(n, "/cli/gated").rglob("*.safetensors"))
                   for n in cluster.node_ids)


def test_recursive_onto_an_existing_file_on_the_nodes_is_exit_5_in_one_line(
    cluster: LocalCluster, hub: HubEmulator
) -> None:
    for node in cluster.node_ids:
        target = cluster.path_on(node, "/cli/afile")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"mine")
    done = raydf(cluster, hub, "get", "hf://org/m", "-O", "/cli/afile", "-r", "--no-progress")
    assert done.returncode == 5, done.stderr
    line = one_error_line(done.stderr)
    assert "/cli/afile: it is an existing file, not a folder" in line
    assert ".raydf-partial" not in line and "Errno" not in line
    assert all(cluster.path_on(n, "/cli/afile").read_bytes() == b"mine" for n in cluster.node_ids)


def test_one_file_onto_an_existing_folder_on_the_nodes_is_exit_5_with_json(
    cluster: LocalCluster, hub: HubEmulator
) -> None:
    for node in cluster.node_ids:
        cluster.path_on(node, "/cli/adir").mkdir(parents=True, exist_ok=True)
    done = raydf(cluster, hub, "get", f"hf://org/m/{FILE}", "-O", "/cli/adir", "--json")
    assert done.returncode == 5, done.stderr
    line = one_error_line(done.stderr)
    assert "it is an existing folder" in line and "end it with /" in line
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["exit_code"] == 5
    assert report["error"] == line.removeprefix("raydf: error: ")
    assert all(list(cluster.path_on(n, "/cli/adir").iterdir()) == [] for n in cluster.node_ids)


def test_one_file_to_a_trailing_slash_lands_inside_that_folder_on_every_node(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path
) -> None:
    done = raydf(cluster, hub, "get", f"hf://org/m/{FILE}", "-O", "/cli/newdir/", "--no-progress")
    assert done.returncode == 0, done.stderr
    want = (hub_root / "models/org/m" / FILE).read_bytes()
    for node in cluster.node_ids:
        assert cluster.path_on(node, "/cli/newdir").is_dir()
        assert cluster.path_on(node, f"/cli/newdir/{FILE}").read_bytes() == want


def test_a_relative_destination_lands_where_the_caller_means_on_every_node(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, tmp_path: Path
) -> None:
    caller_cwd = tmp_path / "somewhere"
    caller_cwd.mkdir()
    done = raydf(cluster, hub, "get", "hf://org/m", "-O", "rel/m", "-r", "--json", cwd=caller_cwd)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {n["path"] for n in report["nodes"]} == {str(caller_cwd / "rel/m")}
    want = (hub_root / "models/org/m/config.json").read_bytes()
    for node in cluster.node_ids:
        assert cluster.path_on(node, caller_cwd / "rel/m/config.json").read_bytes() == want


def test_filters_matching_no_file_are_exit_2_on_the_cluster(
    cluster: LocalCluster, hub: HubEmulator
) -> None:
    done = raydf(cluster, hub, "get", "hf://org/m", "-O", "/cli/none", "-r", "--no-progress",
                 "--include", "*.gguf")
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "--include '*.gguf'" in line and "none of the" in line
    assert hub.stats()["download_bytes"] == 0


def test_cache_rm_of_a_key_no_node_holds_is_exit_2(
    cluster: LocalCluster, hub: HubEmulator
) -> None:
    assert raydf(cluster, hub, "get", "hf://org/m", "-O", "/cli/cached", "-r").returncode == 0
    done = raydf(cluster, hub, "cache", "rm", "sha256-" + "0" * 64)
    assert done.returncode == 2, done.stderr
    assert "raydf cache ls" in one_error_line(done.stderr)


def test_cache_ls_into_a_closed_pipe_is_a_quiet_exit_141(
    cluster: LocalCluster, hub: HubEmulator
) -> None:
    assert raydf(cluster, hub, "get", "hf://org/m", "-O", "/cli/piped", "-r").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head -1`) is gone before the first write
    try:
        done = raydf(cluster, hub, "cache", "ls", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""
