"""The choice of a source (raydf.policy.matching.source) without zones: its fast
path picks what the rule says, a peer holder before a seed, then the holder
with the most free upload slots, counting what the same decide() already chose.

Random plans mid-way (holdings, a seed added late, transfers in flight, a draft partly filled) are
checked against the rule written out here. No Ray.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raydf.policy import ORIGIN, Assignment, Limits, PlanState, decide
from raydf.policy.matching import Draft, source


def _rule_keys(state: PlanState, draft: Draft, g: int, free_up: set[int]) -> dict[int, tuple[bool, int]]:
    """Every holder that may serve piece ``g`` now, with its rank (lower is better)."""
    keys = {}
    for h in state._holders[g] & free_up:
        free = draft.up_free(h, g)
        if free > 0:
            keys[h] = (h in state._seeds, -free)
    return keys


@settings(max_examples=400, deadline=None)
@given(
    peers=st.integers(2, 7),
    pieces=st.integers(2, 8),
    caps=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6)),
    holdings=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 7)), max_size=30),
    started=st.integers(0, 20),
    finished=st.sets(st.integers(0, 19), max_size=10),
    drafted=st.integers(0, 10),
    narrowed=st.booleans(),
    late_seed=st.booleans(),
)
def test_source_without_zones_follows_the_rule(
    peers: int, pieces: int, caps: tuple[int, int, int, int], holdings: list[tuple[int, int]],
    started: int, finished: set[int], drafted: int, narrowed: bool, late_seed: bool,
) -> None:
    limits = Limits(*caps)
    state = PlanState({"t": pieces}, ["s"], limits)
    names = [f"p{i}" for i in range(peers)]
    for name in names:
        state.add_peer(name, ["t"])
    seeds = ["s"]
    if late_seed:  # one added after the peers: its id comes after theirs
        state.add_seed("s2")
        seeds.append("s2")
    for i in range(pieces):  # the seeds fetched everything
        for seed in seeds:
            a = Assignment(seed, ("t", i), ORIGIN)
            state.start(a)
            state.finish(a)
    for p, i in holdings:
        if p < peers and i < pieces:
            state.add_holding(names[p], ("t", i))
    for k, a in enumerate(decide(state)[:started]):  # some transfers in flight, some done
        state.start(a)
        if k in finished:
            state.finish(a)
    draft = Draft(state)
    for a in decide(state)[:drafted]:  # and a draft part-way through a decide()
        ids = state._ids
        draft.add(ids[a.peer], state._first[a.piece[0]] + a.piece[1], ids[a.source])
    free_up = set(state._free_up) - (draft.filled if narrowed else set())
    for name in names:
        p = state._ids[name]
        for g in sorted(state._need[p]):
            chosen = source(state, g, draft, p, free_up=free_up)
            keys = _rule_keys(state, draft, g, free_up)
            if not keys:
                assert chosen is None
            else:
                assert chosen in keys and keys[chosen] == min(keys.values()), (name, g, keys)
