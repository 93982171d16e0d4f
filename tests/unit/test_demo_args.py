"""The pure parts of ``raydf demo`` and the fan-out benchmark: arguments, tables, ratios, targets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from raydf.comparison import (
    Run,
    compare,
    evaluate,
    format_table,
    median_run,
    origin_label,
    parse_list,
    parse_rate,
    parse_size,
    report_text,
    results_dict,
    split_size,
)
from raydf.demo import parse_args

MiB = 2**20
REPO = 100 * MiB


def _run(mode: str, nodes: int, seconds: float, *, bandwidth: float | None = 20e6,
         per_connection: float | None = None, origin_bytes: int = REPO, requests: int = 10) -> Run:
    return Run(mode, nodes, bandwidth, per_connection, seconds, [seconds] * nodes, REPO,
               origin_bytes, requests, ok=True)


@pytest.mark.parametrize(("text", "expected"), [
    ("256MiB", 256 * MiB), ("20MB", 20 * 10**6), ("1.5GB", 1_500_000_000), ("1e9", 10**9),
    ("64 mib", 64 * MiB), ("2KiB", 2048), ("4096", 4096), ("20MB/s", 20 * 10**6), (".5k", 500),
])
def test_sizes_take_decimal_and_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "12XB", "-3MB", "1,5GB"])
def test_a_malformed_size_is_a_value_error_that_names_it(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("text", ["none", "OFF", "uncapped", "0"])
def test_none_off_or_zero_uncaps_a_rate(text: str) -> None:
    assert parse_rate(text) is None


def test_lists_parse_each_item_and_refuse_empty_ones() -> None:
    assert parse_list("1, 2,4", int) == [1, 2, 4]
    assert parse_list("20MB,none", parse_rate) == [20e6, None]
    with pytest.raises(ValueError, match="empty item"):
        parse_list("1,,4", int)


def test_shards_split_the_size_exactly() -> None:
    assert split_size(10, 4) == [3, 3, 2, 2]
    assert sum(split_size(256 * MiB + 7, 4)) == 256 * MiB + 7
    with pytest.raises(ValueError):
        split_size(3, 4)


def test_demo_defaults_are_four_nodes_256_mib_and_20_mb_per_second() -> None:
    args = parse_args([])
    assert (args.nodes, args.size, args.bandwidth, args.out) == (4, 256 * MiB, 20e6, None)
    args = parse_args(["--nodes", "2", "--size", "64MiB", "--bandwidth", "none", "--out", "/tmp/x"])
    assert (args.nodes, args.size, args.bandwidth, str(args.out)) == (2, 64 * MiB, None, "/tmp/x")


def test_demo_refuses_a_bad_size_with_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--size", "lots"])
    assert "not a size: 'lots'" in capsys.readouterr().err


def test_demo_help_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "raydf demo --nodes 4 --size 256MiB" in capsys.readouterr().out


def test_table_columns_line_up_under_a_rule() -> None:
    table = format_table(("mode", "N"), [("direct", 8), ("raydf", 12)])
    assert table.splitlines() == ["mode    N", "------  --", "direct  8", "raydf   12"]


def test_origin_labels_say_the_aggregate_and_the_per_stream_cap() -> None:
    assert origin_label(20e6, None) == "20 MB/s"
    assert origin_label(None, 25e6) == "uncapped, 25 MB/s per stream"


def test_median_run_is_the_middle_time() -> None:
    runs = [_run("raydf", 1, s) for s in (3.0, 1.0, 2.0, 9.0)]
    assert median_run(runs).seconds == 2.0


def test_comparisons_give_scaling_and_speedups_per_origin_and_node_count() -> None:
    runs = [_run("direct", 1, 10), _run("raydf", 1, 8), _run("direct", 4, 40),
            _run("broadcast", 4, 16), _run("raydf", 4, 10), _run("raydf", 4, 5, bandwidth=50e6)]
    by_key = {(c.bandwidth, c.nodes): c for c in compare(runs)}
    assert by_key[(20e6, 1)].scaling == 1.0 and by_key[(20e6, 1)].speedup == {"direct": 1.25}
    assert by_key[(20e6, 4)].scaling == 1.25
    assert by_key[(20e6, 4)].speedup == {"direct": 4.0, "broadcast": 1.6}
    assert by_key[(50e6, 4)].scaling is None and by_key[(50e6, 4)].speedup == {}


def test_targets_are_met_when_raydf_reads_the_origin_once_and_scales() -> None:
    runs = [_run("direct", 1, 10), _run("broadcast", 1, 12), _run("raydf", 1, 10),
            _run("direct", 8, 80, origin_bytes=8 * REPO), _run("broadcast", 8, 25),
            _run("raydf", 8, 11.5)]
    targets = evaluate(runs, compare(runs))
    assert [t.name for t in targets] == [
        "origin bytes / repo bytes, N=1,8", "origin requests, N=1,8", "raydf T(8)/T(1)",
        "speed-up over direct, N=8", "speed-up over broadcast, worst N=1"]
    assert all(t.met for t in targets), targets


def test_targets_are_missed_on_extra_origin_bytes_slow_scaling_or_losing_to_broadcast() -> None:
    runs = [_run("broadcast", 1, 9), _run("raydf", 1, 10, requests=10),
            _run("direct", 8, 80), _run("broadcast", 8, 30),
            _run("raydf", 8, 20, origin_bytes=REPO + REPO // 10, requests=12)]
    met = {t.name: t.met for t in evaluate(runs, compare(runs))}
    assert met == {"origin bytes / repo bytes, N=1,8": False, "origin requests, N=1,8": False,
                   "raydf T(8)/T(1)": False, "speed-up over direct, N=8": False,
                   "speed-up over broadcast, worst N=1": False}


@pytest.mark.parametrize(("raydf_cpu", "met"), [(3.0, True), (9.0, False)])
def test_cpu_per_delivered_gb_is_compared_with_the_broadcast_at_the_largest_n(
    raydf_cpu: float, met: bool,
) -> None:
    def costing(run: Run, cpu: float) -> Run:
        return dataclasses.replace(run, cpu_seconds=cpu)

    runs = [costing(_run("broadcast", 1, 12), 1.0), costing(_run("raydf", 1, 10), 9.0),
            costing(_run("broadcast", 8, 25), 8.0), costing(_run("raydf", 8, 11.5), raydf_cpu)]
    (target,) = [t for t in evaluate(runs, compare(runs)) if t.name.startswith("CPU")]
    delivered_gb = 8 * REPO / 1e9
    assert target.name == "CPU s per delivered GB, N=8"
    assert target.value == f"{raydf_cpu / delivered_gb:.2f} vs broadcast {8.0 / delivered_gb:.2f}"
    assert target.met is met
    assert f"{raydf_cpu / delivered_gb:.2f}" in report_text(runs, compare(runs), [target])


def test_runs_without_cpu_figures_have_no_cpu_target() -> None:
    runs = [_run("broadcast", 2, 12), _run("raydf", 2, 10)]
    assert not [t for t in evaluate(runs, compare(runs)) if t.name.startswith("CPU")]


def test_uncapped_single_node_target_is_not_slower_than_huggingface_hub() -> None:
    runs = [_run("direct", 1, 3.0, bandwidth=None, per_connection=25e6),
            _run("raydf", 1, 2.0, bandwidth=None, per_connection=25e6)]
    (target,) = evaluate(runs, compare(runs))
    assert (target.name, target.value, target.met) == ("throughput vs direct, N=1", "1.50x", True)


def test_report_and_results_cover_every_run_and_are_json() -> None:
    runs = [_run("direct", 2, 20), _run("raydf", 2, 10)]
    comparisons = compare(runs)
    targets = evaluate(runs, comparisons)
    text = report_text(runs, comparisons, targets)
    assert "raydf vs direct" in text and "2.00x" in text and "MISSED" not in text
    results = json.loads(json.dumps(results_dict({"nodes": 2}, runs, comparisons, targets)))
    assert [r["mode"] for r in results["runs"]] == ["direct", "raydf"]
    assert results["comparisons"][0]["speedup"] == {"direct": 2.0}


def test_per_connection_single_node_target_asks_for_one_and_a_half_times_huggingface_hub() -> None:
    runs = [_run("direct", 1, 2.7, bandwidth=None, per_connection=25e6),
            _run("raydf", 1, 2.0, bandwidth=None, per_connection=25e6)]
    (target,) = evaluate(runs, compare(runs))
    assert (target.value, target.goal, target.met) == ("1.35x", ">= 1.5x", False)
