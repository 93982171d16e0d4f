"""Rule 4 of the scheduling policy (raydf.policy): zones, as examples and as properties."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raydf.policy import ORIGIN, Assignment, Limits, PlanState, decide


def start_all(state: PlanState) -> list[Assignment]:
    started = decide(state)
    for a in started:
        state.start(a)
    return started


def deliver(state: PlanState, rnd: random.Random, p_fail: float = 0.0,
            tick: float = 0.0) -> list[Assignment]:
    """Run the plan to the end, finishing (or failing) one random transfer at a
    time; the clock moves ``tick`` s per event. Every finished transfer, in order."""
    finished, now = [], 0.0
    for _ in range(50_000):
        start_all(state)
        if state.all_done():
            return finished
        flying = sorted(state.in_flight(), key=repr)
        assert flying, f"stuck with nothing in flight: {state!r}"
        a = rnd.choice(flying)
        if a.source != ORIGIN and rnd.random() < p_fail:
            state.fail(a)
        else:
            state.finish(a)
            finished.append(a)
        now += tick
        state.clock(now)
    raise AssertionError(f"not done after 50,000 events: {state!r}")


def crossings(done: list[Assignment], zones: dict[str, str]) -> Counter[tuple[str, tuple[str, int]]]:
    """(receiving zone, piece) -> finished transfers into that zone from another."""
    return Counter((zones[a.peer], a.piece) for a in done
                   if a.source != ORIGIN and zones[a.peer] != zones[a.source])


def two_zone_plan(pieces: int, zones: dict[str, str] | None) -> PlanState:
    state = PlanState({"t": pieces}, ["s"], zones=zones)
    for peer in ("a1", "a2", "b1", "b2", "b3"):
        state.add_peer(peer, ["t"])
    return state


ZONES = {"s": "A", "a1": "A", "a2": "A", "b1": "B", "b2": "B", "b3": "B"}


def test_each_piece_crosses_into_the_other_zone_once() -> None:
    done = deliver(two_zone_plan(40, ZONES), random.Random(1))
    into = crossings(done, ZONES)
    assert set(into) == {("B", ("t", i)) for i in range(40)}
    assert set(into.values()) == {1}


def test_the_blind_policy_sends_more_across() -> None:
    """The same plan without zones: the crossing count rule 4 saves."""
    zoned = sum(crossings(deliver(two_zone_plan(40, ZONES), random.Random(1)), ZONES).values())
    blind = sum(crossings(deliver(two_zone_plan(40, None), random.Random(1)), ZONES).values())
    assert zoned == 40
    assert blind > 1.5 * zoned


def test_four_zones_each_get_one_copy_of_each_piece() -> None:
    zones = {"s": "z0"} | {f"p{z}{i}": f"z{z}" for z in range(4) for i in range(3)}
    state = PlanState({"t": 10, "u": 5}, ["s"], zones=zones)
    for peer in zones:
        if peer != "s":
            state.add_peer(peer, ["t", "u"])
    into = crossings(deliver(state, random.Random(7)), zones)
    assert len(into) == 3 * 15  # every piece into each zone but the seed's
    assert set(into.values()) == {1}


def test_a_peer_starved_by_its_busy_zone_takes_from_an_idle_far_holder() -> None:
    """b1 holds the piece in zone B and is sending it; b2 needs it too. a1 in
    zone A holds it and sends nothing. b2 waits on its zone, and once it has
    waited ``far_after`` it takes the piece from a1."""
    zones = {"s": "A", "a1": "A", "b1": "B", "b2": "B", "b3": "B"}
    state = PlanState({"t": 1}, ["s"], Limits(holder_uploads=1, far_after=2.0), zones=zones)
    for peer in ("a1", "b1"):
        state.add_holding(peer, ("t", 0))
    state.add_peer("b2", ["t"])
    state.add_peer("b3", ["t"])
    first = start_all(state)
    assert len(first) == 1 and first[0].source == "b1"
    waiting = ({"b2", "b3"} - {first[0].peer}).pop()
    state.clock(1.0)
    assert decide(state) == []  # not yet: its zone has the piece
    state.clock(2.5)
    assert decide(state) == [Assignment(waiting, ("t", 0), "a1")]


def test_a_seed_keeps_a_piece_until_each_zone_that_needs_it_has_a_copy() -> None:
    """Two peers in zone B hold the piece; zone A's peer still needs it. The
    seed (in A) dropping it would make A take it back across from B."""
    zones = {"s": "A", "a1": "A", "b1": "B", "b2": "B"}
    state = PlanState({"t": 1}, ["s"], zones=zones)
    state.add_peer("a1", ["t"])
    state.add_peer("b1", ["t"])
    state.add_peer("b2", ["t"])
    for holder in ("s", "b1", "b2"):
        state.add_holding(holder, ("t", 0))
    assert not state.covered(("t", 0), without="s")
    assert state.covered(("t", 0), without="b1")  # b2 still holds it in B, the seed in A
    state.add_holding("a1", ("t", 0))
    assert state.covered(("t", 0), without="s")
    blind = PlanState({"t": 1}, ["s"])
    assert blind.covered(("t", 0), without="s")


def test_zones_change_nothing_in_one_zone() -> None:
    """All nodes in one named zone: the same decisions as without zones."""
    one = {n: "only" for n in ZONES}
    a = deliver(two_zone_plan(12, one), random.Random(3))
    b = deliver(two_zone_plan(12, None), random.Random(3))
    assert a == b


def test_crosses_and_zone_of() -> None:
    state = two_zone_plan(1, ZONES)
    assert state.zone_of("b1") == "B" and state.zone_of("unknown") == ""
    assert state.crosses(Assignment("b1", ("t", 0), "a1"))
    assert not state.crosses(Assignment("b1", ("t", 0), "b2"))
    assert not state.crosses(Assignment("s", ("t", 0), ORIGIN))
    with pytest.raises(ValueError, match="was added in zone"):
        state.place("b1", "A")
    with pytest.raises(ValueError, match="far_after"):
        Limits(far_after=-1)


@st.composite
def zoned_plans(draw: st.DrawFn) -> tuple[PlanState, dict[str, str]]:
    n_zones = draw(st.integers(1, 4))
    tasks = {f"t{i}": draw(st.integers(1, 5)) for i in range(draw(st.integers(1, 3)))}
    peers = [f"p{i}" for i in range(draw(st.integers(1, 7)))]
    zones = {p: f"z{draw(st.integers(0, n_zones - 1))}" for p in [*peers, "s"]}
    limits = Limits(*(draw(st.integers(1, 3)) for _ in range(4)), far_after=1.0)
    state = PlanState(tasks, ["s"], limits, zones=zones)
    for p in peers:
        state.add_peer(p, draw(st.sets(st.sampled_from(sorted(tasks)), min_size=1)))
        for task in draw(st.sets(st.sampled_from(sorted(tasks)))):
            state.add_holding(p, (task, 0))
    return state, zones


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(plan=zoned_plans(), rnd=st.randoms(use_true_random=False),
       p_fail=st.sampled_from([0.0, 0.2]))
def test_every_peer_completes_and_at_most_one_copy_enters_a_zone(
        plan: tuple[PlanState, dict[str, str]], rnd: random.Random, p_fail: float) -> None:
    """Without the starving rule (the clock stands still) no piece enters a
    zone twice, failures or not; every peer completes, the origin read once."""
    state, zones = plan
    done = deliver(state, rnd, p_fail)
    assert max(crossings(done, zones).values(), default=0) <= 1
    origin = Counter(a.piece for a in done if a.source == ORIGIN)
    assert set(origin.values()) <= {1}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(plan=zoned_plans(), rnd=st.randoms(use_true_random=False))
def test_every_peer_completes_with_starving_peers(
        plan: tuple[PlanState, dict[str, str]], rnd: random.Random) -> None:
    state, _ = plan
    deliver(state, rnd, p_fail=0.1, tick=0.4)
    assert state.all_done()
