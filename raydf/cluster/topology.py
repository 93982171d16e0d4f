"""Which zone each node of a job is in, from a Ray node label (rule 4 of
:mod:`raydf.policy`): the scheduler places every labelled node, and each seed
by the node it runs on, before the plan counts them."""

from __future__ import annotations

from raydf.cluster.handles import SeedHandle
from raydf.cluster.placement import node_labels
from raydf.policy import PlanState

__all__ = ["place_nodes", "seed_zone"]


def place_nodes(state: PlanState, label: str) -> dict[str, str]:
    """Put every alive node that has ``label`` in the zone it names (a node's
    labels never change, so placing one again changes nothing); the zones."""
    zones = node_labels(label) if label else {}
    for node, zone in zones.items():
        state.place(node, zone)
    return zones


async def seed_zone(label: str, seed: SeedHandle) -> str | None:
    """The zone of the node ``seed`` runs on ("" if that node has no ``label``), or
    None, asking the seed nothing, when no node has the label (no zones)."""
    zones = node_labels(label) if label else {}
    return zones.get(await seed.node_id(), "") if zones else None
