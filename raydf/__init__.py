"""raydf: Hugging Face / ModelScope repos to every node of a Ray cluster, peer to peer.

The origin hub is read once; pieces travel node to node through the Ray
object store. ``raydf.fanout(url, dest)`` delivers to every target node and
returns a report; ``raydf.get(url, dest)`` inside a Ray task or actor returns
the local path on that node.
"""

from __future__ import annotations

from raydf import errors
from raydf.api import fanout, get
from raydf.uri import parse_url

__all__ = ["errors", "fanout", "get", "parse_url"]
__version__ = "0.1.0"
