"""What crosses an actor boundary: the messages of raydf's control plane.

Ray-free (no ``import ray``): frozen dataclasses only, so unit tests can
build and check every message without a cluster, and mypy checks both ends
through the typed handles of :mod:`raydf.cluster.handles`. Handles inside a
message (``source``, ``scheduler``) are typed ``Any``: they are actor handles
here, fakes in tests.

Who sends what::

    caller    ──JobRequest + seed────▶ scheduler      (start; JobStatus back on poll)
    scheduler ──plan()───────────────▶ seed           (RepoPlan back: then plan_job)
    scheduler ──PeerJoin─────────────▶ peer           (Holdings back)
    scheduler ──PullBatch────────────▶ peer           (one PullOutcome per Pull, in order)
    peer      ──lend(task, index)────▶ holder         (Lent or LentBytes back)
    peer      ──lend_many(pieces)────▶ holder         (small pieces: one of those, or NotLent, each)
    scheduler ──fetch(task, index)───▶ seed           (Fetched back)
    caller    ──usage(k)─────────────▶ scheduler      (the k most requested RepoUsage back)

A pull that did not deliver is a value with a name (:class:`SourceLost`,
:class:`Stale`, :class:`FileCorrupt`, :class:`FileUnplaced`,
:class:`PullFailed`), never an optional dict key; only a dead or unreachable
receiver makes the whole batch call raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raydf.blame import Fault
from raydf.cluster.spec import TaskSpec
from raydf.options import Request
from raydf.plan import RepoPlan
from raydf.policy import Limits
from raydf.usage import RepoUsage

# A piece this small travels inside the lend reply (Ray inlines a reply under
# 100 KiB): one call instead of a call, an object fetch and a re-put.
INLINE_PIECE_BYTES = 64 * 2**10

__all__ = [
    "INLINE_PIECE_BYTES",
    "Fetched",
    "FileCorrupt",
    "FileUnplaced",
    "Holdings",
    "JobRequest",
    "JobSpec",
    "JobStatus",
    "Lent",
    "LentBytes",
    "NotLent",
    "PeerJoin",
    "Pull",
    "PullBatch",
    "PullFailed",
    "PullOutcome",
    "Received",
    "RepoUsage",
    "SeedStats",
    "SourceLost",
    "Stale",
]


@dataclass(frozen=True)
class JobRequest:
    """What a caller asks the scheduler for: the scheduler lists the repo through
    the seed the caller gave the token to, and plans the job (see
    :func:`raydf.cluster.planning.plan_job`)."""

    job_id: str  # the caller's own id for it, so it can cancel a start it was interrupted in
    request: Request  # without its token (``Request.without_secrets``): seeds hold it
    place: bool = True  # False fills the nodes' caches only (``raydf warm``)
    limits: Limits = field(default_factory=Limits)
    memory_budget: int | None = None
    fingerprint: str | None = None
    caller: str = ""
    topology_label: str = ""  # the node label naming each node's zone ("": no zones)
    # A warm the usage book asked for (``raydf warm --auto``): not counted as a
    # request, and a public repo at a recorded commit is planned from the
    # recorded listing (no hub request); see raydf.usage.
    auto: bool = False


@dataclass(frozen=True)
class JobSpec:
    """A planned job, as the scheduler runs it (no token: seeds hold it)."""

    job_id: str
    plan: RepoPlan
    tasks: tuple[TaskSpec, ...]
    dest: str  # the destination folder as the caller gave it; "" fills the caches only
    limits: Limits = field(default_factory=Limits)
    memory_budget: int | None = None  # pinned piece bytes per node (None: 30 % of its store)
    fingerprint: str | None = None  # what makes another caller's request the same job
    aux: tuple[tuple[str, str], ...] = ()  # small (path, text) layout files, e.g. HF refs
    caller: str = ""  # the submitting caller's lease (renewed by its status polls)
    topology_label: str = ""  # the node label naming each node's zone ("": no zones)


@dataclass(frozen=True)
class PeerJoin:
    """The scheduler asks a peer to join a job (receive it, or only serve it)."""

    job_id: str
    tasks: tuple[TaskSpec, ...]
    dest: str = ""  # "" = into the cache only
    memory_budget: int | None = None
    aux: tuple[tuple[str, str], ...] = ()
    epoch: str = ""  # the scheduler incarnation running the job


@dataclass(frozen=True)
class Holdings:
    """What a peer has of a job's tasks already: task id -> piece indices."""

    pieces: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def complete(self, task: TaskSpec) -> bool:
        return len(self.pieces.get(task.task_id, ())) == task.num_pieces


@dataclass(frozen=True)
class Pull:
    """One assignment: take piece ``index`` of ``task_id`` from ``source``."""

    task_id: str
    index: int
    crc: int | None  # None when the scheduler does not know it yet (the lender says)
    source: str  # the holder's id in the plan (a node id, or the seed's id)


@dataclass(frozen=True)
class PullBatch:
    """Every assignment one decision round gives one receiver, for one job.

    ``lenders``: the handles of the sources the receiver has not been told of
    in this job (a handle is costly to send; the receiver keeps each one until
    the job ends)."""

    job_id: str
    pulls: tuple[Pull, ...]
    lenders: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """The piece is on the receiver (``bytes`` 0: another job had brought it)."""

    bytes: int
    seconds: float
    crc: int | None  # None: the receiver had the piece already
    file_done: bool  # this job's file is verified and placed (told once per job)


@dataclass(frozen=True)
class SourceLost:
    """The holder is gone (its actor died, or its object is lost)."""

    error: str


@dataclass(frozen=True)
class Stale:
    """The piece went into an assembly a heal replaced: to be taken again."""


@dataclass(frozen=True)
class FileCorrupt:
    """The piece completed the file and the file failed its digest (exit 4)."""

    reason: str


@dataclass(frozen=True)
class FileUnplaced:
    """The file is verified but could not be put at its path for this job (exit 5)."""

    reason: str


@dataclass(frozen=True)
class PullFailed:
    """The transfer failed; ``fault`` says whom to blame (see :mod:`raydf.blame`)."""

    fault: Fault
    reason: str


PullOutcome = Received | SourceLost | Stale | FileCorrupt | FileUnplaced | PullFailed


@dataclass(frozen=True)
class Lent:
    """A holder's answer to ``lend``: the ref of its copy (owned by the holder) and its CRC-32."""

    ref: Any
    crc: int


@dataclass(frozen=True)
class LentBytes:
    """A holder's answer to ``lend`` for a piece of at most ``INLINE_PIECE_BYTES``:
    the bytes themselves (an ``np.uint8`` array) inside the reply, and their CRC-32.
    No object in the store, so no owner to outlive and no second fetch."""

    data: Any
    crc: int


@dataclass(frozen=True)
class NotLent:
    """A holder's answer, in a ``lend_many``, for a piece it could not lend."""

    reason: str


@dataclass(frozen=True)
class Fetched:
    """A seed's answer to ``fetch``: the piece is held by the seed now."""

    crc: int
    origin_bytes: int  # read for it (a heal's whole-file reads included)
    origin_requests: int  # the seed's requests so far
    hub_requests: dict[str, int]  # the same, by kind
    healed: dict[int, int] | None = None  # piece -> new CRC-32, when the file was read again


@dataclass(frozen=True)
class SeedStats:
    standby: bool  # no request and no token yet
    origin_bytes: int
    origin_requests: int
    hub_requests: dict[str, int]
    held: int


@dataclass(frozen=True)
class JobStatus:
    """Progress of one job, for the nodes a caller asked about (all by default)."""

    job_id: str
    url: str
    bytes: int  # the repo's size
    nodes: dict[str, int]  # node -> bytes of its verified files
    received: dict[str, int]  # node -> bytes of the pieces it received
    done: bool
    needs_seed: bool  # the seed was lost and no replacement runs yet
    version: int = 0  # grows with every change; a long-poll waits past the one it saw
    plan: dict[str, Any] | None = None  # the policy's snapshot (only when asked for)
