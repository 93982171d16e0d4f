"""What a holder keeps to lend (PinnedPieces) and how it answers lend_many. No Ray."""

from __future__ import annotations

import threading

import numpy as np

from raydf.cluster.lending import HeldCopy, PinnedPieces, lend_each, lent, payload_of
from raydf.cluster.protocol import INLINE_PIECE_BYTES, Lent, LentBytes, NotLent


def test_pinned_pieces_drop_the_least_recently_used_past_the_budget_and_keep_one() -> None:
    pins = PinnedPieces(budget=100)
    pins.add(("a", 0), "ref-a0", 1, 60)
    pins.add(("b", 0), "ref-b0", 2, 30)
    assert pins.get(("a", 0)) == ("ref-a0", 1, 60)  # a0 is now the most recent
    pins.add(("b", 1), "ref-b1", 3, 30)
    assert pins.get(("b", 0)) is None and len(pins) == 2 and pins.bytes == 90
    pins.add(("c", 0), "ref-c0", 4, 500)  # alone over budget: it stays, the rest go
    assert len(pins) == 1 and pins.bytes == 500


def test_dropping_a_task_lets_go_of_only_its_pieces() -> None:
    pins = PinnedPieces(budget=10**6)
    for index in range(3):
        pins.add(("a", index), f"a{index}", index, 10)
    pins.add(("b", 0), "b0", 9, 10)
    pins.drop_task("a")
    assert len(pins) == 1 and pins.bytes == 10 and pins.get(("b", 0)) is not None
    pins.drop_task("a")  # nothing left of it: no error
    assert len(pins) == 1


def test_a_small_piece_is_kept_and_lent_as_bytes_a_large_one_as_a_ref() -> None:
    small = np.zeros(INLINE_PIECE_BYTES, dtype=np.uint8)
    large = np.zeros(INLINE_PIECE_BYTES + 1, dtype=np.uint8)
    assert payload_of(small, lambda a: "ref") is small
    assert payload_of(large, lambda a: "ref") == "ref"
    assert isinstance(lent(small, 5), LentBytes) and lent("ref", 5) == Lent("ref", 5)


def test_lend_many_names_a_piece_it_cannot_lend_and_lends_the_others() -> None:
    held = {("a", 0): LentBytes(np.ones(3, dtype=np.uint8), 7)}

    def lend(task_id: str, index: int) -> Lent | LentBytes:
        return held[(task_id, index)]

    replies = lend_each(lend, [("a", 0), ("a", 1)])
    assert replies[0] is held[("a", 0)]
    assert isinstance(replies[1], NotLent) and "KeyError" in replies[1].reason


def test_a_received_piece_is_put_once_when_first_lent_and_then_lent_as_that_ref() -> None:
    pins = PinnedPieces(budget=10**6)
    array = np.arange(10, dtype=np.uint8)
    pins.add(("a", 0), HeldCopy(array), 7, 10)
    puts: list[np.ndarray] = []

    def put(data: np.ndarray) -> str:
        puts.append(data)
        return f"ref-{len(puts)}"

    lock = threading.Lock()
    assert pins.peek(("a", 0)) == (HeldCopy(array), 7, 10)  # nothing put yet
    assert pins.own(("a", 0), put, lock) == ("ref-1", 7, 10)
    assert pins.own(("a", 0), put, lock) == ("ref-1", 7, 10)  # the first copy, not another
    assert len(puts) == 1 and puts[0] is array
    assert pins.own(("b", 0), put, lock) is None and pins.bytes == 10


def test_a_received_piece_dropped_while_its_copy_is_put_is_still_lent() -> None:
    pins = PinnedPieces(budget=10**6)
    pins.add(("a", 0), HeldCopy(np.zeros(4, dtype=np.uint8)), 3, 4)

    def put_while_dropped(data: np.ndarray) -> str:
        pins.drop_task("a")  # another thread let the task go meanwhile
        return "ref"

    assert pins.own(("a", 0), put_while_dropped, threading.Lock()) == ("ref", 3, 4)
    assert len(pins) == 0 and pins.bytes == 0
