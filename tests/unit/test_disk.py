"""Disk trouble: a clear error, no partial file left, nothing at a final path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.cli import main
from raydf.testing.hub import HubEmulator, make_model

MiB = 2**20


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/model", shard_sizes=[4 * MiB], seed=41)
    with HubEmulator(root) as emulator:
        yield emulator


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name.endswith("partial")]


def test_destination_under_a_file_is_a_storage_error(
    hub: HubEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    (tmp_path / "afile").write_text("not a folder")
    code = main(["get", "hf://org/model", "-O", str(tmp_path / "afile" / "m"), "-r", "--local",
                 "--no-progress", "--hf-endpoint", hub.hf_endpoint])
    err = capsys.readouterr().err
    assert code == 5 and err.startswith("raydf: error: cannot write"), err
    assert leftovers(tmp_path) == []
    blobs = list((tmp_path / "cache" / "blobs").iterdir())
    assert all(b.stat().st_mode & 0o222 == 0 for b in blobs)  # only verified, read-only blobs


def test_destination_on_a_read_only_file_system_is_a_storage_error(
    hub: HubEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    code = main(["get", "hf://org/model/config.json", "-O", "/proc/raydf-config.json",
                 "--local", "--no-progress", "--hf-endpoint", hub.hf_endpoint])
    assert code == 5, capsys.readouterr().err
    assert not Path("/proc/raydf-config.json").exists()


def test_a_file_size_limit_is_a_clear_no_space_error(hub: HubEmulator, tmp_path: Path) -> None:
    # RLIMIT_FSIZE stands in for a full disk without needing a mount.
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({2 * MiB}, {2 * MiB}))\n"
        "from raydf.cli import main\n"
        f"sys.exit(main(['get', 'hf://org/model', '-O', {str(tmp_path / 'out')!r}, '-r',"
        f" '--local', '--no-progress', '--hf-endpoint', {hub.hf_endpoint!r}]))\n"
    )
    env = dict(os.environ, RAYDF_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 5, result.stderr
    assert "no space left" in result.stderr and "Traceback" not in result.stderr
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "out" / "model-00001-of-00001.safetensors").exists()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_mid_download_removes_the_partial_and_places_nothing(
    hub: HubEmulator, small_tmpfs: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYDF_CACHE", str(small_tmpfs / "cache"))
    code = main(["get", "hf://org/model", "-O", str(small_tmpfs / "out"), "-r", "--local",
                 "--no-progress", "--hf-endpoint", hub.hf_endpoint])
    err = capsys.readouterr().err
    assert code == 5 and "no space left" in err, err
    assert leftovers(small_tmpfs) == []
    assert not (small_tmpfs / "out" / "model-00001-of-00001.safetensors").exists()
