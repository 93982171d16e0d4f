"""The control-plane benchmark's own parts (benchmarks/control_plane.py), without Ray."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from raydf.cluster.protocol import PeerJoin, Pull, PullBatch, PullOutcome, Received, SeedStats
from raydf.testing.standins import StandinNode, StandinPeers, StandinSeed, crc_of


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "control_plane.py"
    spec = importlib.util.spec_from_file_location("raydf_bench_control_plane", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cp = _load()


@pytest.mark.parametrize(("pieces", "files"), [(2000, 8), (7, 3), (5, 9)])
def test_synthetic_repo_has_exactly_the_pieces_asked_for(pieces: int, files: int) -> None:
    plan, tasks = cp.synthetic_repo(pieces, files)
    assert sum(t.num_pieces for t in tasks) == pieces
    assert len(tasks) == min(pieces, files) == len(plan.files)
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_stand_in_nodes_count_each_pull_and_report_a_file_done_once_per_node() -> None:
    _, tasks = cp.synthetic_repo(3, 1)
    group = StandinPeers()
    task = tasks[0]

    async def run() -> list[list[PullOutcome]]:
        for node in ("a", "b"):
            held = await group.prepare(node, PeerJoin("job", tuple(tasks)))
            assert held.pieces == {task.task_id: ()}
        return [await group.pull_batch(node, PullBatch(
                    "job", tuple(Pull(task.task_id, i, 7, "src") for i in range(3)), {}))
                for node in ("a", "b")]

    results = [r for batch in asyncio.run(run()) for r in batch]
    assert all(isinstance(r, Received) for r in results)
    assert [r.file_done for r in results] == [False, False, True] * 2  # type: ignore[union-attr]
    assert all(r.crc == 7 and r.bytes == task.piece_length for r in results)  # type: ignore[union-attr]
    assert group.counts() == (6, {"prepare": 2, "pull_batch": 2})


def test_stand_in_seed_leaves_its_call_counts_in_its_ledger(tmp_path: Path) -> None:
    _, tasks = cp.synthetic_repo(2, 1)
    ledger = tmp_path / "seed.json"
    seed = StandinSeed(tasks, str(ledger))

    async def run() -> SeedStats:
        fetched = await seed.fetch(tasks[0].task_id, 1)
        assert (fetched.origin_bytes, fetched.origin_requests) == (tasks[0].piece_length, 1)
        assert fetched.crc == crc_of(tasks[0].task_id, 1)
        await seed.release([(tasks[0].task_id, 1)])
        return await seed.counts()

    stats = asyncio.run(run())
    assert stats.origin_requests == 1
    assert ledger.read_text() == '{"fetch": 1, "release": 1, "counts": 1}'


def test_node_handle_sends_the_node_id_first() -> None:
    sent: list[tuple] = []

    class Method:
        def __init__(self, name: str) -> None:
            self.name = name

        def remote(self, *args: object) -> str:
            sent.append((self.name, *args))
            return "ref"

    class Group:
        pull_batch = Method("pull_batch")
        finish_job = Method("finish_job")

    handle = StandinNode(Group(), "node-7")
    batch = PullBatch("job", (), {})
    assert handle.pull_batch(batch) == "ref"
    handle.finish_job("job", [])
    assert sent == [("pull_batch", "node-7", batch), ("finish_job", "node-7", "job", [])]


def test_figures_per_delivery_and_table() -> None:
    f = cp.Figures("old", 4, 10, 40, 2.0, 0.004, 0.01, 44, True, {"peer:pull": 40})
    assert f.deliveries_per_second == 20
    assert f.cpu_us_per_delivery == pytest.approx(100)
    assert f.calls_per_delivery == pytest.approx(1.1)
    lines = cp.table([f]).splitlines()
    assert lines[0].split()[:3] == ["protocol", "K", "pieces"]
    assert lines[2].split()[:4] == ["old", "4", "10", "40"]
    assert f.as_dict()["calls_per_delivery"] == pytest.approx(1.1)
