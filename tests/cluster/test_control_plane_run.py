"""benchmarks/control_plane.py runs the real scheduler against stand-in nodes (small K)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "control_plane.py"


def test_every_node_is_given_every_piece_and_the_calls_are_counted(tmp_path: Path) -> None:
    out = tmp_path / "cp.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--nodes", "3", "--pieces", "40", "--groups", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert row["ok"] and row["deliveries"] == 3 * 40
    assert row["calls"]["to:submit"] == 1 and row["calls"]["seed:fetch"] == 40  # origin once per piece
    assert row["scheduler_calls"] == sum(row["calls"].values()) > 0
    assert row["scheduler_cpu_seconds"] > 0
    assert "deliveries/s" in done.stdout
