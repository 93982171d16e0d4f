"""Hub requests and 429s of the seed's backends against the hub emulator (issue 13).

Reads repos the way the seed does (``read_into`` per piece, four threads at
once) and prints, from the emulator's own counters:

* ``hf_pieces`` / ``hf_resolves``: a Xet-backed model of >= 3,000 pieces and
  the ``/resolve/`` requests it cost (target: files + a small constant);
* ``budget_files`` / ``budget_429``: 240 files under a resolver budget of 100
  per 10 s, announced in ``RateLimit`` on every answer (target: zero 429);
* ``ms_pieces`` / ``ms_hub_requests``: a ModelScope model of >= 100 pieces
  whose shards sit behind a 302 to storage (target: files + a small constant).

Pieces are 4 KiB (files under 64 KiB are one piece) so that thousands of
them fit in a few MiB; the request counts do not depend on the piece size.

    python benchmarks/hub_requests.py
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from raydf.backends import BackendOptions
from raydf.backends.base import Backend, RemoteFile
from raydf.backends.huggingface import HuggingFaceBackend
from raydf.backends.modelscope import ModelScopeBackend
from raydf.testing.hub import HubEmulator, make_dataset, make_model
from raydf.uri import parse_url

MiB = 2**20
PIECE = 4 * 2**10
WHOLE = 64 * 2**10


def _piece(f: RemoteFile) -> int:
    return PIECE if f.size >= WHOLE else max(f.size, 1)


def read_like_the_seed(backend: Backend) -> tuple[int, int]:
    """(files, pieces) after reading every piece of the repo from four threads."""
    commit = backend.resolve()
    files = backend.list_files(commit)
    jobs = [(f, start) for f in files for start in range(0, f.size, _piece(f))]

    def one(job: tuple[RemoteFile, int]) -> None:
        f, start = job
        backend.read_into(commit, f.repo_path, start,
                          memoryview(bytearray(min(_piece(f), f.size - start))))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, jobs))
    backend.close()
    return len(files), len(jobs)


def main() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="raydf-hub-requests-"))
    make_model(root, "org/big", shard_sizes=[4 * MiB] * 3, seed=1)
    make_dataset(root, "org/many", file_sizes=[1024] * 237, seed=2)  # 240 files
    make_model(root, "org/ms", shard_sizes=[MiB, MiB], seed=3)
    out: dict[str, Any] = {}
    with HubEmulator(root) as hub:
        hub.set_knobs(xet=True)
        files, pieces = read_like_the_seed(HuggingFaceBackend(
            parse_url("hf://org/big"), BackendOptions(endpoint=hub.hf_endpoint)))
        stats = hub.stats()
        resolves = stats["by_listener"]["hf"]["requests"] - 2  # the revision, one tree page
        out.update(hf_files=files, hf_pieces=pieces, hf_resolves=resolves)

        hub.clear_knobs()
        hub.reset_stats()
        hub.set_knobs(xet=True, budgets={"resolvers": [100, 10]})
        files, _ = read_like_the_seed(HuggingFaceBackend(
            parse_url("hf://datasets/org/many"), BackendOptions(endpoint=hub.hf_endpoint)))
        out.update(budget_files=files, budget_429=hub.stats()["status_counts"].get("429", 0))

        hub.clear_knobs()
        hub.reset_stats()
        hub.set_knobs(ms_redirect=True)
        files, pieces = read_like_the_seed(ModelScopeBackend(
            parse_url("modelscope://org/ms"), BackendOptions(endpoint=hub.ms_endpoint)))
        out.update(ms_files=files, ms_pieces=pieces,
                   ms_hub_requests=hub.stats()["by_listener"]["ms"]["requests"])
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
