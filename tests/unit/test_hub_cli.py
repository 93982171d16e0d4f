"""``python -m raydf.testing.hub``: serve prints its endpoints and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from raydf.testing.hub.__main__ import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serve_prints_three_endpoints_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    made = main(["make-model", "--root", str(tmp_path), "org/m", "--shards", "2", "--shard-size", "4096"])
    assert made == 0
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "raydf.testing.hub", "serve", "--root", str(tmp_path),
           "--token", "hf_x=alice", "--bandwidth", "1e9"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))
        assert set(lines) == {"HF_ENDPOINT", "MODELSCOPE_ENDPOINT", "CDN_ENDPOINT"}
        assert lines["CDN_ENDPOINT"].startswith("http://127.0.0.2:")
        info = httpx.get(f"{lines['HF_ENDPOINT']}/api/models/org/m", headers={"Authorization": "Bearer hf_x"})
        assert info.status_code == 200 and info.json()["id"] == "org/m"
        bad = httpx.get(f"{lines['HF_ENDPOINT']}/api/models/org/m", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        knobs = httpx.get(f"{lines['HF_ENDPOINT']}/_emulator/knobs").json()
        assert knobs["bandwidth"] == 1e9
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--token" in out and "--per-connection" in out


def test_bad_token_flag_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--root", str(tmp_path), "--token", "no-user"])
    assert exit_info.value.code == 2
    assert "TOKEN=USER" in capsys.readouterr().err


def test_make_dataset_prints_the_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["make-dataset", "--root", str(tmp_path), "org/d", "--shards", "1", "--shard-size", "100"]
    assert main(argv) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "datasets/org/d"
    assert (folder / "data/train/train-00000-of-00001.parquet").stat().st_size == 100
