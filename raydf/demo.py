"""``raydf demo``: peer-to-peer fan-out vs every node downloading on its own.

It writes a synthetic model into a temporary folder, serves it with the hub
emulator with the origin capped (like a busy hub: 20 MB/s for all
connections together by default), starts a LocalCluster of simulated nodes
and delivers the model to every node, cold, twice:

* ``direct``: every node runs ``huggingface_hub.snapshot_download`` at once
  (what people do today): the origin sends the repo once per node;
* ``raydf``: one fan-out: the origin is read once, nodes share pieces.

Then it prints the time to the last node, the origin traffic and the
speed-up, and writes them as JSON.

The measuring code lives here and ``benchmarks/fanout.py`` runs it too (with
a hand-written Ray broadcast, more node counts and origin caps): a
:class:`Bench` is the emulator plus the cluster, a *runner* delivers the repo
to some nodes one way, :func:`measure` times one cold run of a runner,
:func:`compare` and :func:`evaluate` turn runs into ratios and targets
(DESIGN.md, Targets).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raydf.cache import node_path
from raydf.options import make_request
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_model

__all__ = [
    "RAYDF",
    "Bench",
    "Comparison",
    "Run",
    "Runner",
    "Target",
    "arg_type",
    "compare",
    "evaluate",
    "format_rate",
    "format_table",
    "log",
    "main",
    "measure",
    "median_run",
    "open_bench",
    "origin_label",
    "parse_args",
    "parse_list",
    "parse_rate",
    "parse_size",
    "pinned_to",
    "plural",
    "repo_files",
    "report_text",
    "results_dict",
    "run_direct",
    "run_raydf",
    "snapshot_here",
    "split_size",
    "warm_up",
    "write_json",
]

MiB = 2**20
REPO_ID = "raydf-bench/synthetic-model"
DEST_ROOT = "/raydf-bench"
RAYDF = "raydf"
_MIN_STORE = 512 * MiB  # object store of each simulated node, at least

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_UNCAPPED = ("none", "off", "uncapped", "unlimited", "0")

DEMO_EPILOG = """example:
  raydf demo --nodes 4 --size 256MiB --bandwidth 20MB --out /tmp/raydf-demo
      4 simulated nodes, a 256 MiB model, the origin capped at 20 MB/s; about
      2 minutes on an idle 2-core machine; writes /tmp/raydf-demo/demo.json

Needs huggingface_hub (for the per-node baseline). Sizes take decimal (kB, MB,
GB) or binary (KiB, MiB, GiB) units.
"""


# -- parsing ---------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"256MiB"`` -> bytes: decimal (``k, M, G, T``) and binary (``Ki … Ti``) units, ``B`` optional."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?(?:/s)?\s*", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (expected e.g. 256MiB, 20MB, 1.5GB, 1e9)")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def parse_rate(text: str) -> float | None:
    """``"20MB"`` (or ``"20MB/s"``) -> bytes/s; ``"none"`` (or ``off``, ``0``) -> None, uncapped."""
    if text.strip().lower() in _UNCAPPED:
        return None
    return float(parse_size(text))


def parse_list(text: str, parse: Callable[[str], Any]) -> list[Any]:
    """``"1,2,4"`` -> ``[parse("1"), parse("2"), parse("4")]``; empty items are an error."""
    items = [part.strip() for part in text.split(",")]
    if not all(items):
        raise ValueError(f"empty item in {text!r}")
    return [parse(item) for item in items]


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: a ValueError becomes a usage error that shows its message."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def split_size(total: int, shards: int) -> list[int]:
    """``shards`` sizes as equal as can be, adding up to ``total``."""
    if shards < 1 or total < shards:
        raise ValueError(f"cannot split {total} bytes into {shards} shards")
    return [total // shards + (1 if k < total % shards else 0) for k in range(shards)]


# -- formatting --------------------------------------------------------------


def format_rate(rate: float | None) -> str:
    return "uncapped" if rate is None else f"{rate / 1e6:g} MB/s"


def plural(count: int, noun: str) -> str:
    """``plural(1, "node")`` -> ``"1 node"``, ``plural(4, "node")`` -> ``"4 nodes"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_bytes(n: int) -> str:
    return f"{n / MiB:.0f} MiB" if n >= MiB else f"{n} B"


def origin_label(bandwidth: float | None, per_connection: float | None) -> str:
    """How the origin was capped: ``"20 MB/s"``, ``"uncapped, 25 MB/s per stream"``."""
    label = format_rate(bandwidth)
    return label if per_connection is None else f"{label}, {format_rate(per_connection)} per stream"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: columns padded to their widest cell, a rule under the headers."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[k]) for row in cells) for k in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One cold delivery of the repo to ``nodes`` nodes by one ``mode``; seconds from its start."""

    mode: str
    nodes: int
    bandwidth: float | None  # origin cap for all connections together, bytes/s
    per_connection: float | None  # origin cap for each connection, bytes/s
    seconds: float  # to the last node having every file
    node_seconds: list[float]
    repo_bytes: int
    origin_bytes: int
    origin_requests: int
    ok: bool  # every node has every file, at its size

    @property
    def origin(self) -> tuple[float | None, float | None]:
        return self.bandwidth, self.per_connection

    @property
    def origin_ratio(self) -> float:
        return self.origin_bytes / self.repo_bytes


@dataclass(frozen=True)
class Comparison:
    """raydf against the other modes at one origin cap and node count."""

    bandwidth: float | None
    per_connection: float | None
    nodes: int
    scaling: float | None  # raydf T(N) / T(1)
    speedup: dict[str, float] = field(default_factory=dict)  # mode -> T(mode) / T(raydf)


@dataclass(frozen=True)
class Target:
    """One of DESIGN.md's targets, as measured."""

    origin: str
    name: str
    value: str
    goal: str
    met: bool


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median time (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


def compare(runs: Sequence[Run]) -> list[Comparison]:
    """For every origin cap and node count with a raydf run: its scaling and speed-ups."""
    by_key = {(r.origin, r.mode, r.nodes): r for r in runs}
    out = []
    for r in runs:
        if r.mode != RAYDF:
            continue
        one = by_key.get((r.origin, RAYDF, 1))
        speedup = {other.mode: other.seconds / r.seconds for other in runs
                   if other.origin == r.origin and other.nodes == r.nodes and other.mode != RAYDF}
        out.append(Comparison(r.bandwidth, r.per_connection, r.nodes,
                              r.seconds / one.seconds if one else None, speedup))
    return out


def evaluate(runs: Sequence[Run], comparisons: Sequence[Comparison]) -> list[Target]:
    """DESIGN.md's targets that these runs can tell: capped origins, then uncapped ones."""
    targets = []
    for origin in dict.fromkeys(r.origin for r in runs if r.mode == RAYDF):
        own = [r for r in runs if r.mode == RAYDF and r.origin == origin]
        cmp = [c for c in comparisons if (c.bandwidth, c.per_connection) == origin]
        if origin[0] is None:
            targets += _uncapped_targets(origin_label(*origin), cmp)
        else:
            targets += _capped_targets(origin_label(*origin), own, cmp)
    return targets


def _capped_targets(label: str, own: list[Run], cmp: list[Comparison]) -> list[Target]:
    ratios = [r.origin_ratio for r in own]
    worst = max(ratios, key=lambda x: abs(x - 1))
    span = ",".join(str(r.nodes) for r in own)
    targets = [Target(label, f"origin bytes / repo bytes, N={span}", f"{worst:.2f}", "1.00",
                      all(f"{x:.2f}" == "1.00" for x in ratios))]
    requests = sorted({r.origin_requests for r in own})
    if len(own) > 1:
        targets.append(Target(label, f"origin requests, N={span}", "-".join(map(str, requests)),
                              "same for every N", len(requests) == 1))
    top = max(cmp, key=lambda c: c.nodes)
    if top.nodes > 1 and top.scaling is not None:
        targets.append(Target(label, f"raydf T({top.nodes})/T(1)", f"{top.scaling:.2f}", "<= 1.2",
                              top.scaling <= 1.2))
    if top.nodes > 1 and "direct" in top.speedup:
        goal = 0.8 * top.nodes
        targets.append(Target(label, f"speed-up over direct, N={top.nodes}",
                              f"{top.speedup['direct']:.2f}x", f">= {goal:.1f}x",
                              top.speedup["direct"] >= goal))
    vs_broadcast = [c for c in cmp if "broadcast" in c.speedup]
    if vs_broadcast:
        low = min(vs_broadcast, key=lambda c: c.speedup["broadcast"])
        targets.append(Target(label, f"speed-up over broadcast, worst N={low.nodes}",
                              f"{low.speedup['broadcast']:.2f}x", "> 1.0x",
                              low.speedup["broadcast"] > 1.0))
    return targets


def _uncapped_targets(label: str, cmp: list[Comparison]) -> list[Target]:
    return [Target(label, f"throughput vs direct, N={c.nodes}", f"{c.speedup['direct']:.2f}x",
                   ">= 1.0x", c.speedup["direct"] >= 1.0)
            for c in cmp if c.nodes == 1 and "direct" in c.speedup]


def report_text(runs: Sequence[Run], comparisons: Sequence[Comparison],
                targets: Sequence[Target]) -> str:
    """The runs, the ratios and the targets as three tables."""
    modes = list(dict.fromkeys(m for c in comparisons for m in c.speedup))
    run_rows = [(origin_label(*r.origin), r.mode, r.nodes, f"{r.seconds:.1f}",
                 f"{min(r.node_seconds):.1f}", f"{r.origin_ratio:.2f}", r.origin_requests,
                 "ok" if r.ok else "FAILED") for r in runs]
    cmp_rows = [(origin_label(c.bandwidth, c.per_connection), c.nodes,
                 "-" if c.scaling is None else f"{c.scaling:.2f}",
                 *(f"{c.speedup[m]:.2f}x" if m in c.speedup else "-" for m in modes))
                for c in comparisons]
    target_rows = [(t.origin, t.name, t.value, t.goal, "met" if t.met else "MISSED") for t in targets]
    parts = [
        format_table(("origin", "mode", "N", "seconds", "first node", "origin/repo",
                      "origin requests", "files"), run_rows),
        format_table(("origin", "N", "raydf T(N)/T(1)", *(f"raydf vs {m}" for m in modes)),
                     cmp_rows),
    ]
    if target_rows:
        parts.append(format_table(("origin", "target", "measured", "goal", ""), target_rows))
    return "\n\n".join(parts)


def results_dict(config: Mapping[str, Any], runs: Sequence[Run], comparisons: Sequence[Comparison],
                 targets: Sequence[Target]) -> dict[str, Any]:
    """Everything measured, as one JSON-able object."""
    return {"config": dict(config), "runs": [asdict(r) for r in runs],
            "comparisons": [asdict(c) for c in comparisons], "targets": [asdict(t) for t in targets]}


def write_json(path: Path, results: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


# -- the bench -----------------------------------------------------------------


@dataclass
class Bench:
    """The hub emulator serving one synthetic model, and the cluster to deliver it to."""

    hub: HubEmulator
    cluster: LocalCluster
    repo_id: str
    files: dict[str, int]  # path in the repo -> size
    hf_home: Path
    origin: tuple[float | None, float | None] = (None, None)
    serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def repo_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def hf_env(self) -> dict[str, Any]:
        """The runtime env of Ray workers that run ``huggingface_hub`` against the emulator.

        ``huggingface_hub`` reads ``HF_ENDPOINT`` when imported (``endpoint=``
        alone leaves some calls aimed at huggingface.co), so its workers get it
        in their environment; ``HF_HOME`` keeps the user's token file out.
        """
        return {"env_vars": {"HF_ENDPOINT": self.hub.hf_endpoint, "HF_HOME": str(self.hf_home),
                             "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}}

    def set_origin(self, bandwidth: float | None, per_connection: float | None) -> None:
        """Cap the origin: all connections together, and each one (bytes/s; None uncaps)."""
        self.hub.set_knobs(bandwidth=bandwidth, per_connection=per_connection)
        self.origin = (bandwidth, per_connection)


@contextlib.contextmanager
def open_bench(num_nodes: int, size: int, shards: int = 4) -> Iterator[Bench]:
    """A synthetic model of ``size`` bytes in ``shards`` safetensors files (plus the
    small files of a model repo), the emulator serving it uncapped, and a
    LocalCluster of ``num_nodes`` nodes; all torn down on exit."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raydf-bench-")))
        log(f"writing a {format_bytes(size)} synthetic model in {shards} shards")
        folder = make_model(tmp / "hub", REPO_ID, shard_sizes=split_size(size, shards))
        hub = stack.enter_context(HubEmulator(tmp / "hub"))
        log(f"hub emulator ready at {hub.hf_endpoint}")
        store = max(_MIN_STORE, 2 * size // shards)
        cluster = LocalCluster(num_nodes, root=tmp / "nodes", object_store_memory=store,
                               head_object_store_memory=store + size)
        stack.callback(cluster.shutdown)
        log(f"starting a local Ray cluster of {plural(num_nodes, 'simulated node')}")
        cluster.start()
        log("cluster ready")
        yield Bench(hub, cluster, REPO_ID, repo_files(folder), tmp / "hf-home")


def repo_files(folder: Path) -> dict[str, int]:
    """Path -> size of every file under ``folder``, except huggingface_hub's ``.cache``."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != ".cache"}


# -- runners: deliver the repo to some nodes, return when each node was done ---

Runner = Callable[[Bench, list[str], str], list[float]]
"""``runner(bench, node_ids, dest)``: put the repo at ``dest`` on every node;
returns, per node in order, the wall-clock time (``time.time()``) it was done."""


def pinned_to(node_id: str) -> Any:
    """A scheduling strategy that runs a task on ``node_id`` and nowhere else."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def snapshot_here(repo_id: str, dest: str, endpoint: str) -> float:
    """Download the repo into ``dest`` on this node with ``huggingface_hub``; return when done."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, local_dir=node_path(dest), endpoint=endpoint, token=False)
    return time.time()


def run_direct(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """Every node downloads the repo on its own, all at once (what people do today)."""
    import ray

    task = ray.remote(snapshot_here)
    return ray.get([
        task.options(num_cpus=0, scheduling_strategy=pinned_to(node), runtime_env=bench.hf_env)
        .remote(bench.repo_id, dest, bench.hub.hf_endpoint)
        for node in nodes
    ])


def run_raydf(bench: Bench, nodes: list[str], dest: str) -> list[float]:
    """One raydf fan-out to ``nodes``.

    Node times come from the scheduler's report (seconds since the job
    started), anchored at the moment the fan-out returned.
    """
    from raydf.api import run_fanout

    request = make_request(f"hf://{bench.repo_id}", dest, environ={},
                           hub_options={"hf_endpoint": bench.hub.hf_endpoint})
    report = run_fanout(request, nodes)
    end = time.time()
    if not report.ok:
        raise RuntimeError(f"the raydf fan-out failed: {[n.error for n in report.nodes if not n.ok]}")
    done = {n.node_id: end - (report.seconds - n.seconds) for n in report.nodes}
    _wait_for_standby_seed()
    return [done[node] for node in nodes]


def _wait_for_standby_seed() -> None:
    """Wait (untimed) until the scheduler's next seed has started: it starts as a
    job ends, and the next run should not share the CPUs with its start-up."""
    import ray

    from raydf.cluster.service import scheduler

    seed = ray.get(scheduler().standby_seed.remote())
    if seed is not None:
        ray.get(seed.stats.remote())


def measure(bench: Bench, mode: str, runner: Runner, count: int) -> Run:
    """One cold run of ``runner`` to the first ``count`` nodes.

    Cold: node caches emptied, a fresh destination (removed afterwards), the
    emulator's counters zeroed, the disk synced.
    """
    nodes = bench.cluster.node_ids[:count]
    dest = f"{DEST_ROOT}/{mode}-{count}-{next(bench.serial)}"
    bench.cluster.clear_caches()
    bench.hub.reset_stats()
    # Let the disk settle: what earlier runs wrote back or deleted (an ext4
    # mounted with `discard` trims freed blocks at the next journal commit)
    # is not charged to this run.
    os.sync()
    started = time.time()
    try:
        done = runner(bench, nodes, dest)
        stats = bench.hub.stats()
        ok = all(repo_files(bench.cluster.path_on(n, dest)) == bench.files for n in nodes)
    finally:
        for node in nodes:
            shutil.rmtree(bench.cluster.path_on(node, dest), ignore_errors=True)
    node_seconds = [round(t - started, 3) for t in done]
    return Run(mode, count, *bench.origin, seconds=max(node_seconds), node_seconds=node_seconds,
               repo_bytes=bench.repo_bytes, origin_bytes=stats["download_bytes"],
               origin_requests=stats["requests"], ok=ok)


def warm_up(bench: Bench, runners: Mapping[str, Runner]) -> None:
    """One uncapped run of every mode on every node, thrown away.

    It starts the Ray workers and raydf's peers and pages in the object
    stores' shared memory, which make the first round slower.
    """
    saved = bench.origin
    bench.set_origin(None, None)
    count = len(bench.cluster.node_ids)
    for mode, runner in runners.items():
        log(f"warming up: {mode} on {plural(count, 'node')}, origin uncapped")
        measure(bench, mode, runner, count)
    bench.set_origin(*saved)


# -- the demo ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="raydf demo",
        description="Deliver a synthetic model from a local hub emulator (the origin capped)\n"
        "to every node of a local Ray cluster, twice: each node downloading on its own\n"
        "with huggingface_hub, then one raydf fan-out. Prints time and origin traffic\n"
        "side by side; progress goes to stderr.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=4, metavar="N",
                        help="simulated nodes (default 4), e.g. --nodes 8")
    parser.add_argument("--size", type=arg_type(parse_size), default=256 * MiB, metavar="SIZE",
                        help="model size, in 4 shards plus small files (default 256MiB)")
    parser.add_argument("--bandwidth", type=arg_type(parse_rate), default=20e6, metavar="RATE",
                        help="origin cap for all connections together (default 20MB, i.e. "
                        "20 MB/s; 'none' uncaps)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for demo.json (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``raydf demo``; returns the exit status (0 when every run delivered every file)."""
    args = parse_args(argv)
    if importlib.util.find_spec("huggingface_hub") is None:
        print("raydf demo: the per-node baseline needs huggingface_hub: "
              "pip install huggingface_hub", file=sys.stderr)
        return 2
    runners: dict[str, Runner] = {"direct": run_direct, RAYDF: run_raydf}
    with open_bench(args.nodes, args.size) as bench:
        warm_up(bench, runners)
        bench.set_origin(args.bandwidth, None)
        runs = []
        for mode, runner in runners.items():
            log(f"running {mode} on {plural(args.nodes, 'node')}, origin {format_rate(args.bandwidth)}")
            runs.append(measure(bench, mode, runner, args.nodes))
            log(f"{mode}: {runs[-1].seconds:.1f} s")
    comparisons = compare(runs)
    targets = evaluate(runs, comparisons)
    print(report_text(runs, comparisons, targets))
    config = {"nodes": args.nodes, "size": args.size, "bandwidth": args.bandwidth}
    out = args.out or Path(tempfile.mkdtemp(prefix="raydf-demo-"))
    path = write_json(out / "demo.json", results_dict(config, runs, comparisons, targets))
    print(f"\nresults written to {path}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
