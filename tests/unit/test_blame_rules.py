"""Blame the sender (raydf.blame) and a distrusted holder in the policy. No Ray."""

from __future__ import annotations

from raydf.blame import BAD_BYTES_LIMIT, PIECE_FAILURES, SENDER_FAILURES, Blame, Fault
from raydf.policy import ORIGIN, Assignment, PlanState, decide

PIECE = ("t", 0)


def test_bad_bytes_drop_the_piece_from_the_sender_then_the_sender_and_never_charge_the_receiver() -> None:
    blame = Blame()
    first = blame.failed("liar", "r1", PIECE, Fault.BAD_BYTES)
    assert first.drop_piece and not first.distrust_sender and not first.fail_receiver
    verdicts = [blame.failed("liar", "r1", ("t", i), Fault.BAD_BYTES)
                for i in range(1, BAD_BYTES_LIMIT)]
    assert verdicts[-1].distrust_sender and "liar" in blame.distrusted
    many = [blame.failed(f"liar{i}", "r1", PIECE, Fault.BAD_BYTES) for i in range(3 * PIECE_FAILURES)]
    assert not any(v.fail_receiver for v in many)


def test_a_sender_that_keeps_failing_is_distrusted_and_a_success_starts_its_count_again() -> None:
    blame = Blame()
    for _ in range(SENDER_FAILURES - 1):
        assert not blame.failed("slow", "r1", PIECE, Fault.SENDER).distrust_sender
    blame.delivered("slow")
    for i in range(SENDER_FAILURES - 1):
        assert not blame.failed("slow", f"r{i}", PIECE, Fault.SENDER).distrust_sender
    assert blame.failed("slow", "r9", PIECE, Fault.SENDER).distrust_sender


def test_failures_count_per_receiver_and_piece_not_per_piece_for_the_cluster() -> None:
    blame = Blame()
    verdicts = [blame.failed(f"h{i}", "r1", PIECE, Fault.OTHER) for i in range(PIECE_FAILURES)]
    assert [v.fail_receiver for v in verdicts] == [False] * (PIECE_FAILURES - 1) + [True]
    # Another receiver's first failure of the same piece is only its first.
    assert not blame.failed("h0", "r2", PIECE, Fault.OTHER).fail_receiver
    assert not any(v.distrust_sender for v in verdicts)


def test_a_distrusted_holder_is_never_chosen_as_a_source_and_still_receives() -> None:
    state = PlanState({"t": 4}, ["seed"])
    state.add_peer("liar", [])
    for i in range(4):
        state.add_holding("liar", ("t", i))
    state.add_peer("a", ["t"])
    state.add_peer("b", ["t"])
    state.distrust("liar")
    seen: list[Assignment] = []
    while not state.all_done():
        out = decide(state)
        assert out
        for a in out:
            state.start(a)
        for a in out:
            state.finish(a)
        seen += out
    assert all(a.source != "liar" for a in seen)
    assert state.holders(("t", 0)) >= {"a", "b"} and "liar" not in state.holders(("t", 0))
    assert sum(a.source == ORIGIN for a in seen) == 4  # the liar's copies did not count


def test_a_distrusted_peer_keeps_receiving_what_it_wants() -> None:
    state = PlanState({"t": 2}, ["seed"])
    state.add_peer("shaky", ["t"])
    state.distrust("shaky")
    while not state.all_done():
        out = decide(state)
        for a in out:
            state.start(a)
            state.finish(a)
    assert state.done("shaky") and "shaky" not in state.holders(("t", 1))


def test_retaken_pieces_are_needed_again_by_every_peer_and_stay_with_the_seed() -> None:
    state = PlanState({"t": 2}, ["seed"])
    state.add_peer("a", ["t"])
    state.add_peer("b", ["t"])
    while not state.all_done():
        for a in decide(state):
            state.start(a)
            state.finish(a)
    state.retake([("t", 1)])
    assert not state.done("a") and not state.done("b")
    assert state.holders(("t", 1)) == {"seed"} and state.holders(("t", 0)) >= {"a", "b"}
    again = decide(state)
    assert {(a.peer, a.piece) for a in again} == {("a", ("t", 1)), ("b", ("t", 1))}


def test_an_abandoned_task_no_longer_holds_a_peer_back_and_is_never_fetched() -> None:
    state = PlanState({"bad": 2, "good": 1}, ["seed"])
    state.add_peer("a", ["bad", "good"])
    seen: list[Assignment] = []
    state.abandon("bad")
    while not state.all_done():
        out = decide(state)
        for a in out:
            state.start(a)
            state.finish(a)
        seen += out
    assert state.done("a") and all(a.piece[0] == "good" for a in seen)
