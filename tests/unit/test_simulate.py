"""The fan-out simulation (benchmarks/simulate.py), at small sizes: fast, no Ray."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

GB = 10**9
MiB = 2**20
GiB = 2**30


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "simulate.py"
    spec = importlib.util.spec_from_file_location("raydf_bench_simulate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sim = _load()

UPLOAD_BOUND = {"origin_bw": 20 * GB, "seed_up": 2 * GB, "up": (0.5 * GB, 1.5 * GB), "down": (2 * GB, 4 * GB)}
DOWNLOAD_BOUND = {"origin_bw": 20 * GB, "seed_up": 5 * GB, "up": (1 * GB, 3 * GB), "down": (1 * GB, 3 * GB)}


@pytest.mark.parametrize("nodes", [1, 7, 30])
def test_origin_is_read_once_and_every_node_gets_the_whole_repo(nodes: int) -> None:
    r = sim.simulate(nodes, 1 * GiB, 64 * MiB)
    assert r.origin_bytes == r.repo_bytes == 1 * GiB
    assert r.p2p_bytes == nodes * r.repo_bytes
    assert len(r.node_seconds) == nodes and r.node_seconds[-1] == r.seconds


@pytest.mark.parametrize("regime", [{}, UPLOAD_BOUND, DOWNLOAD_BOUND], ids=["origin", "up", "down"])
@pytest.mark.parametrize("nodes", [1, 5, 40])
def test_time_is_within_1_2x_of_the_kumar_ross_bound(regime: dict, nodes: int) -> None:
    r = sim.simulate(nodes, 2 * GiB, 16 * MiB, **regime)
    assert 1.0 <= r.ratio < 1.2, r


def test_the_seed_serves_a_small_share_with_many_nodes() -> None:
    r = sim.simulate(50, 2 * GiB, 16 * MiB, **UPLOAD_BOUND)
    assert r.seed_upload_bytes < 0.1 * r.p2p_bytes


def test_bound_is_the_slowest_of_origin_slowest_download_and_total_upload() -> None:
    one = sim.simulate(1, 1 * GiB, 64 * MiB, origin_bw=2 * GB, up=(1 * GB, 1 * GB), down=(1 * GB, 1 * GB))
    assert one.bound == pytest.approx(GiB / GB)  # the node's download
    many = sim.simulate(
        10, 1 * GiB, 64 * MiB, origin_bw=20 * GB, seed_up=2 * GB, up=(GB, GB), down=(5 * GB, 5 * GB)
    )
    assert many.bound == pytest.approx(10 * GiB / (12 * GB))  # everyone's upload, seed's too


def test_same_random_seed_same_result() -> None:
    a, b = (sim.simulate(12, 1 * GiB, 32 * MiB, **UPLOAD_BOUND, rng_seed=3) for _ in range(2))
    assert (a.seconds, a.node_seconds) == (b.seconds, b.node_seconds)


def test_model_repo_has_shards_and_small_files_adding_up_to_the_size() -> None:
    repo = sim.model_repo(100 * GiB)
    assert sum(repo.values()) == 100 * GiB
    shards = [n for n in repo if n.endswith(".safetensors")]
    assert len(shards) == 20 and "config.json" in repo
    assert sim.model_repo(1000) == {"model.safetensors": 1000}


def test_sizes_read_decimal_and_binary_units() -> None:
    assert sim.parse_size("64MiB") == 64 * MiB
    assert sim.parse_size("1.5GB") == 1_500_000_000
    assert sim.parse_size("2gb/s") == 2 * GB
    assert sim.parse_size("1e9") == GB
    with pytest.raises(ValueError, match="not a size"):
        sim.parse_size("fast")


def test_cli_prints_a_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.json"
    argv = ["--nodes", "2,4", "--size", "512MiB", "--piece", "64MiB", "--decision-us", "0,30",
            "--json", str(out)]
    assert sim.main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["nodes", "decision", "us", "pieces", "time"] and len(table) == 5
    rows = json.loads(out.read_text())["results"]
    assert [(r["nodes"], r["cost"]["decision_us"]) for r in rows] == [(2, 0), (2, 30), (4, 0), (4, 30)]
    assert all(r["origin_bytes"] == r["repo_bytes"] and r["ratio"] >= 1 for r in rows)


# -- the control plane's charge ----------------------------------------------------


def test_free_control_plane_gives_the_uncharged_result() -> None:
    free = sim.simulate(30, 2 * GiB, 16 * MiB, cost=sim.ControlCost(0, 0, 0))
    assert free.seconds == pytest.approx(2.2521752356508027, rel=1e-12)  # before charging existed
    assert free.scheduler_seconds == 0 and free.seconds == sim.simulate(30, 2 * GiB, 16 * MiB).seconds


def test_one_piece_to_one_node_pays_every_decision_report_and_message_in_turn() -> None:
    size, bw = 4 * MiB, 1 * GB  # one piece (the planner cuts nothing under 4 MiB)
    cost = sim.ControlCost(decision_us=250_000, report_us=40_000, latency_ms=30)
    r = sim.simulate(1, size, None, origin_bw=bw, seed_up=bw, up=(bw, bw), down=(bw, bw),
                     files={"model.bin": size}, cost=cost)
    # fetch decided, sent, read; reported, folded; pull decided, sent, moved
    moving = 2 * size / bw
    assert r.seconds == pytest.approx(2 * 0.25 + 3 * 0.03 + 0.04 + moving)
    assert r.scheduler_seconds == pytest.approx(2 * 0.25 + 2 * 0.04)  # two reports folded


def test_a_costly_scheduler_serializes_every_transfer() -> None:
    free = sim.simulate(6, 256 * MiB, 16 * MiB)
    decision = 10.0  # s per assignment: far longer than any transfer here
    slow = sim.simulate(6, 256 * MiB, 16 * MiB, cost=sim.ControlCost(decision_us=decision * 1e6))
    assert slow.transfers == free.transfers
    assert slow.scheduler_seconds == pytest.approx(slow.transfers * decision)
    # each transfer starts once the scheduler has decided it, one after the other
    assert slow.transfers * decision <= slow.seconds <= slow.transfers * decision + free.seconds
    assert slow.origin_bytes == slow.repo_bytes  # still read once


def test_latency_alone_delays_but_keeps_the_origin_read_once() -> None:
    free = sim.simulate(20, 1 * GiB, 16 * MiB)
    late = sim.simulate(20, 1 * GiB, 16 * MiB, cost=sim.ControlCost(latency_ms=20))
    assert late.seconds > free.seconds + 3 * 0.020  # at least a fetch's and a pull's round trips
    assert late.origin_bytes == late.repo_bytes and late.p2p_bytes == 20 * late.repo_bytes


def test_planner_pieces_are_32_mib_for_5_gib_shards() -> None:
    files = sim.model_repo(130 * GB)
    r = sim.simulate(2, 130 * GB, None, files=files, origin_bw=20 * GB, seed_up=20 * GB,
                     up=(20 * GB, 20 * GB), down=(20 * GB, 20 * GB))
    assert r.piece_bytes == 32 * MiB and 3_800 < r.pieces < 4_000
    assert r.origin_bytes == r.repo_bytes == 130 * GB


def test_measured_costs_take_each_protocols_largest_k(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    rows = [{"protocol": "old", "nodes": 16, "cpu_us_per_delivery": 900.0},
            {"protocol": "old", "nodes": 256, "cpu_us_per_delivery": 1200.0},
            {"protocol": "new", "nodes": 256, "cpu_us_per_delivery": 20.0}]
    path.write_text(json.dumps({"results": rows}))
    assert sim.measured_costs(path) == {"old": 1200.0, "new": 20.0}


def test_negative_costs_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        sim.ControlCost(latency_ms=-1)
