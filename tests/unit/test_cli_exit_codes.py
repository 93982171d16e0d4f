"""The ``raydf`` command's exit status and output in the cases a user meets first.

Each case runs the real command (in-process, or as a subprocess where the
terminal itself is the subject: Ray's output, a closed pipe, a hang) against
the hub emulator; none needs a Ray cluster. The cases that need one are in
tests/cluster/test_cli_cases.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydf.cli import main
from raydf.options import make_request
from raydf.testing.hub import HubEmulator, make_model

KiB = 2**10
REPO_ROOT = Path(__file__).resolve().parents[2]
FILE = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_model(root, "org/m", shard_sizes=[64 * KiB, 32 * KiB], seed=11)
    return root


@pytest.fixture(scope="module")
def hub(root: Path) -> Iterator[HubEmulator]:
    with HubEmulator(root) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def isolated(hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", hub.hf_endpoint)
    monkeypatch.setenv("RAYDF_CLI_LOG", str(tmp_path / "cli.log"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAYDF_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    hub.reset_stats()


def raydf(*args: str, stdout: int | None = subprocess.PIPE, env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: its own process, its own stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "raydf.cli", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydf: error: "), stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [
    ["get", "hf://org/m", "-O", "out", "-r", "--no-progress"],
    ["status"],
    ["cache", "ls"],
    ["warm", "hf://org/m", "--no-progress"],
])
@pytest.mark.parametrize("where", ["nothing listens", "not ray", "RAY_ADDRESS"])
def test_an_address_without_a_ray_cluster_is_one_line_and_exit_2(
    command: list[str], where: str, hub: HubEmulator, tmp_path: Path,
) -> None:
    # The hub emulator's port answers, but HTTP/1.1, not Ray's GCS.
    address = {"nothing listens": f"127.0.0.1:{free_port()}",
               "not ray": hub.hf_endpoint.removeprefix("http://"),
               "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}[where]
    flag = [] if where == "RAY_ADDRESS" else ["--address", address]
    env = {"RAY_ADDRESS": address} if where == "RAY_ADDRESS" else {}
    # The timeout only bounds a hang (ray.init alone retries for minutes).
    done = raydf(*command, *flag, env=env, timeout=90)
    line = one_error_line(done.stderr)
    assert done.returncode == 2, done.stderr
    assert address in line and "GCS port" in line
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()


def test_json_prints_one_error_object_when_no_cluster_answers(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    done = raydf("get", "hf://org/m", "-O", "out", "-r", "--json", "--address", address,
                 timeout=90)
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report == {"ok": False, "exit_code": 2, "url": "hf://org/m",
                      "error": one_error_line(done.stderr).removeprefix("raydf: error: ")}


@pytest.mark.parametrize(("argv", "code"), [
    (["get", "hf://bad", "-O", "x", "--local"], 2),
    (["get", "hf://org/nothere", "-O", "x", "-r", "--local"], 3),
    (["cache", "rm", "sha256-" + "0" * 64, "--local"], 2),
])
def test_json_prints_one_error_object_on_early_errors(
    argv: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--json"]) == code
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # one object, alone on stdout
    assert report["ok"] is False and report["exit_code"] == code
    assert report["error"] == one_error_line(captured.err).removeprefix("raydf: error: ")
    assert report["url"] == (argv[1] if argv[0] == "get" else None)


def test_a_successful_json_report_says_ok_and_its_exit_code(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "hf://org/m", "-O", "out", "-r", "--local", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["exit_code"] == 0 and report["files"] > 0


def test_recursive_into_an_existing_file_is_exit_5_before_any_origin_byte(
    hub: HubEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_bytes(b"mine")
    assert main(["get", "hf://org/m", "-O", "afile", "-r", "--local", "--no-progress"]) == 5
    line = one_error_line(capsys.readouterr().err)
    assert f"{tmp_path / 'afile'}: it is an existing file, not a folder" in line
    assert ".raydf-partial" not in line
    assert (tmp_path / "afile").read_bytes() == b"mine"
    assert hub.stats()["download_bytes"] == 0


def test_one_file_onto_an_existing_folder_is_exit_5_with_the_way_out(
    hub: HubEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "adir").mkdir()
    assert main(["get", f"hf://org/m/{FILE}", "-O", "adir", "--local", "--no-progress"]) == 5
    line = one_error_line(capsys.readouterr().err)
    assert "it is an existing folder" in line and "end it with /" in line
    assert list((tmp_path / "adir").iterdir()) == []
    assert hub.stats()["download_bytes"] == 0


def test_one_file_to_a_trailing_slash_goes_inside_that_folder(root: Path, tmp_path: Path) -> None:
    assert main(["get", f"hf://org/m/{FILE}", "-O", "newdir/", "--local", "--no-progress"]) == 0
    assert (tmp_path / "newdir").is_dir()
    assert (tmp_path / "newdir" / FILE).read_bytes() == (root / "models/org/m" / FILE).read_bytes()


@pytest.mark.parametrize("filters", [["--include", "*.gguf"],
                                     ["--include", "*.safetensors", "--exclude", "model-*"]])
def test_filters_matching_no_file_are_exit_2_naming_the_patterns_and_the_count(
    filters: list[str], root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", "hf://org/m", "-O", "out", "-r", "--local", "--no-progress",
                 *filters]) == 2
    line = one_error_line(capsys.readouterr().err)
    listed = sum(1 for p in (root / "models/org/m").rglob("*") if p.is_file())
    assert all(repr(p) in line for p in filters[1::2])
    assert f"none of the {listed} files under hf://org/m" in line
    assert not (tmp_path / "out").exists()


def test_a_name_too_long_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    # The file is in the cache first, so placing it is the first thing that fails.
    assert raydf("get", f"hf://org/m/{FILE}", "-O", "short", "--local").returncode == 0
    # 256 bytes: over the limit of a name (254 fits: temporary names are shortened).
    done = raydf("get", f"hf://org/m/{FILE}", "-O", "a" * 256, "--local", "--no-progress")
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr
    assert "File name too long" in one_error_line(done.stderr)


def _closed_pipe() -> int:
    """A pipe whose reader is already gone: the first write gets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize("argv", [
    ["get", "hf://org/m", "-O", "out", "-r", "--local", "--json"],
    ["cache", "ls", "--local"],
])
def test_a_closed_stdout_is_a_quiet_exit_141(argv: list[str], tmp_path: Path) -> None:
    assert raydf("get", "hf://org/m", "-O", "first", "-r", "--local").returncode == 0
    write_end = _closed_pipe()
    try:
        done = raydf(*argv, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
def test_a_closed_stdout_or_stderr_still_delivers_and_exits_0(closed: str, tmp_path: Path) -> None:
    # Run with the descriptors closed before Python starts (Python then leaves
    # sys.stdout/sys.stderr as None), as `raydf get ... >&-` in a shell does.
    done = subprocess.run(
        ["sh", "-c", f'exec "$0" -m raydf.cli "$@" {closed}', sys.executable,
         "get", "hf://org/m", "-O", "out", "-r", "--local", "--no-progress"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / FILE).stat().st_size == 64 * KiB


def test_cache_rm_of_a_key_no_cache_holds_is_exit_2_and_of_a_held_key_0(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "rm", "sha256-" + "0" * 64, "--local"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "sha256-" + "0" * 64 in line and "raydf cache ls" in line
    assert main(["get", "hf://org/m", "-O", "out", "-r", "--local", "--no-progress"]) == 0
    assert main(["cache", "ls", "--local", "--json"]) == 0
    key = json.loads(capsys.readouterr().out)["local"][0]["key"]
    assert main(["cache", "rm", key, "--local"]) == 0
    assert json.loads(capsys.readouterr().out)["local"] >= 1


def test_hub_serve_of_a_missing_root_fails_at_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raydf.testing.hub", "serve", "--root", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60,  # bounds the old behaviour: serving
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "nope") in lines[0], done.stderr
    assert done.stdout == ""


def test_a_relative_destination_is_made_absolute_from_the_callers_directory(
    tmp_path: Path,
) -> None:
    request = make_request("hf://org/m", "models/m")
    assert request.dest == tmp_path / "models/m" and request.dest.is_absolute()
    single = make_request(f"hf://org/m/{FILE}", "into/", recursive=False)
    assert single.dest == tmp_path / "into" / FILE


def test_get_help_states_the_exit_codes_and_the_destination_rules(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["get", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("141", "RAYDF_DEBUG=1", "RAYDF_CLI_LOG", "ends in /",
                   '{"ok": false, "error": ..., "exit_code": N, "url": ...}',
                   "matching no file", "where no Ray cluster answers",
                   "-r -O naming an existing file", "the same on every node"):
        assert needle in text, needle
