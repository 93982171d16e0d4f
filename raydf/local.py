"""Download a plan onto this machine alone, straight from the origin.

Used where there is one node and no Ray (``raydf get --local``), and as the
reference the fan-out is compared with. Several files at once and several
ranged requests per large file, in one thread pool, so one node is never
slower than ``huggingface_hub.snapshot_download``. Every file goes through the
node cache: assembled in a partial file, verified, stored, then placed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from raydf.backends.base import Backend, RemoteFile
from raydf.cache import NodeCache, storage_error
from raydf.errors import StorageError
from raydf.pieces import Piece, pieces_of
from raydf.plan import RepoPlan

__all__ = ["LocalResult", "destination_problem", "download", "place_from_cache"]


@dataclass(frozen=True)
class LocalResult:
    """What one node did for one plan."""

    path: str
    bytes: int
    origin_bytes: int
    cached_files: int
    seconds: float


def place_from_cache(plan: RepoPlan, dest: Path, cache: NodeCache) -> list[RemoteFile]:
    """Place every file the cache already has; return the ones still missing."""
    missing = []
    for f in plan.files:
        target = dest / f.path
        blob = cache.blob(f)
        if blob is None:
            missing.append(f)
        elif not (target.exists() and os.path.samefile(target, blob)):
            cache.place(blob, target)
    return missing


def destination_problem(dest_dir: Path, paths: Iterable[str] = ()) -> StorageError | None:
    """Why files cannot be placed at ``paths`` under ``dest_dir`` on this node, if they
    cannot: an existing file where a folder must be (``dest_dir`` or one above or
    below it), or an existing folder where a file must be.

    Checked before anything is fetched (decide, then do), so such a run costs
    no origin bytes and says what to change in one line; with no ``paths``,
    only ``dest_dir`` and the folders above it are checked.
    """
    checked: set[Path] = set()
    targets = [dest_dir / p for p in paths]
    for target in targets or [dest_dir / "_"]:  # "_": only dest_dir and above are checked
        for folder in reversed(target.parents):
            if folder in checked:
                continue
            checked.add(folder)
            if folder.exists() and not folder.is_dir():
                return StorageError(
                    f"cannot write under {folder}: it is an existing file, not a folder; "
                    "remove it or choose another -O")
        if targets and target.is_dir() and not target.is_symlink():
            return StorageError(
                f"cannot write {target}: it is an existing folder; remove it or choose another "
                "-O (without -r, -O names the file itself; end it with / to put the file "
                "inside a folder)")
    return None


def download(
    plan: RepoPlan,
    backend: Backend,
    dest: Path,
    cache: NodeCache,
    *,
    workers: int = 8,
    on_bytes: Callable[[int], None] | None = None,
) -> LocalResult:
    """Fetch every file of ``plan`` not in the cache, verify it, place it under ``dest``."""
    started = time.monotonic()
    problem = destination_problem(dest, (f.path for f in plan.files))
    if problem is not None:
        raise problem
    origin_bytes = 0
    lock = threading.Lock()
    partials: dict[str, Path] = {}
    remaining: dict[str, int] = {}

    def fetch(f: RemoteFile, piece: Piece) -> None:
        nonlocal origin_bytes
        buffer = bytearray(piece.length)
        backend.read_into(plan.commit, f.repo_path, piece.start, memoryview(buffer))
        with open(partials[f.path], "r+b") as out:
            out.seek(piece.start)
            out.write(buffer)
        with lock:
            origin_bytes += piece.length
            remaining[f.path] -= 1
            last = remaining[f.path] == 0
        if on_bytes:
            on_bytes(piece.length)
        if last:
            cache.place(cache.commit(partials[f.path], f), dest / f.path)

    missing: list[RemoteFile] = []
    try:
        cache.sweep_orphans()
        missing = place_from_cache(plan, dest, cache)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raydf-fetch") as pool:
            futures: list[Future[None]] = []
            for f in missing:
                partials[f.path] = cache.new_partial(f)
                pieces = pieces_of(f.size)
                remaining[f.path] = len(pieces)
                futures.extend(pool.submit(fetch, f, p) for p in pieces)
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in pending:
                fut.cancel()
            for fut in done:
                fut.result()  # re-raise the first failure
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, Path(exc.filename or dest)) from None
    finally:
        for path in partials.values():
            cache.discard(path)  # no-op for the ones committed
    return LocalResult(
        path=str(dest),
        bytes=plan.total_bytes,
        origin_bytes=origin_bytes,
        cached_files=len(plan.files) - len(missing),
        seconds=time.monotonic() - started,
    )
