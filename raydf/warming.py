"""Usage-based warming: ``raydf warm --auto [--follow]`` as functions.

:func:`warm_auto` asks the scheduler for the K repos its jobs asked for most
(see :mod:`raydf.usage`) and warms each onto nodes with the ordinary warm path
(into the node caches, nothing placed), each at the commit its jobs got.
:func:`follow` watches the cluster's membership and does that for every node
that joins: its pieces come from the peers that hold them, and a public repo
is planned from the listing the scheduler recorded, so warming a new node
costs the hub nothing.

Tokens are never stored: a private or gated repo is warmed only with a token
for its hub passed on this call (``hf_token``/``ms_token``, else the
environment, as for ``raydf get``), listed again with it so the hub judges it;
without one it is skipped with a :class:`~raydf.errors.AuthError` saying so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raydf.errors import AuthError, ConfigError, RaydfError, exit_code, unwrap
from raydf.options import TOPOLOGY_LABEL
from raydf.report import Report, human_size

if TYPE_CHECKING:
    from raydf.usage import RepoUsage

__all__ = [
    "FOLLOW_EVERY",
    "TOP",
    "Warmed",
    "check_selector",
    "follow",
    "matching_nodes",
    "node_line",
    "recorded",
    "warm_auto",
    "warm_one",
]

TOP = 3  # repos warmed when the caller does not say
FOLLOW_EVERY = 2.0  # seconds between two looks at the cluster's membership


@dataclass(frozen=True)
class Warmed:
    """One recorded repo warmed onto some nodes (``report``), or not (``error``)."""

    usage: RepoUsage
    report: Report | None = None
    error: RaydfError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return exit_code(self.error)
        return self.report.exit_code if self.report is not None else 1

    def line(self) -> str:
        """One line for a terminal (without the ``raydf:`` prefix)."""
        asked = f"asked {self.usage.count} time{'s' if self.usage.count != 1 else ''}"
        if self.error is not None:
            return f"{self.usage.label()} ({asked}): {self.error}"
        assert self.report is not None
        return f"{self.usage.label()} ({asked}): {self.report.summary()}"

    def to_dict(self) -> dict[str, object]:
        return {"url": self.usage.url, "commit": self.usage.commit, "count": self.usage.count,
                "public": self.usage.public, "include": list(self.usage.key.include),
                "exclude": list(self.usage.key.exclude), "ok": self.ok,
                "exit_code": self.exit_code, "error": str(self.error) if self.error else None,
                "report": self.report.to_dict() if self.report is not None else None}


def _no_token(usage: RepoUsage) -> AuthError:
    env = "HF_TOKEN" if usage.scheme == "hf" else "MODELSCOPE_API_TOKEN"
    return AuthError(
        f"private or gated, and this call has no token for its hub: pass {usage.token_option} "
        f"(or set {env}); raydf never stores tokens, so warming it needs one on every call; "
        "skipped")


def warm_one(usage: RepoUsage, nodes: list[str], tokens: Mapping[str, str | None] | None = None,
             *, progress: bool = False, environ: Mapping[str, str] | None = None,
             topology_label: str = TOPOLOGY_LABEL) -> Warmed:
    """Warm one recorded repo onto ``nodes`` (Ray connected); never raises a RaydfError.

    ``tokens``: ``hf_token`` / ``ms_token`` of this call (else the environment);
    ``topology_label``: as for :func:`raydf.api.run_fanout`."""
    from raydf.api import run_fanout
    from raydf.options import make_request

    prefix = "hf" if usage.scheme == "hf" else "ms"
    options: dict[str, str | None] = dict(usage.hub_options())
    options[f"{prefix}_token"] = (tokens or {}).get(f"{prefix}_token")
    try:
        request = make_request(usage.url, "/", recursive=True, include=usage.key.include,
                               exclude=usage.key.exclude, hub_options=options, environ=environ)
        if not usage.public and not request.backend_options.token:
            return Warmed(usage, error=_no_token(usage))
        report = run_fanout(request, nodes, place=False, auto=True, progress=progress,
                            topology_label=topology_label)
    except RaydfError as err:
        return Warmed(usage, error=err)
    except Exception as exc:  # a Ray error from the scheduler: the typed error, if any
        typed = unwrap(exc)
        if not isinstance(typed, RaydfError):
            raise
        return Warmed(usage, error=typed)
    return Warmed(usage, report)


def recorded(top: int) -> list[RepoUsage]:
    """The ``top`` most requested repos the cluster's scheduler recorded (Ray connected)."""
    import ray

    from raydf.cluster.service import scheduler

    if top < 1:
        raise ConfigError(f"--top {top}: warm at least one repo (--top 1 or more)")
    entries: list[RepoUsage] = ray.get(scheduler().usage(top))
    return entries


def warm_auto(top: int = TOP, nodes: list[str] | None = None, *, selector: str = "auto",
              tokens: Mapping[str, str | None] | None = None, progress: bool = False,
              on_repo: Callable[[Warmed], None] | None = None,
              environ: Mapping[str, str] | None = None,
              topology_label: str = TOPOLOGY_LABEL) -> list[Warmed]:
    """Warm the ``top`` most requested repos onto ``nodes`` (default: those
    ``selector`` chooses, as ``--nodes``), one after the other; Ray connected.

    ``on_repo`` is told each result as it comes. A private or gated repo without
    a token for its hub in ``tokens`` (or the environment) is skipped (its
    ``error`` says so); the others are warmed all the same.
    """
    from raydf.cluster.service import target_nodes

    entries = recorded(top)
    if not entries:
        return []
    chosen = nodes if nodes is not None else target_nodes(selector)
    results = []
    for usage in entries:
        result = warm_one(usage, chosen, tokens, progress=progress, environ=environ,
                          topology_label=topology_label)
        results.append(result)
        if on_repo is not None:
            on_repo(result)
    return results


def check_selector(selector: str) -> None:
    """Refuse a malformed ``--nodes`` (as ``target_nodes`` does), whether or not a
    node matches it now: a follower may start before any node it wants is there."""
    if selector in ("auto", "all", "gpu"):
        return
    for part in selector.split(","):
        key, sep, _ = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--nodes {selector!r}: expected all, gpu, auto or "
                              "key=value[,key=value] (Ray node labels)")


def matching_nodes(selector: str) -> set[str]:
    """The alive nodes ``selector`` chooses now (none, rather than an error)."""
    from raydf.cluster.service import target_nodes

    check_selector(selector)
    try:
        return set(target_nodes(selector))
    except ConfigError:
        return set()  # a well-formed selector that matches no node right now


def follow(stop: threading.Event, top: int = TOP, *, selector: str = "auto",
           tokens: Mapping[str, str | None] | None = None, every: float = FOLLOW_EVERY,
           on_node: Callable[[str, list[Warmed]], None] | None = None,
           watching: Callable[[set[str]], None] | None = None,
           known: set[str] | None = None, environ: Mapping[str, str] | None = None,
           topology_label: str = TOPOLOGY_LABEL) -> None:
    """Until ``stop`` is set: every ``every`` s, look for nodes that ``selector``
    chooses and that were not there before (alive, never seen), and warm the
    ``top`` most requested repos onto them, all new nodes of one look together.

    The nodes there when it starts (or ``known``: those a first ``warm_auto``
    chose) are not warmed here. ``watching(nodes)`` is called once with them,
    before the first look;
    ``on_node(node, results)`` once per new node after its warm (results in
    rank order; empty when nothing is recorded yet). Ray connected.
    """
    seen = set(known) if known is not None else matching_nodes(selector)
    if watching is not None:
        watching(set(seen))
    while not stop.wait(every):
        fresh = sorted(matching_nodes(selector) - seen)
        if not fresh:
            continue
        seen.update(fresh)
        entries = recorded(top)
        results = [warm_one(usage, fresh, tokens, environ=environ, topology_label=topology_label)
                   for usage in entries]
        for node in fresh:
            if on_node is not None:
                on_node(node, results)


def node_line(node: str, results: list[Warmed]) -> str:
    """One line for a node that joined (without the ``raydf:`` prefix)."""
    if not results:
        return f"node {node[:12]} joined: nothing to warm (no repo recorded yet)"
    parts = []
    for result in results:
        row = next((n for n in result.report.nodes if n.node_id == node), None) \
            if result.report is not None else None
        if result.error is not None or row is None:
            parts.append(f"{result.usage.label()} skipped or failed: "
                         f"{result.error or 'no report for this node'}")
        elif not row.ok:
            parts.append(f"{result.usage.label()} failed: {row.error}")
        else:
            report = result.report
            assert report is not None
            parts.append(f"{result.usage.label()} {human_size(report.bytes)} in {row.seconds:.1f} s"
                         f" (origin {human_size(report.origin_bytes)})")
    good = sum(r.ok for r in results)
    return f"node {node[:12]} joined: warmed {good}/{len(results)} repos: " + "; ".join(parts)
