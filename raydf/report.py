"""The result of a fan-out, as ``--json`` prints it (see DESIGN.md, Contracts)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["NodeReport", "Report", "human_size"]


@dataclass(frozen=True)
class NodeReport:
    """One target node's outcome."""

    node_id: str
    path: str
    bytes: int
    seconds: float
    ok: bool
    error: str | None = None
    exit_code: int = 0  # of its failure, as the README's table says (0 when ok)


@dataclass(frozen=True)
class Report:
    """One fan-out's outcome; ``ok`` only when every node has every file, verified."""

    url: str
    commit: str
    files: int
    bytes: int
    origin_bytes: int
    origin_requests: int
    p2p_bytes: int
    seconds: float
    nodes: list[NodeReport] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # holder -> bytes it uploaded
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it is no target any more
    job_id: str = ""
    # origin_requests by kind: "api", "resolve" (a file asked of the hub), "content" (CDN)
    hub_requests: dict[str, int] = field(default_factory=dict)
    error_type: str = ""  # the raydf error class that ended the job, e.g. "GatedRepoError"
    # Files the origin kept sending bad bytes for (placed nowhere): exit status 4.
    corrupt: list[str] = field(default_factory=list)
    # Bytes peers received from a holder in another zone (see --topology-label).
    cross_zone_bytes: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and all(n.ok for n in self.nodes)

    @property
    def exit_code(self) -> int:
        """0 when every node has every file; else the failed nodes' code if they
        all failed the same way (5 storage, 4 integrity, 3 hub), else 1."""
        if self.ok:
            return 0
        if self.corrupt:
            return 4  # the origin kept sending bad bytes for a file
        codes = {n.exit_code or 1 for n in self.nodes if not n.ok} or {1}
        return codes.pop() if len(codes) == 1 else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> str:
        """One line for a terminal."""
        good = sum(n.ok for n in self.nodes)
        return (
            f"{self.url}@{self.commit[:12]}: {self.files} files, {human_size(self.bytes)} on "
            f"{good}/{len(self.nodes)} nodes in {self.seconds:.1f} s; origin "
            f"{human_size(self.origin_bytes)} in {self.origin_requests} requests, "
            f"peer-to-peer {human_size(self.p2p_bytes)}"
            + (f", {human_size(self.cross_zone_bytes)} across zones" if self.cross_zone_bytes else "")
        ) + "".join(f"\nraydf: node {n[:12]} {why}; skipped" for n, why in self.skipped.items())


def human_size(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"
