"""Whether ``-O`` can be written on each target node, checked there before a fan-out.

``-r -O`` naming an existing file, or ``-O`` naming an existing folder
without ``-r``, would fail on the node only after the origin was read, and
each node's file system is its own (the caller may not be a target at all).
So the caller asks each target node's peer first (one call each, a few
milliseconds) and refuses the run in one line (exit 5), as ``--local`` does.
"""

from __future__ import annotations

from raydf.cache import node_path
from raydf.errors import StorageError
from raydf.local import destination_problem

__all__ = ["destination_problem_here"]


def destination_problem_here(dest: str, recursive: bool) -> StorageError | None:
    """Why ``dest`` (as the caller gave it) cannot be written on this node, if it cannot."""
    path = node_path(dest)
    if recursive:
        return destination_problem(path)
    return destination_problem(path.parent, [path.name])
