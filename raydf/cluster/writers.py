"""One destination, one writer: which jobs are writing where, on which nodes.

The scheduler records a destination when a caller claims a request that
writes one, and refuses a different request (another revision, token or
filter) into a destination, or a folder inside it, that a job is writing on
any of the same nodes (:class:`~raydf.errors.DestinationBusy`): never a mix
of two jobs' files.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from raydf.errors import DestinationBusy

__all__ = ["Writers"]


class Writers:
    """The destinations being written, by the fingerprint of the request writing each."""

    def __init__(self) -> None:
        # fingerprint -> (destination, nodes, url)
        self._writing: dict[str, tuple[str, frozenset[str], str]] = {}

    def check(self, fingerprint: str, dest: str, nodes: frozenset[str]) -> None:
        """Raise DestinationBusy if another request writes ``dest`` on any of ``nodes``."""
        for owner, (other, their_nodes, url) in self._writing.items():
            if owner != fingerprint and _overlaps(dest, other) and nodes & their_nodes:
                raise DestinationBusy(
                    f"another raydf job ({url}) is writing {other} on "
                    f"{len(nodes & their_nodes)} of these nodes; wait for it to finish, "
                    "or choose another -O"
                )

    def add(self, fingerprint: str, dest: str, nodes: frozenset[str], url: str) -> None:
        self._writing[fingerprint] = (dest, nodes, url)

    def add_nodes(self, fingerprint: str | None, nodes: frozenset[str]) -> None:
        """Nodes joined the job of ``fingerprint``: it writes there too."""
        if fingerprint in self._writing:
            dest, known, url = self._writing[fingerprint]
            self._writing[fingerprint] = (dest, known | nodes, url)

    def drop(self, fingerprint: str) -> None:
        self._writing.pop(fingerprint, None)


def _overlaps(a: str, b: str) -> bool:
    """Whether one destination is, or lies inside, the other."""
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa in pb.parents or pb in pa.parents
