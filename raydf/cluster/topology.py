"""Which zone each node of a job is in, from a Ray node label (rule 4 of
:mod:`raydf.policy`): the scheduler places every labelled node, and each seed
by the node it runs on, before the plan counts them."""

from __future__ import annotations

from raydf.cluster.handles import SeedHandle
from raydf.cluster.placement import node_labels
from raydf.policy import PlanState

__all__ = ["place_nodes", "place_seed", "seed_node"]


def place_nodes(state: PlanState, label: str) -> dict[str, str]:
    """Put every alive node that has ``label`` in the zone it names (a node's
    labels never change, so placing one again changes nothing); the zones."""
    zones = node_labels(label) if label else {}
    for node, zone in zones.items():
        state.place(node, zone)
    return zones


def place_seed(state: PlanState, label: str, seed_id: str, node: str | None) -> None:
    """Put the nodes, and seed ``seed_id`` (on ``node``, not yet added), in their zones."""
    zones = place_nodes(state, label)
    if zones and node is not None:
        state.place(seed_id, zones.get(node, ""))


async def seed_node(label: str, seed: SeedHandle) -> str | None:
    """The node ``seed`` runs on when some node has ``label`` (else None, and no call)."""
    return await seed.node_id() if label and node_labels(label) else None
