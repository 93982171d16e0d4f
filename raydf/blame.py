"""Who is to blame when a transfer fails: its sender, or one receiver's piece.

Pure (no Ray, no I/O), beside :mod:`raydf.policy`: the scheduler reports each
failed transfer here and does what the :class:`Verdict` says, and the policy
then stops choosing a distrusted sender (:meth:`PlanState.distrust`).

Why per sender and per (receiver, piece), not per piece for the cluster: a
piece that failed five times somewhere says nothing about the next receiver
(it used to fail that receiver at its first try), while a holder that sends
bad bytes was chosen again and again. So:

* **Bad bytes** (the piece failed its CRC-32 at the receiver): the sender is
  not asked for that piece again, and after ``BAD_BYTES_LIMIT`` such pieces
  not for any piece. The receiver is not charged: it takes the piece again.
* **Other sender faults** (a passing ``ActorUnavailableError``, a pull past its
  deadline): retried; after ``SENDER_FAILURES`` in a row (a success resets the
  count) the sender is not chosen any more.
* **Every failure** counts against the (receiver, piece): after
  ``PIECE_FAILURES`` the receiver gives up on the job with the last reason, so
  a broken node fails instead of retrying for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["BAD_BYTES_LIMIT", "PIECE_FAILURES", "SENDER_FAILURES", "Blame", "Fault", "Verdict"]

BAD_BYTES_LIMIT = 2  # pieces with bad bytes before a sender is not chosen at all
SENDER_FAILURES = 3  # failures in a row before a sender is not chosen at all
PIECE_FAILURES = 5  # failures of one piece at one receiver before it gives up

PieceId = tuple[str, int]


class Fault(Enum):
    """What went wrong in one transfer, as far as the receiver can tell."""

    BAD_BYTES = "bad bytes"  # the sender's bytes failed the piece's CRC-32
    SENDER = "sender"  # the sender was briefly unavailable or missed the deadline
    OTHER = "other"  # anything else (the receiver's side, or unknown)


@dataclass(frozen=True)
class Verdict:
    """What the scheduler does about one failed transfer."""

    drop_piece: bool = False  # stop asking the sender for this piece
    distrust_sender: bool = False  # stop asking the sender for anything
    fail_receiver: bool = False  # the receiver gives up on the job


@dataclass
class Blame:
    """Failure counts of one job."""

    bad_bytes: dict[str, int] = field(default_factory=dict)  # sender -> pieces
    in_a_row: dict[str, int] = field(default_factory=dict)  # sender -> failures since a success
    per_piece: dict[tuple[str, PieceId], int] = field(default_factory=dict)
    distrusted: set[str] = field(default_factory=set)

    def failed(self, sender: str, receiver: str, piece: PieceId, fault: Fault) -> Verdict:
        """Count one failed transfer of ``piece`` from ``sender`` to ``receiver``."""
        tries = self.per_piece[(receiver, piece)] = self.per_piece.get((receiver, piece), 0) + 1
        drop = distrust = False
        if fault is Fault.BAD_BYTES:
            drop = True
            bad = self.bad_bytes[sender] = self.bad_bytes.get(sender, 0) + 1
            distrust = bad >= BAD_BYTES_LIMIT
        if fault is not Fault.OTHER:
            row = self.in_a_row[sender] = self.in_a_row.get(sender, 0) + 1
            distrust = distrust or row >= SENDER_FAILURES
        if distrust:
            self.distrusted.add(sender)
        # Bad bytes are the sender's fault: the receiver is not charged for them.
        charged = fault is not Fault.BAD_BYTES and tries >= PIECE_FAILURES
        return Verdict(drop_piece=drop, distrust_sender=distrust, fail_receiver=charged)

    def delivered(self, sender: str) -> None:
        """A transfer from ``sender`` succeeded: its failures in a row start again."""
        self.in_a_row.pop(sender, None)
