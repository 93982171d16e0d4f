"""Zones in the fan-out simulation (benchmarks/simulate.py --zones): the slower
links between zones and the cross-zone bytes, zoned policy against blind."""

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
    name = "raydf_bench_simulate"  # the name tests/unit/test_simulate.py loads it under
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "simulate.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sim = _load()


def test_a_transfer_between_zones_runs_at_the_factor_of_its_share() -> None:
    """One 4 MiB piece, every link 1 GB/s; n0 is in the seed's zone, n1 not.
    The seed serves both at once (0.5 GB/s each, n1's times 0.25); once n0
    has it, n1's transfer runs at 0.25 of the whole upload."""
    size, bw = 4 * MiB, 1 * GB
    r = sim.simulate(2, size, None, origin_bw=bw, seed_up=bw, up=(bw, bw), down=(bw, bw),
                     files={"model.bin": size}, zones=2, cross_bw=0.25)
    s = size / bw
    fetch, both = s, s / 0.5  # n0 done; n1 has 1 - 0.125 * 2 = 0.75 of it left
    assert r.seconds == pytest.approx(fetch + both + 0.75 * s / 0.25)
    assert (r.cross_bytes, r.cross_transfers, r.cross_ratio) == (size, 1, 1.0)


@pytest.fixture(scope="module")
def zoned_and_blind() -> tuple:
    args = {"nodes": 12, "size": 512 * MiB, "piece": 16 * MiB, "zones": 3, "cross_bw": 0.25}
    return sim.simulate(**args), sim.simulate(**args, blind=True)


def test_the_zoned_policy_sends_about_one_copy_into_each_other_zone(zoned_and_blind) -> None:
    zoned, _ = zoned_and_blind
    floor = 2 * zoned.repo_bytes  # (Z - 1) x F: every byte must enter z1 and z2
    assert floor <= zoned.cross_bytes <= 1.1 * floor
    assert zoned.cross_ratio == zoned.cross_bytes / floor and zoned.policy == "zoned"
    assert zoned.origin_bytes == zoned.repo_bytes and zoned.p2p_bytes == 12 * zoned.repo_bytes
    assert 1.0 <= zoned.ratio < 1.2


def test_the_blind_policy_sends_far_more_across_on_the_same_links(zoned_and_blind) -> None:
    zoned, blind = zoned_and_blind
    assert blind.policy == "blind" and blind.zones == 3 and blind.cross_bw == 0.25
    assert blind.cross_bytes > 1.5 * zoned.cross_bytes  # 12 nodes, 3 zones: ~2/3 of all copies
    assert blind.p2p_bytes == zoned.p2p_bytes and blind.seconds > zoned.seconds
    assert blind.bound == zoned.bound and blind.zone_bound == zoned.zone_bound >= zoned.bound


def test_one_zone_is_the_simulation_without_zones() -> None:
    plain = sim.simulate(20, 1 * GiB, 16 * MiB)
    one = sim.simulate(20, 1 * GiB, 16 * MiB, zones=1, cross_bw=0.1)
    assert (one.seconds, one.cross_bytes, one.cross_ratio, one.policy) == (plain.seconds, 0, 0.0, "blind")
    assert one.zone_bound == one.bound


def test_cli_runs_zoned_and_blind_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "zones.json"
    argv = ["--nodes", "8", "--size", "256MiB", "--piece", "16MiB", "--decision-us", "0",
            "--zones", "2", "--cross-zone-bandwidth", "0.5", "--also-blind", "--json", str(out)]
    assert sim.main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert "cross/(Z-1)F" in table[0] and len(table) == 3
    rows = json.loads(out.read_text())["results"]
    assert [(r["zones"], r["cross_bw"], r["policy"]) for r in rows] == [(2, 0.5, "zoned"), (2, 0.5, "blind")]
    assert rows[0]["cross_ratio"] <= 1.1 < rows[1]["cross_ratio"]


def test_bad_zone_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="cross_bw"):
        sim.simulate(4, 64 * MiB, 16 * MiB, zones=2, cross_bw=0)
    with pytest.raises(SystemExit):
        sim.main(["--zones", "0", "--nodes", "2", "--size", "64MiB"])
