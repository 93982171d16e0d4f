"""Which repos the cluster's jobs ask for, and how often (pure: no Ray, no I/O).

The scheduler records every caller of a job (the one that leads it and each
one that joins it) in one :class:`UsageBook`; ``raydf warm --auto`` asks it
for the K most requested (:meth:`UsageBook.top`) and warms those, and
``--follow`` does so for each node that joins the cluster.

An entry is one repo as the user meant it: its URL (the type and the path
inside the repo included, no revision), the commit the revision resolved to,
the hub endpoint, and the ``--include``/``--exclude`` filters (they change
what is fetched). Never a token: only whether the hub said the repo is
*public* (neither private nor gated); a repo that is not public is warmed
only with a token the warming caller passes itself, each time.

For a public entry the book also keeps the listing (the files at that commit,
which a commit never changes), so a warm of it plans without asking the hub
anything; a private or gated repo is listed again with the caller's token,
so the hub judges that caller. Only Hugging Face and ModelScope repos are
recorded (an object store's or a web URL's "commit" is no fixed revision, and
a web URL's query may be a signature).

Bounded: at most ``capacity`` entries (the least requested go, the one just
recorded never) and listings of at most ``listed_files`` files in all (the
lower-ranked entries lose theirs first and are listed again when warmed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import PurePosixPath

from raydf.options import Request
from raydf.plan import RepoPlan
from raydf.uri import parse_url

__all__ = ["RepoUsage", "UsageBook", "UsageKey", "key_of", "records"]

CAPACITY = 100  # entries kept
LISTED_FILES = 200_000  # files of the kept listings, in all
JOBS = 64  # jobs whose entry a joining caller is counted under


@dataclass(frozen=True, order=True)
class UsageKey:
    """What makes two requests the same entry (the revision resolved to ``commit``)."""

    url: str
    commit: str
    endpoint: str = ""  # "" = the hub's default (or the caller's HF_ENDPOINT, ...)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class RepoUsage:
    """One entry of the book, as :meth:`UsageBook.top` answers it (no listing, no token)."""

    key: UsageKey
    public: bool  # the hub said neither private nor gated: no token needed to warm it
    count: int  # callers that asked for it
    first: float  # wall-clock time of the first request
    last: float  # ... and of the latest
    files: int = 0
    bytes: int = 0

    @property
    def url(self) -> str:
        return self.key.url

    @property
    def commit(self) -> str:
        return self.key.commit

    @property
    def scheme(self) -> str:
        return parse_url(self.key.url).scheme

    @property
    def token_option(self) -> str:
        """The flag that passes a token for this entry's hub (``--hf-token``)."""
        return "--hf-token" if self.scheme == "hf" else "--ms-token"

    def hub_options(self) -> dict[str, str]:
        """``make_request``'s hub options for warming exactly this entry: its commit
        as the revision, its endpoint (no token: the caller adds its own)."""
        prefix = "hf" if self.scheme == "hf" else "ms"
        options = {f"{prefix}_revision": self.key.commit}
        if self.key.endpoint:
            options[f"{prefix}_endpoint"] = self.key.endpoint
        return options

    def label(self) -> str:
        """``hf://org/m@0123456789ab``, and the filters, for a terminal line."""
        filters = [*(f"--include {p!r}" for p in self.key.include),
                   *(f"--exclude {p!r}" for p in self.key.exclude)]
        return " ".join([f"{self.key.url}@{self.key.commit[:12]}", *filters])


def records(request: Request) -> bool:
    """Whether requests like this one are recorded (Hugging Face and ModelScope repos)."""
    return request.source.is_hub


def key_of(request: Request, commit: str) -> UsageKey:
    """The entry ``request`` counts under once its revision resolved to ``commit``."""
    return UsageKey(request.url, commit, request.backend_options.endpoint or "",
                    tuple(request.include), tuple(request.exclude))


def _as_listed(request: Request, plan: RepoPlan) -> RepoPlan:
    """The listing as a warm (``-r``) of the same URL makes it: a request without
    ``-r`` named its one file after ``-O``; with ``-r`` it has its own name."""
    if request.recursive:
        return plan
    files = tuple(dataclasses.replace(f, path=PurePosixPath(f.repo_path).name)
                  for f in plan.files)
    return dataclasses.replace(plan, files=files)


@dataclass
class _Entry:
    usage: RepoUsage
    listing: RepoPlan | None


class UsageBook:
    """The repos requested on this cluster, ranked by how often (see the module doc)."""

    def __init__(self, capacity: int = CAPACITY, listed_files: int = LISTED_FILES,
                 jobs: int = JOBS) -> None:
        if capacity < 1:
            raise ValueError("a usage book keeps at least one entry")
        self.capacity = capacity
        self.listed_files = listed_files
        self._jobs_kept = jobs
        self._entries: dict[UsageKey, _Entry] = {}
        self._jobs: dict[str, UsageKey] = {}  # job id -> the entry its joiners count under

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<UsageBook {len(self._entries)} repos, {sum(self._counts())} requests>"

    def _counts(self) -> list[int]:
        return [e.usage.count for e in self._entries.values()]

    def record(self, job_id: str, request: Request, plan: RepoPlan, now: float, *,
               count: bool = True) -> UsageKey | None:
        """A caller's job ``job_id`` for ``request`` was listed as ``plan``; counted
        once unless ``count`` is false (a warm the book itself asked for), and
        remembered so that callers who :meth:`join` the job count under it too.
        None (nothing recorded) for requests that are not recorded."""
        if not records(request):
            return None
        key = key_of(request, plan.commit)
        self._jobs[job_id] = key
        while len(self._jobs) > self._jobs_kept:
            del self._jobs[next(iter(self._jobs))]
        if count:
            self._count(key, now, _as_listed(request, plan))
        return key

    def joined(self, job_id: str, now: float) -> UsageKey | None:
        """One more caller joined job ``job_id``: its entry counts it (if it has one)."""
        key = self._jobs.get(job_id)
        if key is not None:
            self._count(key, now, None)
        return key

    def _count(self, key: UsageKey, now: float, plan: RepoPlan | None) -> None:
        entry = self._entries.get(key)
        if entry is None:
            if plan is None:
                return  # its entry was dropped meanwhile: nothing to count it under
            usage = RepoUsage(key, plan.public, 0, now, now, len(plan.files), plan.total_bytes)
            entry = self._entries[key] = _Entry(usage, None)
        if plan is not None and plan.public:
            entry.listing = plan
        elif plan is not None:
            entry.listing = None  # no longer public: list with the caller's token
        public = plan.public if plan is not None else entry.usage.public
        entry.usage = dataclasses.replace(entry.usage, count=entry.usage.count + 1, last=now,
                                          public=public)
        self._bound(keep=key)

    def _bound(self, keep: UsageKey) -> None:
        ranked = self._ranked()
        while len(ranked) > self.capacity:
            drop = next(e for e in reversed(ranked) if e.usage.key != keep)
            ranked.remove(drop)
            del self._entries[drop.usage.key]
        listed = 0
        for entry in ranked:
            if entry.listing is None:
                continue
            listed += len(entry.listing.files)
            if listed > self.listed_files:
                entry.listing = None
                listed -= entry.usage.files

    def _ranked(self) -> list[_Entry]:
        # Most requested first; then the most recently requested; then by key.
        return sorted(self._entries.values(),
                      key=lambda e: (-e.usage.count, -e.usage.last, e.usage.key))

    def top(self, k: int) -> list[RepoUsage]:
        """The ``k`` most requested entries, most requested first (ties: the latest)."""
        return [e.usage for e in self._ranked()[:max(k, 0)]]

    def listing(self, request: Request) -> RepoPlan | None:
        """The kept listing of a public entry that ``request`` names exactly (its
        revision is the entry's full commit), else None: list it from the hub."""
        revision = request.backend_options.revision or ""
        if not records(request) or len(revision) != 40:
            return None
        entry = self._entries.get(key_of(request, revision))
        if entry is None or not entry.usage.public:
            return None
        return entry.listing
