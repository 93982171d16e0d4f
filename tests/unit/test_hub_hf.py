"""The hub emulator speaks Hugging Face well enough for the official client, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raydf.testing import HubEmulator, make_dataset, make_model
from raydf.testing.hub import write_repo_meta
from raydf.testing.hub.repos import RepoStore

PAGE = 4  # tiny tree pages: every listing below goes through pagination


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/tiny", shard_sizes=[3 * 2**20, 2 * 2**20 + 5], seed=1)
    make_model(root, "org/tiny@v1.0", shard_sizes=[2**20], seed=2)
    write_repo_meta(root, "org/tiny", tags={"v1.0": "tiny@v1.0"}, branches={"feature/x": "tiny@v1.0"})
    make_model(root, "org/secret", shard_sizes=[2**20], seed=3)
    write_repo_meta(root, "org/secret", private=True)
    make_model(root, "org/gated", shard_sizes=[2**20], seed=4)
    write_repo_meta(root, "org/gated", gated="manual")
    make_dataset(root, "org/ds", file_sizes=[2**20, 2**20], seed=5)
    return root


@pytest.fixture(scope="module")
def hub(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    tokens = {"hf_alice": "alice", "hf_bob": "bob"}
    import huggingface_hub.constants

    hub = HubEmulator(root, tokens=tokens, approved={"alice"}, tree_page_size=PAGE)
    with hub, pytest.MonkeyPatch.context() as mp:
        # What importing with HF_ENDPOINT set would give: 2.x fetches
        # {ENDPOINT}/api/agent-harnesses, and hf_hub_url swaps in endpoint= only
        # where the template starts with ENDPOINT, so both must move together.
        mp.setattr(huggingface_hub.constants, "ENDPOINT", hub.hf_endpoint)
        mp.setattr(
            huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
            hub.hf_endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        mp.setenv("HF_ENDPOINT", hub.hf_endpoint)
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # Anonymous means anonymous: no token from the environment or a login file.
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
            mp.delenv(var, raising=False)
        mp.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path_factory.mktemp("hf") / "token"))
        yield hub


@pytest.fixture
def client(hub: HubEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.hf_endpoint) as c:
        yield c


def snapshot(hub: HubEmulator, tmp_path: Path, repo_id: str, **kw: Any) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, cache_dir=tmp_path / "cache", endpoint=hub.hf_endpoint, **kw))


def test_snapshot_download_model_is_byte_identical_with_lfs_through_cdn(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    hub.reset_stats()
    path = snapshot(hub, tmp_path, "org/tiny", token="hf_alice")
    source = files_of(root / "models/org/tiny")
    assert files_of(path) == source
    stats = hub.stats()
    lfs = sum(len(b) for p, b in source.items() if p.endswith(".safetensors"))
    assert stats["by_listener"]["cdn"]["bytes"] == lfs > 0
    assert stats["cdn_authorization_headers"] == 0
    assert stats["download_bytes"] == sum(len(b) for b in source.values())
    assert path.name == RepoStore(root).snapshot(root / "models/org/tiny").commit


def test_snapshot_download_dataset_keeps_nested_directories(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    path = snapshot(hub, tmp_path, "org/ds", repo_type="dataset")
    got = files_of(path)
    assert got == files_of(root / "datasets/org/ds")
    assert "data/train/train-00000-of-00002.parquet" in got


def test_private_repo_needs_a_token_and_the_token_never_reaches_the_cdn(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        snapshot(hub, tmp_path / "anon", "org/secret")
    hub.reset_stats()
    path = snapshot(hub, tmp_path, "org/secret", token="hf_bob")
    assert files_of(path) == files_of(root / "models/org/secret")
    assert hub.stats()["by_listener"]["cdn"]["requests"] > 0
    assert hub.stats()["cdn_authorization_headers"] == 0


def test_pinned_tag_branch_and_commit_serve_that_revision(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    source = files_of(root / "models/org/tiny@v1.0")
    commit = RepoStore(root).snapshot(root / "models/org/tiny@v1.0").commit
    for i, rev in enumerate(["v1.0", "feature/x", commit]):
        path = snapshot(hub, tmp_path / str(i), "org/tiny", revision=rev)
        assert files_of(path) == source
        assert path.name == commit


def test_hf_hub_download_fetches_one_regular_and_one_lfs_file(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    for name in ("config.json", "model-00002-of-00002.safetensors"):
        got = hf_hub_download("org/tiny", name, cache_dir=tmp_path, endpoint=hub.hf_endpoint)
        assert Path(got).read_bytes() == (root / "models/org/tiny" / name).read_bytes()


def test_official_client_raises_the_matching_error_types(hub: HubEmulator, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cases: list[tuple[type[Exception], dict[str, Any]]] = [
        (RepositoryNotFoundError, {"repo_id": "org/nope"}),
        (GatedRepoError, {"repo_id": "org/gated"}),
        (GatedRepoError, {"repo_id": "org/gated", "token": "hf_bob"}),
        (RevisionNotFoundError, {"repo_id": "org/tiny", "revision": "nope"}),
        (EntryNotFoundError, {"repo_id": "org/tiny", "filename": "nope.txt"}),
    ]
    for error, kw in cases:
        args = {"filename": "config.json", "cache_dir": tmp_path, "endpoint": hub.hf_endpoint, **kw}
        with pytest.raises(error):
            hf_hub_download(**args)
    ok = hf_hub_download(
        "org/gated", "config.json", cache_dir=tmp_path, token="hf_alice", endpoint=hub.hf_endpoint
    )
    assert Path(ok).is_file()


@pytest.mark.parametrize(
    ("path", "token", "status", "code"),
    [
        ("/org/nope/resolve/main/config.json", None, 401, "RepoNotFound"),
        ("/org/nope/resolve/main/config.json", "hf_bob", 404, "RepoNotFound"),
        ("/api/models/org/secret", None, 401, "RepoNotFound"),
        ("/org/gated/resolve/main/config.json", None, 401, "GatedRepo"),
        ("/org/gated/resolve/main/config.json", "hf_bob", 403, "GatedRepo"),
        ("/org/tiny/resolve/nope/config.json", None, 404, "RevisionNotFound"),
        ("/api/models/org/tiny/revision/nope", None, 404, "RevisionNotFound"),
        ("/org/tiny/resolve/main/nope.json", None, 404, "EntryNotFound"),
        ("/api/models/org/tiny/tree/main/nope", None, 404, "EntryNotFound"),
        ("/api/models/org/tiny", "hf_wrong", 401, None),
    ],
)
def test_errors_carry_status_code_and_message_headers(
    client: httpx.Client, path: str, token: str | None, status: int, code: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for method in ("GET", "HEAD"):
        r = client.request(method, path, headers=headers)
        assert r.status_code == status
        assert r.headers.get("X-Error-Code") == code
        assert r.headers["X-Error-Message"]
        if method == "GET":
            assert r.json()["error"] == r.headers["X-Error-Message"]
        else:
            assert r.content == b""
    if token == "hf_wrong":
        assert r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"


def test_gated_repo_lists_freely_but_serves_files_only_to_approved_users(client: httpx.Client) -> None:
    info = client.get("/api/models/org/gated").json()
    assert info["gated"] == "manual" and info["siblings"]
    r = client.head("/org/gated/resolve/main/config.json", headers={"Authorization": "Bearer hf_alice"})
    assert r.status_code == 200


def test_tree_pages_follow_absolute_link_headers(hub: HubEmulator, client: httpx.Client, root: Path) -> None:
    url: str | None = f"{hub.hf_endpoint}/api/datasets/org/ds/tree/main?recursive=true&expand=false"
    entries, pages = [], 0
    while url:
        r = client.get(url)
        assert r.status_code == 200 and len(r.json()) <= PAGE
        entries += r.json()
        pages += 1
        url = r.links.get("next", {}).get("url")
        assert url is None or url.startswith(f"{hub.hf_endpoint}/api/datasets/org/ds/tree/main?")
    files = {e["path"] for e in entries if e["type"] == "file"}
    assert files == set(files_of(root / "datasets/org/ds"))
    dirs = {e["path"] for e in entries if e["type"] == "directory"}
    assert dirs == {"data", "data/train", "data/validation"}
    assert pages == -(-len(entries) // PAGE) > 1


def test_tree_entries_carry_git_and_lfs_digests(client: httpx.Client, root: Path) -> None:
    store = RepoStore(root)
    snap = store.snapshot(root / "datasets/org/ds")
    top = client.get("/api/datasets/org/ds/tree/main?recursive=false").json()
    assert len(top) <= PAGE and all("/" not in e["path"] for e in top)
    deep = client.get("/api/datasets/org/ds/tree/main/data%2Ftrain?recursive=false").json()
    for e in deep:
        f = snap.by_path[e["path"]]
        assert e["lfs"] == {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        assert e["size"] == f.size and e["oid"] == f.blob_id
    readme = snap.by_path["README.md"]
    assert readme.git_sha1 == readme.blob_id  # not LFS: the oid is the blob's own sha1


def test_revision_info_with_blobs_lists_sizes_and_lfs(client: httpx.Client, root: Path) -> None:
    info = client.get("/api/models/org/tiny/revision/v1.0", params={"blobs": "true"}).json()
    snap = RepoStore(root).snapshot(root / "models/org/tiny@v1.0")
    assert info["id"] == "org/tiny" and info["sha"] == snap.commit
    sizes = {s["rfilename"]: s["size"] for s in info["siblings"]}
    assert sizes == {f.path: f.size for f in snap.files}
    lfs = {s["rfilename"] for s in info["siblings"] if s.get("lfs")}
    assert lfs == {"model-00001-of-00001.safetensors"}
    refs = client.get("/api/models/org/tiny/refs").json()
    assert {b["name"] for b in refs["branches"]} == {"main", "feature/x"}
    assert [t["name"] for t in refs["tags"]] == ["v1.0"]


def test_resolve_and_cdn_answer_ranges_with_206_and_416(client: httpx.Client, root: Path) -> None:
    config = (root / "models/org/tiny/config.json").read_bytes()
    shard = (root / "models/org/tiny/model-00002-of-00002.safetensors").read_bytes()
    head = client.head("/org/tiny/resolve/main/model-00002-of-00002.safetensors")
    assert head.status_code == 302 and head.content == b""
    assert head.headers["X-Linked-Size"] == str(len(shard))
    cdn = head.headers["Location"]
    assert cdn.startswith("http://127.0.0.2:")
    for url, body in (("/org/tiny/resolve/main/config.json", config), (cdn, shard)):
        n = len(body)
        for rng, start, end in (("bytes=2-9", 2, 9), ("bytes=5-", 5, n - 1), ("bytes=-7", n - 7, n - 1),
                                ("bytes=3-999999999", 3, n - 1)):
            r = client.get(url, headers={"Range": rng})
            assert r.status_code == 206
            assert r.headers["Content-Range"] == f"bytes {start}-{end}/{n}"
            assert r.content == body[start : end + 1]
        r = client.get(url, headers={"Range": f"bytes={n}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{n}"
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == body
        assert int(whole.headers["Content-Length"]) == n


def test_regular_file_head_has_etag_commit_and_no_body(client: httpx.Client, root: Path) -> None:
    snap = RepoStore(root).snapshot(root / "models/org/tiny")
    r = client.head("/org/tiny/resolve/main/config.json")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["ETag"] == f'"{snap.by_path["config.json"].git_sha1}"'
    assert r.headers["X-Repo-Commit"] == snap.commit
    assert int(r.headers["Content-Length"]) == snap.by_path["config.json"].size


def test_cdn_refuses_a_tampered_signature(client: httpx.Client) -> None:
    location = client.head("/org/tiny/resolve/main/model-00001-of-00002.safetensors").headers["Location"]
    assert client.get(location.replace("sig=", "sig=0")).status_code == 403
    assert client.get(location.split("?")[0]).status_code == 403


def test_agent_harnesses_is_404(client: httpx.Client) -> None:
    assert client.get("/api/agent-harnesses").status_code == 404


def test_an_edited_folder_is_a_new_commit_at_the_next_request(client: httpx.Client, root: Path) -> None:
    folder = make_model(root, "org/moving", shard_sizes=[1000])
    before = client.get("/api/models/org/moving").json()["sha"]
    (folder / "config.json").write_text('{"model_type": "changed"}')
    after = client.get("/api/models/org/moving").json()["sha"]
    assert after != before
    old = client.head("/org/moving/resolve/" + before + "/config.json")
    assert old.status_code == 404 and old.headers["X-Error-Code"] == "RevisionNotFound"
    new = client.get(f"/org/moving/resolve/{after}/config.json")
    assert new.json() == {"model_type": "changed"} and new.headers["X-Repo-Commit"] == after


def test_official_client_recovers_from_a_truncated_cdn_body(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    from huggingface_hub import hf_hub_download

    hub.set_knobs(truncate_next=1)
    try:
        got = hf_hub_download("org/tiny", "model-00001-of-00002.safetensors", cache_dir=tmp_path,
                              endpoint=hub.hf_endpoint)
        assert hub.knobs()["truncate_next"] == 0  # the fault did fire
    finally:
        hub.clear_knobs()
    assert Path(got).read_bytes() == (root / "models/org/tiny/model-00001-of-00002.safetensors").read_bytes()
