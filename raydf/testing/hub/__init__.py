"""A local Hugging Face + ModelScope hub that the official clients accept unchanged.

Three HTTP/1.1 listeners on loopback, started from Python or the command line::

    from raydf.testing import HubEmulator, make_model
    make_model(root, "org/llm", shard_sizes=[64 * 2**20] * 4)
    with HubEmulator(root, tokens={"hf_good": "alice"}, approved={"alice"}) as hub:
        hub.hf_endpoint    # http://127.0.0.1:<port>  -> HF_ENDPOINT
        hub.ms_endpoint    # http://127.0.0.1:<port>  -> MODELSCOPE_ENDPOINT
        hub.cdn_endpoint   # http://127.0.0.2:<port>  where LFS files redirect to (CDN, Xet bridge)
        hub.set_knobs(bandwidth=20e6, rate_limit=(100, 60))
        hub.stats()

    python -m raydf.testing.hub serve --root DIR --token hf_good=alice

Repos on disk
-------------
``ROOT/{models,datasets,spaces}/<owner>/<name>/`` is a plain folder of files:
the default branch of that repo, served as ``main`` on HF and ``master`` on
ModelScope (both names work on both hubs; ModelScope has no spaces). More
revisions and access rules come from an optional file *beside* the folder, so it
is never a repo file::

    ROOT/models/org/name/              default branch
    ROOT/models/org/name@v1.0/         the tag's files (a folder with "@" is never a repo)
    ROOT/models/org/name@dev/          a branch's files
    ROOT/models/org/name.hub.json      {"private": false, "gated": "manual",
                                        "branches": {"dev": "name@dev"},
                                        "tags": {"v1.0": "name@v1.0"}}
    ROOT/models/org/old.hub.json       {"moved_to": "org/name"} with no folder "old":
                                       a renamed repo; Hugging Face answers its urls
                                       with a 307 to a relative Location under the new name

``branches``/``tags`` map a revision name (which may contain "/") to a sibling
folder name. :func:`make_model` / :func:`make_dataset` accept ``"org/name@v1.0"``
to write such a folder and :func:`write_repo_meta` writes the JSON.

A revision is a branch, a tag, a full 40-hex commit id or a prefix of one
(7 hex digits or more) that names a single commit, as git and the Hub take it. Commit ids are
``sha1`` over the sorted ``(path, sha256)`` pairs: the same content always has
the same commit. Files are LFS when their extension is a weight/archive one
(safetensors, bin, parquet, ...) or they are 10 MiB or more. Digests (sha256 and
git blob sha1) are cached per (path, size, mtime_ns).

Access
------
``tokens`` maps a token to a user. A token that is not in it is refused with 401
on every route. Private repos need a valid token (any user). Gated repos list
freely but their file content needs a token whose user is in ``approved``
(anonymous: 401 GatedRepo, not approved: 403 GatedRepo), as on the real hubs.

Accounting
----------
``stats()`` (also ``GET /_emulator/stats`` on the HF listener)::

    {"bytes", "requests",                 # body bytes written to sockets, responses
     "by_file": {"hf:models/org/name:config.json": {"bytes", "requests"}},
     "by_client": {"127.0.0.1": {...}}, "by_listener": {"hf", "ms", "cdn"},
     "download_bytes", "download_requests",   # GETs answered with file content (200/206)
     "cdn_authorization_headers",             # token leaks to the CDN
     "status_counts": {"200": n, "302": n, "429": n}}

CDN requests count under the HF file key they were redirected for; HEADs and
redirects count as requests of their file but not as downloads.
``reset_stats()`` = ``POST /_emulator/reset``; ``set_knobs(**knobs)`` =
``POST /_emulator/knobs`` with a JSON object (``"clear": true`` clears first);
``GET /_emulator/knobs`` shows them. The knobs are described in
:mod:`raydf.testing.hub.knobs`.

Throughput
----------
Bodies go out with ``os.sendfile`` (zero copy, the GIL released), so an uncapped
emulator is far faster than any hub. Measured on the 2-core development VM with
four 256 MiB safetensors shards (warm page cache), each fetched whole by its own
client at the same time, bytes from ``stats()`` over wall time: 4 ``curl -o
/dev/null`` processes 2.4-3.0 GB/s; 4 threads streaming with ``httpx`` inside
the emulator's own process 0.55-0.69 GB/s (the Python client is the limit).
Capped streams go out in token-bucket sized ``sendfile`` chunks.

Every request rescans the repo folder (one ``stat`` per file, ~3 us each: 30 ms
for 10 000 files) so edits show up at once; digests are computed once per
(path, size, mtime_ns), and a 1 GiB shard hashes in about a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from raydf.testing.hub.cdn import CdnHandler
from raydf.testing.hub.hf import HfHandler
from raydf.testing.hub.knobs import Knobs
from raydf.testing.hub.modelscope import ModelScopeHandler
from raydf.testing.hub.repos import RepoStore
from raydf.testing.hub.server import HubState, Listener
from raydf.testing.hub.synth import make_dataset, make_model, make_small_files, write_repo_meta

__all__ = ["HubEmulator", "make_dataset", "make_model", "make_small_files", "write_repo_meta"]

if TYPE_CHECKING:  # typing.Self needs Python 3.11; annotations are never evaluated
    from typing_extensions import Self


class HubEmulator:
    """Hugging Face, ModelScope and CDN listeners over one folder of repos."""

    def __init__(
        self,
        root: Path | str,
        *,
        tokens: Mapping[str, str] | None = None,
        approved: Iterable[str] = (),
        host: str = "127.0.0.1",
        hf_port: int = 0,
        ms_port: int = 0,
        cdn_host: str = "127.0.0.2",
        cdn_port: int = 0,
        tree_page_size: int = 1000,
        ms_files_limit: int = 3000,
        bandwidth: float | None = None,
        per_connection: float | None = None,
    ) -> None:
        """Configure (nothing listens until :meth:`start`).

        ``tokens``: token -> user name. ``approved``: users let into gated repos.
        Port 0 picks a free port. ``tree_page_size`` and ``ms_files_limit`` are the
        HF tree page size and the ModelScope listing cut, small in tests to force
        pagination. ``bandwidth``/``per_connection`` are the initial caps (bytes/s),
        kept by :meth:`clear_knobs`.
        """
        self.root = Path(root)
        self._state = HubState(
            RepoStore(self.root), dict(tokens or {}), set(approved),
            Knobs(bandwidth=bandwidth, per_connection=per_connection),
            tree_page_size=tree_page_size, ms_files_limit=ms_files_limit,
        )
        self._addresses = {"hf": (host, hf_port), "ms": (host, ms_port), "cdn": (cdn_host, cdn_port)}
        self._listeners: dict[str, Listener] = {}

    def start(self) -> HubEmulator:
        """Bind the three listeners and serve on daemon threads."""
        if self._listeners:
            raise RuntimeError("the emulator is already running")
        self._state.stopping.clear()
        handlers = {"hf": HfHandler, "ms": ModelScopeHandler, "cdn": CdnHandler}
        try:
            for name, handler in handlers.items():
                self._listeners[name] = Listener(*self._addresses[name], handler, self._state)
        except OSError:
            self._close_all(started=False)
            raise
        for name, listener in self._listeners.items():
            self._state.endpoints[name] = listener.url
            listener.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        self._state.stopping.set()
        self._close_all(started=True)

    def _close_all(self, started: bool) -> None:
        for listener in self._listeners.values():
            if started:
                listener.stop()
            else:
                listener.server.server_close()
        self._listeners.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        endpoints = self._state.endpoints.items()
        where = " ".join(f"{k}={v}" for k, v in endpoints) if self._listeners else "stopped"
        return f"<HubEmulator {self.root} {where}>"

    @property
    def hf_endpoint(self) -> str:
        """Base url of the Hugging Face API (``HF_ENDPOINT``)."""
        return self._endpoint("hf")

    @property
    def ms_endpoint(self) -> str:
        """Base url of the ModelScope API (``MODELSCOPE_ENDPOINT``)."""
        return self._endpoint("ms")

    @property
    def cdn_endpoint(self) -> str:
        """Base url of the CDN that HF LFS downloads are redirected to."""
        return self._endpoint("cdn")

    def _endpoint(self, name: str) -> str:
        if not self._listeners:
            raise RuntimeError("the emulator is not running: call start() or use it as a context manager")
        return self._state.endpoints[name]

    @property
    def tokens(self) -> dict[str, str]:
        """token -> user; mutable while running."""
        return self._state.tokens

    @property
    def approved(self) -> set[str]:
        """Users let into gated repos; mutable while running."""
        return self._state.approved

    def stats(self) -> dict[str, Any]:
        """A copy of every counter (see the module docstring)."""
        return self._state.accounting.snapshot()

    def reset_stats(self) -> None:
        """Zero every counter."""
        self._state.accounting.reset()

    def set_knobs(self, **knobs: Any) -> None:
        """Change some knobs, keep the others.

        ``bandwidth``, ``per_connection`` (bytes/s or None), ``rate_limit`` ((K,
        window_s) or None), ``fail_next``, ``fail_status``, ``truncate_next``,
        ``corrupt_next``, ``stall_next`` (counts), ``stall_s``, ``delay`` (seconds)
        and ``match`` ("download", "api" or "any", for the faults and delay of
        this call); ``budgets`` ({"resolvers": [K, W], "api": [K, W]}), ``xet``,
        ``ms_redirect`` and ``ms_page_cap``. See :mod:`raydf.testing.hub.knobs`.
        """
        self._state.knobs.set(**knobs)

    def clear_knobs(self) -> None:
        """Back to the constructor's caps with no rate limit, fault or delay."""
        self._state.knobs.clear()

    def knobs(self) -> dict[str, Any]:
        """The knobs as set, with the fault counts left."""
        return self._state.knobs.describe()
