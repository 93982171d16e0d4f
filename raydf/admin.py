"""What ``raydf status``, ``raydf warm`` and ``raydf cache`` do, on a running cluster."""

from __future__ import annotations

from typing import Any

from raydf.report import human_size

__all__ = ["cache_command", "cluster_status", "format_status"]


def cluster_status() -> dict[str, Any]:
    """The scheduler's jobs and every node's peer (files, pinned pieces, cache use)."""
    import ray

    from raydf.cluster.service import NAMESPACE, SCHEDULER_NAME, existing_peers

    try:
        sched = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
        scheduler: dict[str, Any] | None = ray.get(sched.snapshot.remote())
    except ValueError:
        scheduler = None
    peers = existing_peers()
    snaps = dict(zip(peers, ray.get([p.snapshot.remote() for p in peers.values()]), strict=True))
    return {"scheduler": scheduler, "nodes": snaps}


def format_status(status: dict[str, Any]) -> str:
    """The status as a person reads it."""
    lines = []
    sched = status["scheduler"]
    if sched is None:
        lines.append("scheduler: not started (no fan-out has run on this cluster)")
    else:
        lines.append(f"scheduler: {sched['repr']}")
        for job in sched["jobs"].values():
            state = "done" if job["done"] else "running"
            lines.append(f"  job {job['job_id']} {state} {job['url']} ({human_size(job['bytes'])})")
            for node, got in job["received"].items():
                lines.append(f"    node {node[:12]}: received {human_size(got)}, verified "
                             f"{human_size(job['nodes'].get(node, 0))}")
    lines.append(f"nodes with a raydf peer: {len(status['nodes'])}")
    for node, snap in sorted(status["nodes"].items()):
        lines.append(
            f"  {node[:12]}: cache {human_size(snap['cache_bytes'])} at "
            f"{', '.join(snap.get('cache_roots') or [snap['cache_root']])}, "
            f"{snap['files_complete']}/{snap['files']} files open, "
            f"{snap['pinned_pieces']} pieces pinned ({human_size(snap['pinned_bytes'])} of "
            f"{human_size(snap['budget'])}), jobs: {', '.join(snap['jobs']) or '-'}"
        )
    return "\n".join(lines)


def cache_command(action: str, key: str | None, *, local: bool) -> dict[str, Any]:
    """``ls``, ``rm KEY`` or ``gc`` on this machine's cache, or on every node's."""
    from raydf.cache_roots import NodeCaches

    if local:
        cache = NodeCaches()  # every cache of this machine, one per file system
        return {"local": _apply(cache, action, key)}
    import ray

    from raydf.cluster.service import existing_peers

    peers = existing_peers()
    calls = {
        "ls": lambda p: p.cache_entries.remote(),
        "rm": lambda p: p.cache_remove.remote(key),
        "gc": lambda p: p.cache_gc.remote(),
    }[action]
    return dict(zip(peers, ray.get([calls(p) for p in peers.values()]), strict=True))


def _apply(cache: Any, action: str, key: str | None) -> Any:
    if action == "ls":
        return cache.entries()
    if action == "rm":
        return cache.remove(key or "")
    return cache.gc()
