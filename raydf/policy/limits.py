"""The terms of the policy: pieces, assignments and the caps on transfers (pure)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ORIGIN", "SLOT_BYTES", "SMALL_PIECES_PER_FETCH", "SMALL_PIECES_PER_SLOT",
           "Assignment", "Limits", "PieceId"]

PieceId = tuple[str, int]
"""(task id = one file's content key, piece index)."""

ORIGIN = "origin"
"""Pseudo-source of an origin fetch: the hub, read by a seed."""

SLOT_BYTES = 4 * 2**20  # what one transfer slot is sized for: a piece of a file cut in pieces
SMALL_PIECES_PER_SLOT = 16  # at most this many small pieces share one slot
SMALL_PIECES_PER_FETCH = 4  # at most this many small pieces share one origin fetch slot


@dataclass(frozen=True)
class Assignment:
    """One transfer: ``peer`` receives ``piece`` from ``source``.

    For an origin fetch ``source`` is :data:`ORIGIN` and ``peer`` is a seed id.
    """

    peer: str
    piece: PieceId
    source: str


@dataclass(frozen=True)
class Limits:
    """Transfers in flight allowed at once."""

    peer_downloads: int = 4  # into one peer
    holder_uploads: int = 2  # out of one peer holder
    origin_fetches: int = 8  # from the origin, per seed
    seed_uploads: int = 4  # out of one seed
    far_after: float = 2.0  # s a peer waits on its own zone before an idle far holder serves it
    use_zones: bool = True  # False: decide as if blind to zones (they are still counted)

    def __post_init__(self) -> None:
        for name in ("peer_downloads", "holder_uploads", "origin_fetches", "seed_uploads"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1, got {getattr(self, name)}")
        if self.far_after < 0:
            raise ValueError(f"Limits.far_after must be at least 0, got {self.far_after}")

    @classmethod
    def from_caps(cls, text: str, **others: Any) -> Limits:
        """Limits from ``"D,U,O,S"``: peer downloads, holder uploads, origin
        fetches and seed uploads (the benchmarks' ``--limits``); "" is the defaults."""
        if not text:
            return cls(**others)
        try:
            caps = [int(c) for c in text.split(",")]
        except ValueError:
            caps = []
        if len(caps) != 4:
            raise ValueError(f"limits take four whole numbers D,U,O,S, got {text!r}")
        return cls(peer_downloads=caps[0], holder_uploads=caps[1], origin_fetches=caps[2],
                   seed_uploads=caps[3], **others)

    def for_largest_piece(self, largest: int) -> Limits:
        """These limits for a job whose pieces are at most ``largest`` bytes: the
        caps count slots of ``SLOT_BYTES``, and pieces far smaller share a slot (up
        to ``SMALL_PIECES_PER_SLOT``), so a dataset of small files keeps about as
        many bytes moving as a model does instead of waiting on round trips. Origin
        fetches share less (``SMALL_PIECES_PER_FETCH``): the origin answers each
        request in its own time, whatever its size."""
        share = min(SMALL_PIECES_PER_SLOT, SLOT_BYTES // max(largest, 1))
        if share <= 1:
            return self
        return dataclasses.replace(self, peer_downloads=self.peer_downloads * share,
                                   holder_uploads=self.holder_uploads * share,
                                   seed_uploads=self.seed_uploads * share,
                                   origin_fetches=self.origin_fetches
                                   * min(share, SMALL_PIECES_PER_FETCH))
