"""The hub emulator speaks ModelScope well enough for the official client, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from raydf.testing import HubEmulator, make_dataset, make_model
from raydf.testing.hub import write_repo_meta
from raydf.testing.hub.modelscope import numeric_id
from raydf.testing.hub.repos import RepoStore


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_has_source(got: Path, source: Path) -> None:
    """Every source file arrived byte for byte (the client may add its own metadata)."""
    want = files_of(source)
    assert {p: b for p, b in files_of(got).items() if p in want} == want


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/tiny", shard_sizes=[3 * 2**20, 2 * 2**20 + 5], seed=1)
    make_model(root, "org/tiny@v1.0", shard_sizes=[2**20], seed=2)
    write_repo_meta(root, "org/tiny", tags={"v1.0": "tiny@v1.0"})
    make_model(root, "org/secret", shard_sizes=[2**20], seed=3)
    write_repo_meta(root, "org/secret", private=True)
    make_model(root, "org/gated", shard_sizes=[2**20], seed=4)
    write_repo_meta(root, "org/gated", gated=True)
    make_dataset(root, "org/ds", file_sizes=[2**20, 2**20], seed=5)
    many = root / "models/org/many"
    for rel in ["top1.txt", "top2.txt"] + [f"{d}/{i}.txt" for d in "abc" for i in range(3)]:
        (many / rel).parent.mkdir(parents=True, exist_ok=True)
        (many / rel).write_text(f"content of {rel}\n")
    return root


@pytest.fixture(scope="module")
def hub(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    home = tmp_path_factory.mktemp("home")
    tokens = {"ms_alice": "alice", "ms_bob": "bob"}
    with HubEmulator(root, tokens=tokens, approved={"alice"}) as hub, pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("MODELSCOPE_CACHE", str(home / "modelscope"))
        mp.setenv("MODELSCOPE_ENDPOINT", hub.ms_endpoint)
        mp.setenv("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")
        mp.setenv("INTRA_CLOUD_ACCELERATION", "false")
        mp.delenv("MODELSCOPE_API_TOKEN", raising=False)
        import modelscope_hub.config

        # The client builds its default config (endpoint, token) once per process:
        # start from a fresh one, and pass endpoint= explicitly below.
        mp.setattr(modelscope_hub.config, "_default_config", None)
        yield hub


@pytest.fixture
def client(hub: HubEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{hub.ms_endpoint}/api/v1") as c:
        yield c


def test_snapshot_download_model_is_byte_identical(hub: HubEmulator, root: Path, tmp_path: Path) -> None:
    from modelscope import snapshot_download

    hub.reset_stats()
    path = Path(snapshot_download("org/tiny", cache_dir=str(tmp_path), endpoint=hub.ms_endpoint))
    assert_has_source(path, root / "models/org/tiny")
    stats = hub.stats()
    assert stats["download_bytes"] == sum(f.stat().st_size for f in (root / "models/org/tiny").iterdir())
    assert stats["by_listener"]["ms"]["requests"] == stats["requests"]


def test_dataset_snapshot_download_keeps_nested_directories(
    hub: HubEmulator, root: Path, tmp_path: Path
) -> None:
    from modelscope.hub.snapshot_download import dataset_snapshot_download

    path = Path(dataset_snapshot_download("org/ds", cache_dir=str(tmp_path), endpoint=hub.ms_endpoint))
    assert_has_source(path, root / "datasets/org/ds")
    assert (path / "data/train/train-00001-of-00002.parquet").is_file()


def test_private_repo_needs_a_token(hub: HubEmulator, root: Path, tmp_path: Path) -> None:
    from modelscope import snapshot_download

    with pytest.raises(requests.exceptions.HTTPError):
        snapshot_download("org/secret", cache_dir=str(tmp_path / "anon"), endpoint=hub.ms_endpoint)
    got = snapshot_download("org/secret", cache_dir=str(tmp_path), token="ms_bob", endpoint=hub.ms_endpoint)
    path = Path(got)
    assert_has_source(path, root / "models/org/secret")


def test_pinned_tag_serves_that_revision(hub: HubEmulator, root: Path, tmp_path: Path) -> None:
    from modelscope import snapshot_download

    got = snapshot_download("org/tiny", revision="v1.0", cache_dir=str(tmp_path), endpoint=hub.ms_endpoint)
    path = Path(got)
    assert_has_source(path, root / "models/org/tiny@v1.0")
    assert not (path / "model-00002-of-00002.safetensors").exists()


def test_official_client_walks_a_truncated_listing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: HubEmulator
) -> None:
    import modelscope_hub._legacy_api as legacy
    from modelscope import snapshot_download

    monkeypatch.setattr(legacy, "REPO_FILES_TRUNCATION_LIMIT", 6)
    with HubEmulator(root, ms_files_limit=6) as small:
        path = Path(snapshot_download("org/many", cache_dir=str(tmp_path), endpoint=small.ms_endpoint))
        stats = small.stats()
    assert_has_source(path, root / "models/org/many")
    # listings: root (cut), root shallow, then a/, b/ and c/ one by one
    assert stats["requests"] - stats["download_requests"] == 5


def test_files_listing_is_cut_at_the_limit_and_scoped_by_root(root: Path) -> None:
    with HubEmulator(root, ms_files_limit=6) as small, httpx.Client(base_url=small.ms_endpoint) as c:
        url = "/api/v1/models/org/many/repo/files"
        full = c.get(url, params={"Revision": "master", "Recursive": "True"}).json()["Data"]["Files"]
        assert len(full) == 6
        shallow = c.get(url, params={"Revision": "master", "Recursive": "False"}).json()["Data"]["Files"]
        assert [(f["Path"], f["Type"]) for f in shallow] == [
            ("a", "tree"), ("b", "tree"), ("c", "tree"), ("top1.txt", "blob"), ("top2.txt", "blob"),
        ]
        under = c.get(url, params={"Revision": "master", "Recursive": "True", "Root": "b"}).json()
        assert [f["Path"] for f in under["Data"]["Files"]] == ["b/0.txt", "b/1.txt", "b/2.txt"]
        missing = c.get(url, params={"Revision": "master", "Root": "zzz"})
        assert missing.status_code == 404 and missing.json()["Code"] == 404


def test_file_entries_carry_every_field_the_client_reads(client: httpx.Client, root: Path) -> None:
    snap = RepoStore(root).snapshot(root / "models/org/tiny")
    params = {"Revision": "master", "Recursive": "True"}
    body = client.get("/models/org/tiny/repo/files", params=params).json()
    assert (body["Code"], body["Success"], body["Message"]) == (200, True, "success") and body["RequestId"]
    for f in body["Data"]["Files"]:
        entry = snap.by_path[f["Path"]]
        assert f["Name"] == f["Path"].rsplit("/", 1)[-1] and f["Type"] == "blob"
        assert (f["Size"], f["Sha256"], f["IsLFS"], f["Revision"]) == (
            entry.size, entry.sha256, entry.lfs, snap.commit
        )
        assert isinstance(f["CommittedDate"], int)


def test_dataset_tree_pages_and_numeric_id(client: httpx.Client, root: Path) -> None:
    pages, number = [], 1
    while True:
        page = {"Revision": "master", "Recursive": "True", "PageNumber": str(number), "PageSize": "3"}
        files = client.get("/datasets/org/ds/repo/tree", params=page).json()["Data"]["Files"]
        pages.append(files)
        if len(files) < 3:
            break
        number += 1
    paths = [f["Path"] for page in pages for f in page if f["Type"] == "blob"]
    assert sorted(paths) == sorted(files_of(root / "datasets/org/ds"))
    info = client.get("/datasets/org/ds").json()["Data"]
    assert info["Id"] == numeric_id("datasets", "org/ds")
    params = {"Revision": "master", "Recursive": "True"}
    by_name = client.get("/datasets/org/ds/repo/tree", params=params).json()["Data"]["Files"]
    by_id = client.get(f"/datasets/{info['Id']}/repo/tree", params=params).json()["Data"]["Files"]
    assert by_id == by_name and len(by_name) == sum(len(p) for p in pages)


def test_revisions_list_master_and_tags_with_commits(client: httpx.Client, root: Path) -> None:
    store = RepoStore(root)
    data = client.get("/models/org/tiny/revisions").json()["Data"]["RevisionMap"]
    assert [(b["Revision"], b["CommitId"]) for b in data["Branches"]] == [
        ("master", store.snapshot(root / "models/org/tiny").commit)
    ]
    assert [(t["Revision"], t["CommitId"]) for t in data["Tags"]] == [
        ("v1.0", store.snapshot(root / "models/org/tiny@v1.0").commit)
    ]


def test_repo_download_honours_ranges_and_cookie_auth(client: httpx.Client, root: Path) -> None:
    shard = (root / "models/org/secret/model-00001-of-00001.safetensors").read_bytes()
    params = {"Revision": "master", "FilePath": "model-00001-of-00001.safetensors"}
    assert client.get("/models/org/secret/repo", params=params).status_code == 401
    cookie = {"Cookie": "m_session_id=ms_bob"}
    r = client.get("/models/org/secret/repo", params=params, headers={**cookie, "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == shard[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(shard)}"
    past_end = {**cookie, "Range": f"bytes={len(shard)}-"}
    r = client.get("/models/org/secret/repo", params=params, headers=past_end)
    assert r.status_code == 416
    whole = client.get("/models/org/secret/repo", params=params, headers={"Authorization": "Bearer ms_bob"})
    assert whole.status_code == 200 and whole.content == shard


@pytest.mark.parametrize(
    ("path", "params", "token", "status"),
    [
        ("/models/org/nope/repo/files", {}, None, 404),
        ("/models/org/secret/repo/files", {}, None, 401),
        ("/models/org/tiny/repo/files", {}, "ms_wrong", 401),
        ("/models/org/gated/repo", {"FilePath": "config.json"}, None, 401),
        ("/models/org/gated/repo", {"FilePath": "config.json"}, "ms_bob", 403),
        ("/models/org/tiny/repo/files", {"Revision": "nope"}, None, 404),
        ("/models/org/tiny/repo", {"FilePath": "nope.json"}, None, 404),
    ],
)
def test_errors_keep_the_envelope_with_code_equal_to_status(
    client: httpx.Client, path: str, params: dict[str, str], token: str | None, status: int
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.get(path, params=params, headers=headers)
    body = r.json()
    assert r.status_code == status == body["Code"]
    assert body["Success"] is False and body["Message"] and body["RequestId"]


def test_gated_repo_serves_approved_users(client: httpx.Client) -> None:
    r = client.get("/models/org/gated/repo", params={"FilePath": "config.json"},
                   headers={"Authorization": "Bearer ms_alice"})
    assert r.status_code == 200 and r.json()["model_type"] == "llama"


def test_rate_limit_answers_429_with_retry_after_in_the_envelope(
    hub: HubEmulator, client: httpx.Client
) -> None:
    hub.set_knobs(rate_limit=(2, 60))
    try:
        codes = [client.get("/models/org/tiny").status_code for _ in range(3)]
        r = client.get("/models/org/tiny")
    finally:
        hub.clear_knobs()
    assert codes == [200, 200, 429]
    assert r.status_code == 429 and r.json()["Code"] == 429 and int(r.headers["Retry-After"]) >= 1


def test_raydf_sends_the_revision_as_given_like_the_official_client(hub: HubEmulator, root: Path) -> None:
    # modelscope 1.40.2 sends the user's revision (here a tag) as Revision on the
    # listing and on every download; raydf does the same, and keys by the commit.
    from raydf.backends import BackendOptions
    from raydf.backends.modelscope import ModelScopeBackend
    from raydf.uri import parse_url

    backend = ModelScopeBackend(parse_url("modelscope://org/tiny"),
                                BackendOptions(endpoint=hub.ms_endpoint, revision="v1.0"))
    sent: list[httpx.URL] = []
    backend._http._client.event_hooks["request"].append(lambda request: sent.append(request.url))
    try:
        commit = backend.resolve()
        files = backend.list_files(commit)
        shard = next(f for f in files if f.path.endswith(".safetensors"))
        buf = bytearray(shard.size)
        backend.read_into(commit, shard.repo_path, 0, memoryview(buf))
    finally:
        backend.close()
    assert len(commit) == 40 and commit != "v1.0"
    assert bytes(buf) == (root / "models/org/tiny@v1.0" / shard.repo_path).read_bytes()
    file_requests = [u for u in sent if u.path.endswith(("/repo/files", "/repo"))]
    assert len(file_requests) == 3  # the listing, the HEAD probing for a 302, the GET
    assert all(u.params["Revision"] == "v1.0" for u in file_requests)


def test_signed_urls_say_when_they_expire() -> None:
    from raydf.backends.transport import expires_at, expiring

    assert expires_at("http://cdn/x?Expires=1700000000&Signature=s") == 1700000000.0
    s3 = "https://b.s3/k?X-Amz-Date=20260101T000000Z&X-Amz-Expires=600&X-Amz-Signature=s"
    assert expires_at(s3) == 1767225600.0 + 600
    assert expires_at("http://cdn/x?sig=s") is None
    assert expiring(1.0) and not expiring(None)
