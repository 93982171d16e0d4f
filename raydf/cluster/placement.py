"""Where raydf's actors run: node lookups and the options seeds are made with."""

from __future__ import annotations

import uuid
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raydf.policy import SMALL_PIECES_PER_FETCH

__all__ = ["NAMESPACE", "SCHEDULER_NAME", "SEED_RESOURCE", "alive_nodes", "node_labels",
           "on_head", "seed_options"]

NAMESPACE = "raydf"
SCHEDULER_NAME = "raydf-scheduler"
SEED_RESOURCE = "raydf_seed"
SEED_PREFIX = "raydf-seed-"
_HEAD_RESOURCE = "node:__internal_head__"


def node_labels(key: str) -> dict[str, str]:
    """Each alive node's value of label ``key``, for the nodes that have it."""
    values = {str(n["NodeID"]): (n.get("Labels") or {}).get(key, "") for n in alive_nodes()}
    return {node: value for node, value in values.items() if value}


def alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _head_node_id() -> str | None:
    for node in alive_nodes():
        if _HEAD_RESOURCE in node.get("Resources", {}):
            return str(node["NodeID"])
    return None


def on_head(soft: bool) -> dict[str, Any]:
    """Actor options that place it on the head node (``soft``: if it can)."""
    head = _head_node_id()
    if head is None:
        return {}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=soft)}


def seed_options(fetches: int) -> dict[str, Any]:
    """Options for a new seed actor: on a ``raydf_seed`` node if the cluster has
    any, else on the head node; ``fetches`` origin reads at once (more for a job
    of small pieces: see :meth:`raydf.policy.Limits.for_largest_piece`)."""
    has_seed_nodes = any(SEED_RESOURCE in n.get("Resources", {}) for n in alive_nodes())
    placement: dict[str, Any] = (
        {"resources": {SEED_RESOURCE: 0.01}} if has_seed_nodes else on_head(soft=True)
    )
    return {
        "name": f"{SEED_PREFIX}{uuid.uuid4().hex[:12]}",
        "namespace": NAMESPACE,
        "num_cpus": 0,
        "max_concurrency": fetches * SMALL_PIECES_PER_FETCH + 16,
        **placement,
    }
