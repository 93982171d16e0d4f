"""Peers filed by how many pieces they still need, to find the laggards first."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

__all__ = ["Buckets"]


class Buckets:
    """Members filed under a positive key; walked from the largest key down."""

    def __init__(self) -> None:
        self._sets: dict[int, set[int]] = {}
        self._keys: list[int] = []  # sorted

    def add(self, member: int, key: int) -> None:
        if key not in self._sets:
            self._sets[key] = set()
            bisect.insort(self._keys, key)
        self._sets[key].add(member)

    def remove(self, member: int, key: int) -> None:
        bucket = self._sets[key]
        bucket.discard(member)
        if not bucket:
            del self._sets[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def largest_first(self) -> Iterator[tuple[int, set[int]]]:
        """(key, members) from the largest key down."""
        for key in reversed(self._keys):
            yield key, self._sets[key]
