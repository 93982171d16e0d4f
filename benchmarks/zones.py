"""Cross-zone bytes on a LocalCluster whose nodes sit in zones (issue 15).

A 4-node cluster (``--nodes``) labelled in 2 zones (``--zones``, round robin
by the node label ``ray.io/availability-zone``; the head, where the seed runs,
in the first zone) receives one model from the hub emulator (capped at
``--bandwidth``) three times, caches emptied in between: with the zone-aware
policy, then with the topology-blind one (``Limits(use_zones=False)``: the
same zones, counted the same way, ignored when deciding), then zone-aware
again. Printed per run: the report's cross-zone bytes over the repo's size
(about one copy must cross into each zone but the seed's: (Z - 1) x repo),
and the time of the fan-out.

    python benchmarks/zones.py --json zones.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `raydf` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import raydf
from raydf.comparison import format_table, parse_size
from raydf.policy import Limits
from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_model

__all__ = ["main"]

MiB = 2**20
TARGET = 1.1  # cross-zone bytes <= 1.1 x (Z - 1) x repo


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--zones", type=int, default=2)
    ap.add_argument("--size", default="160MiB", help="model size (4 shards)")
    ap.add_argument("--bandwidth", default="20MB", help="hub cap per second (0: none)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    zones = [f"zone-{z}" for z in range(args.zones)]
    shard = parse_size(args.size) // 4
    cap = parse_size(args.bandwidth) or None
    rows, out = [], []
    with tempfile.TemporaryDirectory(prefix="raydf-zones-") as tmp:
        root = Path(tmp)
        make_model(root / "hub", "org/zoned", shard_sizes=[shard] * 4, seed=3)
        with HubEmulator(root / "hub", bandwidth=cap) as hub, \
                LocalCluster(args.nodes, root=root / "nodes", zones=zones) as cluster:
            runs = [("zone-aware", Limits()), ("blind", Limits(use_zones=False)),
                    ("zone-aware", Limits())]
            for i, (policy, limits) in enumerate(runs):
                cluster.clear_caches()
                report = raydf.fanout("hf://org/zoned", f"/models/run{i}", address=cluster.address,
                                      hf_endpoint=hub.hf_endpoint, limits=limits)
                if not report.ok:
                    print(f"run {i} ({policy}) failed: {report.summary()}", file=sys.stderr)
                    return 1
                ratio = report.cross_zone_bytes / (report.bytes * (args.zones - 1))
                rows.append([policy, f"{report.bytes / MiB:.0f} MiB",
                             f"{report.cross_zone_bytes / MiB:.1f} MiB", f"{ratio:.3f}",
                             f"{report.origin_bytes / report.bytes:.3f}", f"{report.seconds:.1f}"])
                out.append({"policy": policy, "bytes": report.bytes, "seconds": report.seconds,
                            "cross_zone_bytes": report.cross_zone_bytes, "ratio": ratio,
                            "origin_bytes": report.origin_bytes})
    print(f"{args.nodes} nodes in {args.zones} zones, hub at {args.bandwidth}/s")
    print(format_table(["policy", "repo", "cross-zone", "cross / ((Z-1) x repo)", "origin / repo",
                        "time s"], rows))
    aware = [r["ratio"] for r in out if r["policy"] == "zone-aware"]
    print(f"target: cross / ((Z-1) x repo) <= {TARGET} for the zone-aware policy: "
          f"{'met' if max(aware) <= TARGET else 'missed'}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
