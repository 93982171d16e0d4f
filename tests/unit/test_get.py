"""`raydf get --local` against the hub emulator: every URL form and every error path.

No Ray here: ``--local`` is the single-node path (the same backends, the same
cache, the same checks as the fan-out's seed and peers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.cli import main
from raydf.testing.hub import HubEmulator, make_dataset, make_model, write_repo_meta

MiB = 2**20
TOKENS = {"hf_alice_token_0001": "alice", "hf_bob_token_0002": "bob"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/model", shard_sizes=[3 * MiB, MiB], seed=1)
    make_model(root, "org/model@v1.0", shard_sizes=[2 * MiB], seed=2)
    make_model(root, "org/model@dev", shard_sizes=[MiB], seed=3)
    write_repo_meta(root, "org/model", tags={"v1.0": "model@v1.0"}, branches={"dev": "model@dev"})
    make_model(root, "org/secret", shard_sizes=[2 * MiB], seed=4)
    write_repo_meta(root, "org/secret", private=True)
    make_model(root, "org/gated", shard_sizes=[MiB], seed=5)
    write_repo_meta(root, "org/gated", gated="manual")
    make_dataset(root, "org/data", file_sizes=[MiB, MiB], seed=6)
    return root


@pytest.fixture(scope="module")
def hub(root: Path) -> Iterator[HubEmulator]:
    # Small tree pages, so every Hugging Face listing here is paginated.
    with HubEmulator(root, tokens=TOKENS, approved={"alice"}, tree_page_size=3) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def isolated(hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file
    monkeypatch.setenv("HF_ENDPOINT", hub.hf_endpoint)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.ms_endpoint)
    hub.reset_stats()
    hub.clear_knobs()


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def get(*args: str) -> int:
    return main(["get", *args, "--local", "--no-progress"])


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("hf://org/model", "models/org/model"),
        ("hf://models/org/model", "models/org/model"),
        ("hf://datasets/org/data", "datasets/org/data"),
        ("modelscope://org/model", "models/org/model"),
        ("modelscope://datasets/org/data", "datasets/org/data"),
    ],
)
def test_whole_repo_is_byte_identical_to_the_hub(url: str, folder: str, root: Path,
                                                  tmp_path: Path) -> None:
    assert get(url, "-O", str(tmp_path / "out"), "-r") == 0
    assert files_of(tmp_path / "out") == files_of(root / folder)


def test_a_folder_of_a_dataset_lands_relative_to_that_folder(root: Path, tmp_path: Path) -> None:
    assert get("hf://datasets/org/data/data/train", "-O", str(tmp_path / "t"), "-r") == 0
    assert files_of(tmp_path / "t") == files_of(root / "datasets/org/data/data/train")


def test_one_file_without_r_goes_to_the_path_given(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "cfg.json"
    assert get("hf://org/model/config.json", "-O", str(target)) == 0
    assert target.read_bytes() == (root / "models/org/model/config.json").read_bytes()


def test_a_repo_without_r_is_refused_with_a_hint(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert get("hf://org/model", "-O", str(tmp_path / "x")) == 2
    assert "-r" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("flags", "folder"),
    [
        (["--hf-revision", "v1.0"], "models/org/model@v1.0"),
        (["--hf-revision", "dev"], "models/org/model@dev"),
        (["--ms-revision", "v1.0"], "models/org/model@v1.0"),
    ],
)
def test_revision_pinned_by_tag_or_branch(flags: list[str], folder: str, root: Path,
                                          tmp_path: Path) -> None:
    url = "modelscope://org/model" if flags[0].startswith("--ms") else "hf://org/model"
    assert get(url, "-O", str(tmp_path / "out"), "-r", *flags) == 0
    assert files_of(tmp_path / "out") == files_of(root / folder)


def test_revision_pinned_by_full_commit(root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert get("hf://org/model", "-O", str(tmp_path / "a"), "-r", "--hf-revision", "v1.0",
               "--json") == 0
    commit = json.loads(capsys.readouterr().out)["commit"]
    assert len(commit) == 40
    assert get("hf://org/model", "-O", str(tmp_path / "b"), "-r", "--hf-revision", commit) == 0
    assert files_of(tmp_path / "b") == files_of(root / "models/org/model@v1.0")


def test_unknown_revision_says_which_flag_to_fix(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert get("hf://org/model", "-O", str(tmp_path / "o"), "-r", "--hf-revision", "nope") == 3
    err = capsys.readouterr().err
    assert "nope" in err and "--hf-revision" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_private_repo_needs_the_token_and_the_cdn_never_sees_it(
    hub: HubEmulator, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get("hf://org/secret", "-O", str(tmp_path / "anon"), "-r") == 3
    assert "HF_TOKEN" in capsys.readouterr().err
    assert get("hf://org/secret", "-O", str(tmp_path / "ok"), "-r",
               "--hf-token", "hf_alice_token_0001") == 0
    assert files_of(tmp_path / "ok") == files_of(root / "models/org/secret")
    stats = hub.stats()
    assert stats["by_listener"]["cdn"]["requests"] > 0
    assert stats["cdn_authorization_headers"] == 0


def test_private_repo_token_from_the_environment(root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_alice_token_0001")
    assert get("hf://org/secret", "-O", str(tmp_path / "env"), "-r") == 0
    # ... and the flag wins over the environment.
    assert get("hf://org/secret", "-O", str(tmp_path / "flag"), "-r",
               "--hf-token", "hf_wrong_token_9999") == 3


def test_wrong_token_is_reported_without_echoing_it(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert get("hf://org/model", "-O", str(tmp_path / "o"), "-r",
               "--hf-token", "hf_wrong_token_9999") == 3
    err = capsys.readouterr().err
    assert "token" in err and "hf_wrong_token_9999" not in err


@pytest.mark.parametrize(
    ("token", "needle"),
    [(None, "gated"), ("hf_bob_token_0002", "no access")],
)
def test_gated_repo_without_access_says_how_to_get_it(
    token: str | None, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--hf-token", token] if token else []
    assert get("hf://org/gated", "-O", str(tmp_path / "g"), "-r", *extra) == 3
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_gated_repo_with_an_approved_token(root: Path, tmp_path: Path) -> None:
    assert get("hf://org/gated", "-O", str(tmp_path / "g"), "-r",
               "--hf-token", "hf_alice_token_0001") == 0
    assert files_of(tmp_path / "g") == files_of(root / "models/org/gated")


def test_modelscope_private_repo_with_its_token(root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert get("modelscope://org/secret", "-O", str(tmp_path / "anon"), "-r") == 3
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "hf_alice_token_0001")
    assert get("modelscope://org/secret", "-O", str(tmp_path / "ok"), "-r") == 0
    assert files_of(tmp_path / "ok") == files_of(root / "models/org/secret")


def test_missing_repo_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert get("hf://org/nothere", "-O", str(tmp_path / "a"), "-r") == 3
    assert "not found" in capsys.readouterr().err
    assert get("hf://org/model/nothere.txt", "-O", str(tmp_path / "b")) == 3
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_include_and_exclude_filter_with_huggingface_hub_semantics(
    root: Path, tmp_path: Path
) -> None:
    assert get("hf://datasets/org/data", "-O", str(tmp_path / "i"), "-r",
               "--include", "*.parquet", "--exclude", "data/validation/") == 0
    got = sorted(files_of(tmp_path / "i"))
    assert got == sorted(p.relative_to(root / "datasets/org/data").as_posix()
                         for p in (root / "datasets/org/data/data/train").glob("*.parquet"))


def test_a_corrupted_byte_is_an_error_and_no_file_is_placed(
    hub: HubEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.set_knobs(corrupt_next=1)
    assert get("hf://org/model/model-00001-of-00002.safetensors",
               "-O", str(tmp_path / "shard.safetensors")) == 4
    assert "mismatch" in capsys.readouterr().err
    assert list(tmp_path.glob("shard*")) == []
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_a_rerun_into_the_same_folder_reads_nothing_from_the_origin(
    hub: HubEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get("hf://org/model", "-O", str(tmp_path / "m"), "-r") == 0
    hub.reset_stats()
    assert get("hf://org/model", "-O", str(tmp_path / "m"), "-r", "--json") == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["origin_bytes"] == 0 and hub.stats()["download_bytes"] == 0


def test_json_report_has_the_documented_fields(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert get("hf://org/model", "-O", str(tmp_path / "m"), "-r", "--json") == 0
    out = capsys.readouterr().out.strip()
    report = json.loads(out)  # one object, alone on stdout
    for key in ("url", "commit", "files", "bytes", "origin_bytes", "origin_requests",
                "p2p_bytes", "seconds", "nodes"):
        assert key in report
    assert report["origin_bytes"] == report["bytes"]
    assert {"node_id", "path", "bytes", "seconds", "ok"} <= set(report["nodes"][0])


def test_a_modelscope_listing_cut_at_its_cap_is_walked_per_folder(hub: HubEmulator,
                                                                  root: Path) -> None:
    from raydf.backends import BackendOptions
    from raydf.backends.modelscope import FILES_LIMIT, ModelScopeBackend
    from raydf.uri import parse_url

    many = root / "models/org/many"
    for i in range(FILES_LIMIT + 30):
        path = many / f"d{i % 7}" / f"f{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(i))
    backend = ModelScopeBackend(parse_url("modelscope://org/many"),
                                BackendOptions(endpoint=hub.ms_endpoint))
    try:
        listed = backend.list_files(backend.resolve())
    finally:
        backend.close()
    assert sorted(f.path for f in listed) == sorted(
        p.relative_to(many).as_posix() for p in many.rglob("*.txt"))
    assert all(f.sha256 for f in listed)


def test_an_http_url_is_fetched_with_ranged_requests(hub: HubEmulator, root: Path,
                                                     tmp_path: Path) -> None:
    url = f"{hub.hf_endpoint}/org/model/resolve/main/model-00001-of-00002.safetensors"
    assert get(url, "-O", str(tmp_path / "s.safetensors")) == 0
    assert (tmp_path / "s.safetensors").read_bytes() == \
        (root / "models/org/model/model-00001-of-00002.safetensors").read_bytes()
