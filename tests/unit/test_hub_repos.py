"""The hub emulator's repo store and synthetic repos (no server involved)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from raydf.testing import make_dataset, make_model
from raydf.testing.hub import write_repo_meta
from raydf.testing.hub.repos import RepoStore, is_lfs


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_make_model_is_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    sizes = [5 * 2**20 + 3, 4096, 100]
    a = files_of(make_model(tmp_path / "a", "org/m", shard_sizes=sizes, seed=3))
    b = files_of(make_model(tmp_path / "b", "org/m", shard_sizes=sizes, seed=3))
    c = files_of(make_model(tmp_path / "c", "org/m", shard_sizes=sizes, seed=4))
    assert a == b
    first = "model-00001-of-00003.safetensors"
    assert a.keys() == c.keys() and a[first] != c[first]
    assert [len(a[f"model-0000{k}-of-00003.safetensors"]) for k in (1, 2, 3)] == sizes
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "README.md", "model.safetensors.index.json", ".gitattributes"} < a.keys()


def test_make_model_writes_real_safetensors_and_a_matching_index(tmp_path: Path) -> None:
    folder = make_model(tmp_path, "org/m", shard_sizes=[2**20, 3000])
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    total = 0
    for tensor, filename in index["weight_map"].items():
        data = (folder / filename).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        begin, end = header[tensor]["data_offsets"]
        assert n % 8 == 0 and 8 + n + end == len(data) and begin == 0
        total += end
    assert index["metadata"]["total_size"] == total


def test_make_model_replaces_an_existing_folder(tmp_path: Path) -> None:
    folder = make_model(tmp_path, "org/m", shard_sizes=[1000, 1000])
    make_model(tmp_path, "org/m", shard_sizes=[1000])
    assert not (folder / "model-00002-of-00002.safetensors").exists()


def test_make_dataset_nests_train_files_under_data(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, "org/d", file_sizes=[1000, 2000], seed=1)
    got = files_of(folder)
    assert len(got["data/train/train-00000-of-00002.parquet"]) == 1000
    assert len(got["data/train/train-00001-of-00002.parquet"]) == 2000
    assert "data/validation/validation-00000-of-00001.parquet" in got and "README.md" in got
    assert got == files_of(make_dataset(tmp_path / "again", "org/d", file_sizes=[1000, 2000], seed=1))


def test_lfs_is_decided_by_extension_or_size() -> None:
    assert is_lfs("model.safetensors", 10) and is_lfs("data/x.PARQUET", 10)
    assert not is_lfs("config.json", 10 * 2**20 - 1)
    assert is_lfs("big.txt", 10 * 2**20)


def test_digests_are_sha256_and_the_git_blob_id(tmp_path: Path) -> None:
    folder = tmp_path / "models/org/m"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"hello\n")
    entry = RepoStore(tmp_path).snapshot(folder).by_path["a.txt"]
    assert entry.sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert entry.git_sha1 == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    if shutil.which("git"):
        out = subprocess.run(["git", "hash-object", str(folder / "a.txt")], capture_output=True, text=True)
        assert out.stdout.strip() == entry.git_sha1


def test_commit_depends_on_content_only(tmp_path: Path) -> None:
    store = RepoStore(tmp_path)
    a = make_model(tmp_path / "one", "org/a", shard_sizes=[1000])
    b = make_model(tmp_path / "two", "org/a", shard_sizes=[1000])
    assert store.snapshot(a).commit == store.snapshot(b).commit
    os.utime(b / "config.json", ns=(1, 1))
    assert store.snapshot(a).commit == store.snapshot(b).commit
    (b / "extra.txt").write_text("x")
    assert store.snapshot(a).commit != store.snapshot(b).commit


def test_digests_are_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    store = RepoStore(tmp_path)
    folder = tmp_path / "models/org/m"
    folder.mkdir(parents=True)
    path = folder / "w.bin"
    path.write_bytes(b"a" * 100)
    before = store.snapshot(folder).by_path["w.bin"].sha256
    st = path.stat()
    path.write_bytes(b"b" * 100)  # same size, mtime put back: only a re-hash could notice
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.snapshot(folder).by_path["w.bin"].sha256 == before
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert store.snapshot(folder).by_path["w.bin"].sha256 == hashlib.sha256(b"b" * 100).hexdigest()


def test_revisions_resolve_by_branch_tag_and_commit(tmp_path: Path) -> None:
    make_model(tmp_path, "org/m", shard_sizes=[1000], seed=1)
    make_model(tmp_path, "org/m@v1", shard_sizes=[1000], seed=2)
    write_repo_meta(
        tmp_path, "org/m", private=True, gated=True, branches={"dev/x": "m@v1"}, tags={"v1": "m@v1"}
    )
    store = RepoStore(tmp_path)
    repo = store.get("models", "org/m")
    assert repo is not None and repo.private and repo.gated == "manual"
    main, v1 = store.resolve(repo, "main"), store.resolve(repo, "v1")
    assert main is not None and v1 is not None and main.commit != v1.commit
    assert store.resolve(repo, "master") == main
    assert store.resolve(repo, "dev/x") == v1
    assert store.resolve(repo, v1.commit) == v1
    assert store.resolve(repo, "nope") is None and store.resolve(repo, "0" * 40) is None


@pytest.mark.parametrize(
    "repo_id", ["org/m@v1", "org/m.hub.json", "org", "a/b/c", "../models/org", "org/.hidden"]
)
def test_only_plain_folders_are_repos(tmp_path: Path, repo_id: str) -> None:
    make_model(tmp_path, "org/m", shard_sizes=[1000])
    make_model(tmp_path, "org/m@v1", shard_sizes=[1000])
    write_repo_meta(tmp_path, "org/m")
    store = RepoStore(tmp_path)
    assert store.get("models", repo_id) is None
    assert store.repo_ids("models") == ["org/m"]


def test_hub_json_must_name_an_existing_sibling_folder(tmp_path: Path) -> None:
    make_model(tmp_path, "org/m", shard_sizes=[1000])
    store = RepoStore(tmp_path)
    for folder in ["../m", "m@missing"]:
        write_repo_meta(tmp_path, "org/m", tags={"v1": folder})
        with pytest.raises(ValueError, match="v1"):
            store.get("models", "org/m")
