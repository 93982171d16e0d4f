"""Hugging Face as it is today: Xet-backed files, renamed repos, stalled bridges, short commits.

The emulator's ``xet`` knob makes every LFS file Xet-backed: ``/resolve/``
answers 302 to a bridge url (on another loopback address) that is presigned
for GET, so a HEAD on it is refused with 403. raydf reads size and digest from
the listing and the hub's own redirect, as ``huggingface_hub`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from raydf.backends import BackendOptions
from raydf.backends.huggingface import HuggingFaceBackend
from raydf.backends.modelscope import ModelScopeBackend
from raydf.backends.ratelimit import RetryPolicy
from raydf.cli import main
from raydf.testing.hub import HubEmulator, make_model, write_repo_meta
from raydf.uri import parse_url

MiB = 2**20
FAST = RetryPolicy(retries=3, base=0.05, cap=0.2)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/xet", shard_sizes=[5 * MiB, 3 * MiB, 1 * MiB], seed=31)
    make_model(root, "org/renamed-now", shard_sizes=[2 * MiB], seed=32)
    write_repo_meta(root, "org/old-name", moved_to="org/renamed-now")
    return root


@pytest.fixture(scope="module")
def hub(root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(root) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def xet_on(hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", hub.hf_endpoint)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.ms_endpoint)
    hub.clear_knobs()
    hub.set_knobs(xet=True)
    hub.reset_stats()
    yield
    hub.clear_knobs()


def files_of(folder: Path) -> dict[str, bytes]:
    skip = (".cache/",)
    return {rel: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not (rel := p.relative_to(folder).as_posix()).startswith(skip)}


def get(*args: str) -> int:
    return main(["get", *args, "--local", "--no-progress"])


def test_xet_resolve_redirects_to_a_bridge_that_refuses_head(hub: HubEmulator) -> None:
    with httpx.Client() as client:
        url = f"{hub.hf_endpoint}/org/xet/resolve/main/model-00001-of-00003.safetensors"
        answer = client.head(url)
        assert answer.status_code == 302
        for header in ("X-Xet-Hash", "X-Linked-Size", "X-Linked-Etag", "X-Repo-Commit"):
            assert header in answer.headers
        assert answer.links["xet-auth"]["url"].startswith(hub.hf_endpoint)
        bridge = answer.headers["Location"]
        assert bridge.startswith(hub.cdn_endpoint) and hub.cdn_endpoint != hub.hf_endpoint
        assert client.head(bridge).status_code == 403
        body = client.get(bridge, headers={"Range": "bytes=0-99"})
        assert body.status_code == 206 and len(body.content) == 100
        assert "ETag" not in body.headers and "Last-Modified" not in body.headers


def test_raydf_gets_a_xet_repo_byte_identical_without_a_head_on_the_bridge(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    assert get("hf://org/xet", "-O", str(tmp_path / "out"), "-r") == 0
    assert files_of(tmp_path / "out") == files_of(root / "models/org/xet")
    stats = hub.stats()
    assert stats["status_counts"].get("403", 0) == 0  # no refused HEAD on the bridge
    assert stats["by_listener"]["cdn"]["requests"] > 0  # the shards came from the bridge


def test_official_huggingface_hub_gets_the_xet_repo_over_plain_http(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    # hf_xet is installed here; HF_HUB_DISABLE_XET=1 (the documented switch) sends
    # huggingface_hub down its HTTP path: GET /resolve/, then the bridge's presigned url.
    env = dict(os.environ, HOME=str(tmp_path), HF_HOME=str(tmp_path / "hf"),
               HF_ENDPOINT=hub.hf_endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    code = "from huggingface_hub import snapshot_download as s; print(s('org/xet'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    theirs = Path(out.stdout.strip().splitlines()[-1])
    assert files_of(theirs) == files_of(root / "models/org/xet")
    assert get("hf://org/xet", "-O", str(tmp_path / "ours"), "-r") == 0
    assert files_of(tmp_path / "ours") == files_of(theirs)


def test_a_renamed_repo_is_followed_through_its_relative_307(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    assert get("hf://org/old-name", "-O", str(tmp_path / "out"), "-r") == 0
    assert files_of(tmp_path / "out") == files_of(root / "models/org/renamed-now")
    assert hub.stats()["status_counts"]["307"] >= 3  # revision, tree and resolve all moved


def test_a_stalled_bridge_stream_is_cut_and_retried(hub: HubEmulator, root: Path) -> None:
    backend = HuggingFaceBackend(parse_url("hf://org/xet"), BackendOptions(endpoint=hub.hf_endpoint),
                                 retry=FAST, stall_timeout=1.0)
    try:
        commit = backend.resolve()
        shard = next(f for f in backend.list_files(commit) if f.size == 5 * MiB)
        hub.reset_stats()
        hub.set_knobs(stall_next=1, stall_s=60)  # the next download sends headers, then nothing
        buf = bytearray(shard.size)
        backend.read_into(commit, shard.repo_path, 0, memoryview(buf))
    finally:
        backend.close()
    assert bytes(buf) == (root / "models/org/xet" / shard.repo_path).read_bytes()
    assert hub.knobs()["stall_next"] == 0  # the stall was served, and survived
    by_file = hub.stats()["by_file"][f"hf:models/org/xet:{shard.repo_path}"]
    assert by_file["requests"] == 3  # HEAD /resolve/, the stalled GET, the retried GET


def test_a_short_commit_as_raydf_prints_it_is_taken_by_hf_revision(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get("hf://org/xet", "-O", str(tmp_path / "a"), "-r", "--json") == 0
    commit = json.loads(capsys.readouterr().out)["commit"]
    assert get("hf://org/xet", "-O", str(tmp_path / "b"), "-r", "--hf-revision", commit[:12],
               "--json") == 0
    assert json.loads(capsys.readouterr().out)["commit"] == commit
    assert files_of(tmp_path / "b") == files_of(root / "models/org/xet")


def test_a_short_commit_resolves_on_modelscope_too(hub: HubEmulator) -> None:
    full = ModelScopeBackend(parse_url("modelscope://org/xet"),
                             BackendOptions(endpoint=hub.ms_endpoint)).resolve()
    short = ModelScopeBackend(parse_url("modelscope://org/xet"),
                              BackendOptions(endpoint=hub.ms_endpoint, revision=full[:12]))
    assert short.resolve() == full


def test_pieces_of_one_file_fetched_at_once_cost_one_resolve(hub: HubEmulator) -> None:
    backend = HuggingFaceBackend(parse_url("hf://org/xet"), BackendOptions(endpoint=hub.hf_endpoint))
    try:
        commit = backend.resolve()
        shard = next(f for f in backend.list_files(commit) if f.size == 5 * MiB)
        before = backend.requests_by_kind
        piece = 64 * 2**10
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda k: backend.read_into(
                commit, shard.repo_path, k * piece, memoryview(bytearray(piece))),
                range(shard.size // piece)))
        after = backend.requests_by_kind
    finally:
        backend.close()
    assert after["resolve"] - before["resolve"] == 1
    assert after["content"] - before["content"] == shard.size // piece
