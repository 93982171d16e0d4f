"""`raydf get` gives exactly what the official clients give, from the same emulator.

The official clients run unchanged, in their own process, pointed at the
emulator by the environment variables they document.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.backends import BackendOptions
from raydf.backends.modelscope import ModelScopeBackend
from raydf.cli import main
from raydf.testing.hub import HubEmulator, make_dataset, make_model, write_repo_meta
from raydf.uri import parse_url

MiB = 2**20


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/model", shard_sizes=[3 * MiB, MiB], seed=11)
    make_dataset(root, "org/data", file_sizes=[MiB], seed=12)
    make_model(root, "org/model@v1.0", shard_sizes=[2 * MiB], seed=13)
    make_model(root, "org/model@dev", shard_sizes=[MiB, MiB], seed=14)
    write_repo_meta(root, "org/model", tags={"v1.0": "model@v1.0"}, branches={"dev": "model@dev"})
    with HubEmulator(root) as emulator:
        yield emulator


def official(hub: HubEmulator, code: str, home: Path) -> Path:
    env = dict(
        os.environ,
        HOME=str(home),
        HF_HOME=str(home / "hf"),
        HF_ENDPOINT=hub.hf_endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        MODELSCOPE_ENDPOINT=hub.ms_endpoint,
        MODELSCOPE_CACHE=str(home / "ms"),
        MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false",
        INTRA_CLOUD_ACCELERATION="false",
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def files_of(folder: Path) -> dict[str, bytes]:
    # The clients keep their own bookkeeping under .cache/ (huggingface_hub) or
    # ._____temp and .mdl/.msc (modelscope): not repo files.
    skip = (".cache/", "._____temp", ".mdl", ".msc", ".mv")
    return {rel: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not (rel := p.relative_to(folder).as_posix()).startswith(skip)}


def raydf_get(url: str, out: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
              hub: HubEmulator, *flags: str) -> Path:
    monkeypatch.setenv("RAYDF_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", hub.hf_endpoint)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.ms_endpoint)
    assert main(["get", url, "-O", str(out), "-r", "--local", "--no-progress", *flags]) == 0
    return out


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("hf://org/model",
         "from huggingface_hub import snapshot_download as s; print(s('org/model'))"),
        ("hf://datasets/org/data",
         "from huggingface_hub import snapshot_download as s; "
         "print(s('org/data', repo_type='dataset'))"),
    ],
)
def test_get_matches_huggingface_hub_snapshot_download(
    url: str, code: str, hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = official(hub, code, tmp_path / "home")
    ours = raydf_get(url, tmp_path / "ours", tmp_path / "cache", monkeypatch, hub)
    assert files_of(ours) == files_of(theirs)
    assert len(files_of(ours)) >= 4


def test_get_matches_modelscope_snapshot_download(
    hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = ("from modelscope import snapshot_download as s; "
            "print(s('org/model', endpoint=__import__('os').environ['MODELSCOPE_ENDPOINT']))")
    theirs = official(hub, code, tmp_path / "home")
    ours = raydf_get("modelscope://org/model", tmp_path / "ours", tmp_path / "cache", monkeypatch, hub)
    assert files_of(ours) == files_of(theirs)
    assert "model-00001-of-00002.safetensors" in files_of(ours)


@pytest.mark.parametrize("revision", ["v1.0", "dev", "commit of v1.0"])
def test_a_tag_a_branch_and_a_commit_give_what_modelscope_snapshot_download_gives(
    revision: str, hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if revision.startswith("commit"):
        tagged = ModelScopeBackend(parse_url("modelscope://org/model"),
                                   BackendOptions(endpoint=hub.ms_endpoint, revision="v1.0"))
        revision = tagged.resolve()
        tagged.close()
    hub.set_knobs(ms_redirect=True)  # its shards behind a 302 to storage, as on ModelScope
    try:
        code = ("import os; from modelscope import snapshot_download as s; "
                f"print(s('org/model', revision={revision!r}, "
                "endpoint=os.environ['MODELSCOPE_ENDPOINT']))")
        theirs = official(hub, code, tmp_path / "home")
        ours = raydf_get("modelscope://org/model", tmp_path / "ours", tmp_path / "cache",
                         monkeypatch, hub, "--ms-revision", revision)
    finally:
        hub.clear_knobs()
    assert files_of(ours) == files_of(theirs)
    assert files_of(ours) == files_of(hub.root / "models/org" / (
        "model@dev" if revision == "dev" else "model@v1.0"))
