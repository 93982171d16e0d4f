"""Hub request budgets and hub requests per file, not per piece, on both hubs.

The emulator's ``budgets`` knob is the Hub's own fixed-window budget, announced
in ``RateLimit`` on every answer; raydf's transport holds requests back
before the hub would refuse them. Pieces are read the way the seed reads them:
``read_into`` from four threads at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from raydf.backends import BackendOptions
from raydf.backends.base import Backend, RemoteFile
from raydf.backends.huggingface import HuggingFaceBackend
from raydf.backends.modelscope import ModelScopeBackend
from raydf.backends.ratelimit import RequestBudget
from raydf.cli import main
from raydf.testing.hub import HubEmulator, make_dataset, make_model
from raydf.uri import parse_url

MiB = 2**20
PIECE = 4 * 2**10  # small pieces, so thousands of them stay a few MiB
WHOLE = 64 * 2**10  # smaller files are one piece (as files under 4 MiB are in raydf)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/big", shard_sizes=[4 * MiB, 4 * MiB, 4 * MiB], seed=41)
    make_model(root, "org/ms-model", shard_sizes=[MiB, MiB], seed=42)
    make_dataset(root, "org/many", file_sizes=[1024] * 29, seed=43)  # 32 files
    make_dataset(root, "org/wide", file_sizes=[64] * 249, seed=44)  # 252 files, 250 parquet
    return root


@pytest.fixture(scope="module")
def hub(root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(root) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def clean(hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", hub.hf_endpoint)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.ms_endpoint)
    hub.clear_knobs()
    hub.reset_stats()
    yield
    hub.clear_knobs()


def read_all_pieces(backend: Backend, commit: str, files: list[RemoteFile]) -> dict[str, bytes]:
    """Every file, in PIECE-sized ranged reads from four threads (as the seed reads)."""
    out = {f.repo_path: bytearray(f.size) for f in files}

    def one(job: tuple[RemoteFile, int]) -> None:
        f, start = job
        view = memoryview(out[f.repo_path])[start:start + piece_of(f)]
        backend.read_into(commit, f.repo_path, start, view)

    jobs = [(f, start) for f in files for start in range(0, f.size, piece_of(f))]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, jobs))
    return {k: bytes(v) for k, v in out.items()}


def piece_of(f: RemoteFile) -> int:
    return PIECE if f.size >= WHOLE else max(f.size, 1)


def on_disk(root: Path, folder: str, files: list[RemoteFile]) -> dict[str, bytes]:
    return {f.repo_path: (root / folder / f.repo_path).read_bytes() for f in files}


def test_the_hub_announces_its_budget_on_every_answer_and_refuses_past_it(
    hub: HubEmulator,
) -> None:
    hub.set_knobs(budgets={"resolvers": [2, 60]})
    url = f"{hub.hf_endpoint}/org/big/resolve/main/config.json"
    with httpx.Client() as client:
        answers = [client.head(url) for _ in range(3)]
    assert [a.headers["RateLimit"].split(";")[1] for a in answers] == ["r=1", "r=0", "r=0"]
    assert answers[0].headers["RateLimit-Policy"] == '"fixed window";"resolvers";q=2;w=60'
    assert answers[2].status_code == 429 and int(answers[2].headers["Retry-After"]) >= 1


def test_more_files_than_one_window_of_resolvers_draws_no_429(
    hub: HubEmulator, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.set_knobs(budgets={"resolvers": [12, 2], "api": [12, 2]})
    argv = ["get", "hf://datasets/org/many", "-O", str(tmp_path / "out"), "-r", "--local",
            "--no-progress", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 32 > 12  # more files than one window allows
    stats = hub.stats()
    assert stats["status_counts"].get("429", 0) == 0
    assert report["hub_requests"]["resolve"] == 32  # one per file, budget kept
    got = tmp_path / "out"
    assert all((got / p.relative_to(root / "datasets/org/many")).read_bytes() == p.read_bytes()
               for p in (root / "datasets/org/many").rglob("*") if p.is_file())


def test_a_model_of_3000_pieces_costs_one_resolve_per_file(hub: HubEmulator, root: Path) -> None:
    hub.set_knobs(xet=True, budgets={"resolvers": [40, 300]})
    backend = HuggingFaceBackend(parse_url("hf://org/big"), BackendOptions(endpoint=hub.hf_endpoint))
    try:
        commit = backend.resolve()
        files = backend.list_files(commit)
        pieces = sum(-(-f.size // piece_of(f)) for f in files)
        assert pieces >= 3000
        got = read_all_pieces(backend, commit, files)
        kinds = backend.requests_by_kind
    finally:
        backend.close()
    assert got == on_disk(root, "models/org/big", files)
    stats = hub.stats()
    resolves = sum(n["requests"] for k, n in stats["by_file"].items() if k.startswith("hf:"))
    resolves -= stats["by_listener"]["cdn"]["requests"]
    assert resolves == kinds["resolve"] <= len(files) + 2
    assert stats["status_counts"].get("429", 0) == 0


def test_a_modelscope_model_of_100_pieces_costs_hub_requests_per_file(
    hub: HubEmulator, root: Path
) -> None:
    hub.set_knobs(ms_redirect=True)  # large files 302 to object storage, as on ModelScope
    backend = ModelScopeBackend(parse_url("modelscope://org/ms-model"),
                                BackendOptions(endpoint=hub.ms_endpoint))
    try:
        commit = backend.resolve()
        files = backend.list_files(commit)
        assert sum(-(-f.size // piece_of(f)) for f in files) >= 100
        got = read_all_pieces(backend, commit, files)
    finally:
        backend.close()
    assert got == on_disk(root, "models/org/ms-model", files)
    stats = hub.stats()
    assert stats["by_listener"]["cdn"]["requests"] >= 500  # the shards' pieces came from storage
    assert stats["by_listener"]["ms"]["requests"] <= len(files) + 2  # revisions, listing


def test_a_250_file_dataset_is_listed_whole_through_pages_capped_at_100(
    hub: HubEmulator,
) -> None:
    hub.set_knobs(ms_page_cap=100)
    backend = ModelScopeBackend(parse_url("modelscope://datasets/org/wide"),
                                BackendOptions(endpoint=hub.ms_endpoint))
    try:
        files = backend.list_files(backend.resolve())
    finally:
        backend.close()
    assert sum(f.path.endswith(".parquet") for f in files) == 250
    assert len({f.path for f in files}) == len(files) == 252


def test_a_dataset_commit_is_the_tree_entries_commit_id(hub: HubEmulator) -> None:
    backend = ModelScopeBackend(parse_url("modelscope://datasets/org/wide"),
                                BackendOptions(endpoint=hub.ms_endpoint))
    with httpx.Client() as client:
        page = client.get(f"{hub.ms_endpoint}/api/v1/datasets/org/wide/repo/tree",
                          params={"Revision": "master", "PageNumber": 1, "PageSize": 1}).json()
    try:
        assert backend.resolve() == page["Data"]["Files"][0]["CommitId"]
    finally:
        backend.close()


def test_budget_waits_for_the_reset_once_what_was_announced_is_spent() -> None:
    now = [100.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    budget = RequestBudget(clock=lambda: now[0], sleep=sleep)
    answer = httpx.Response(200, headers={"RateLimit": '"resolvers";r=1;t=30',
                                          "RateLimit-Policy": '"fixed window";"resolvers";q=5;w=300'})
    probe = budget.acquire("resolve")  # nothing announced yet: one request goes alone
    budget.settle("resolve", probe, answer)  # learns: 1 left for 30 s
    spent = budget.acquire("resolve")
    assert spent == "resolvers" and waits == []
    budget.settle("resolve", spent, None)
    assert budget.acquire("resolve") == "resolvers"  # had to wait out the window
    assert waits == [30.0]
