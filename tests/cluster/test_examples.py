"""The examples on a real 4-node cluster, with the hub emulator as origin.

``examples/serve_model.py``: 4 replicas on 4 GPU nodes, each calling
``raydf.get`` in ``__init__`` at the same time. ``examples/train_dataset.py``:
4 Train-style workers, one per node, each calling ``raydf.get`` at the same
time. Both must leave the files on every node, answer from the weights /
data that are there, and read the origin once. Last, a replica that starts
after the fan-out ended gets the model from the nodes that have it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ray import cloudpickle, serve

from raydf.testing.cluster import LocalCluster
from raydf.testing.hub import HubEmulator, make_dataset, make_model

# The examples are scripts that import their siblings by name; import them the same way.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import safetensors_numpy
import serve_model
import train_dataset

# Imported as modules (not run as __main__), the examples would be pickled by
# reference, and the workers cannot import them: ship their code by value.
for _module in (safetensors_numpy, serve_model, train_dataset):
    cloudpickle.register_pickle_by_value(_module)

MiB = 2**20
NODES = 4
# A busy hub: a 3 MiB repo takes ~6 s, longer than the ~5 s between the first
# and the last of 4 replicas or workers starting here, so all their calls overlap.
ORIGIN_RATE = 5e5  # bytes/s
MODEL_DEST = "/models/tiny"
DATA_DEST = "/data/corpus"


def _repo_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextmanager
def _busy_origin(hub: HubEmulator) -> Iterator[None]:
    hub.set_knobs(bandwidth=ORIGIN_RATE)
    try:
        yield
    finally:
        hub.clear_knobs()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _weight_sums(folder: Path) -> dict[str, int]:
    """Each tensor's sum, read from the source shards with struct, json and numpy."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    sums = {}
    for name, shard in index["weight_map"].items():
        raw = (folder / shard).read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])
        info = json.loads(raw[8 : 8 + header_len])[name]
        begin, end = info["data_offsets"]
        assert info["dtype"] == "U8"
        data = np.frombuffer(raw, np.uint8, end - begin, 8 + header_len + begin)
        sums[name] = int(data.sum(dtype=np.uint64))
    return sums


# -- the safetensors reader, no cluster ----------------------------------------


def test_load_safetensors_reads_float_int_and_bfloat16_tensors(tmp_path: Path) -> None:
    f32 = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    i64 = np.array([-5, 0, 2**40], dtype="<i8")
    bf16_values = np.array([1.5, -2.0, 3.140625], dtype="<f4")  # exact in bfloat16
    bf16 = (bf16_values.view("<u4") >> 16).astype("<u2")
    blobs = [("w", "F32", f32), ("ids", "I64", i64), ("half", "BF16", bf16)]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, array in blobs:
        shape = list(bf16_values.shape if dtype == "BF16" else array.shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(a.tobytes() for _, _, a in blobs))

    tensors = safetensors_numpy.load_safetensors(path)

    assert sorted(tensors) == ["half", "ids", "w"]
    np.testing.assert_array_equal(tensors["w"], f32)
    np.testing.assert_array_equal(tensors["ids"], i64)
    assert tensors["half"].dtype == np.float32
    np.testing.assert_array_equal(tensors["half"], bf16_values)


def test_load_safetensors_refuses_a_header_longer_than_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="header length 1000"):
        safetensors_numpy.load_safetensors(path)


# -- Serve: 4 replicas on 4 nodes ------------------------------------------------


@dataclass(frozen=True)
class ServeRun:
    answers: dict[str, dict[str, Any]]  # replica id -> its answer
    http_answer: dict[str, Any]
    stats: dict[str, Any]  # the hub's, from deploying to the last answer


@pytest.fixture(scope="module")
def serve_port(cluster: LocalCluster) -> Iterator[int]:
    """Serve on the cluster, HTTP on the head node only; shut down after the module."""
    port = _free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def tiny(hub_root: Path) -> Path:
    return make_model(hub_root, "org/tiny", shard_sizes=[2 * MiB, 1 * MiB], seed=11)


@pytest.fixture(scope="module")
def served(hub: HubEmulator, serve_port: int, tiny: Path) -> ServeRun:
    """Deploy the app cold, ask every replica, then delete it (it holds every GPU).

    The origin is a busy one, so all four replicas call ``raydf.get`` while
    the fan-out runs (a call after it ended is
    ``test_a_replica_started_after_the_fan_out_reads_nothing_from_the_origin``).
    """
    hub.reset_stats()
    try:
        with _busy_origin(hub):
            app = serve_model.build_app("hf://org/tiny", MODEL_DEST, NODES, hub.hf_endpoint)
            handle = serve.run(app, name="tiny")
        answers = serve_model.answers_from_every_replica(handle, NODES)
        http_answer = httpx.get(f"http://127.0.0.1:{serve_port}/",
                                params={"tensor": "model.layers.1.weight"}, timeout=60).json()
        return ServeRun(answers, http_answer, hub.stats())
    finally:
        serve.delete("tiny")


def test_every_replica_answers_with_the_sums_of_the_weights_on_its_node(
    cluster: LocalCluster, tiny: Path, served: ServeRun
) -> None:
    expected = _weight_sums(tiny)
    assert len(served.answers) == NODES
    assert sorted(a["node_id"] for a in served.answers.values()) == sorted(cluster.node_ids)
    for answer in served.answers.values():
        assert answer["sums"] == expected
        assert Path(answer["path"]) == cluster.path_on(answer["node_id"], MODEL_DEST)
    assert served.http_answer["sums"] == {"model.layers.1.weight": expected["model.layers.1.weight"]}


def test_every_node_holds_the_model_files(cluster: LocalCluster, tiny: Path, served: ServeRun) -> None:
    expected = _files(tiny)
    for node in cluster.node_ids:
        assert _files(cluster.path_on(node, MODEL_DEST)) == expected


def test_four_replicas_starting_together_read_the_origin_once(tiny: Path, served: ServeRun) -> None:
    assert served.stats["download_bytes"] == _repo_bytes(tiny)


# -- Train-style: 4 workers on 4 nodes -------------------------------------------


@pytest.fixture(scope="module")
def corpus(hub_root: Path) -> Path:
    return make_dataset(hub_root, "org/corpus", file_sizes=[MiB, MiB, MiB // 2], seed=12)


@pytest.fixture(scope="module")
def trained(cluster: LocalCluster, hub: HubEmulator, corpus: Path
            ) -> tuple[list[train_dataset.WorkerResult], dict[str, Any]]:
    """Run the job cold, the origin a busy one (so all four workers' calls overlap)."""
    cluster.clear_caches()  # the model's .gitattributes is the dataset's too
    hub.reset_stats()
    with _busy_origin(hub):
        results = train_dataset.run("hf://datasets/org/corpus", DATA_DEST, NODES, hub.hf_endpoint)
    return results, hub.stats()


def test_every_worker_checks_the_dataset_and_trains_on_its_own_shard(
    cluster: LocalCluster, corpus: Path,
    trained: tuple[list[train_dataset.WorkerResult], dict[str, Any]],
) -> None:
    results, _ = trained
    source = {rel: (len(data), hashlib.sha256(data).hexdigest()) for rel, data in _files(corpus).items()}
    parquet = sorted(rel for rel in source if rel.endswith(".parquet"))
    assert [r.rank for r in results] == list(range(NODES))
    assert sorted(r.node_id for r in results) == sorted(cluster.node_ids)
    for r in results:
        assert Path(r.path) == cluster.path_on(r.node_id, DATA_DEST)
        assert r.files == source
        assert r.shard == parquet[r.rank :: NODES]
        shard = np.concatenate([np.fromfile(corpus / f, dtype=np.uint8) for f in r.shard])
        assert r.shard_bytes == shard.size
        assert r.shard_mean == pytest.approx(float(shard.mean()), rel=1e-12)
    assert sorted(f for r in results for f in r.shard) == parquet


def test_four_workers_on_four_nodes_read_the_origin_once(
    corpus: Path, trained: tuple[list[train_dataset.WorkerResult], dict[str, Any]]
) -> None:
    _, stats = trained
    assert stats["download_bytes"] == _repo_bytes(corpus)


# -- Serve: a replica that starts after the fan-out ended -----------------------


def test_a_replica_started_after_the_fan_out_reads_nothing_from_the_origin(
    cluster: LocalCluster, hub: HubEmulator, hub_root: Path, serve_port: int
) -> None:
    src = make_model(hub_root, "org/later", shard_sizes=[2 * MiB], seed=13)
    url, dest = "hf://org/later", "/models/later"
    # Last in the module: these apps stay until Serve shuts down, which is quicker.
    first = serve.run(serve_model.build_app(url, dest, 1, hub.hf_endpoint), name="first",
                      route_prefix="/first")
    [early] = serve_model.answers_from_every_replica(first, 1).values()
    hub.reset_stats()  # the model is on one node now; a replica on another one starts
    later = serve.run(serve_model.build_app(url, dest, 1, hub.hf_endpoint), name="later",
                      route_prefix="/later")
    [late] = serve_model.answers_from_every_replica(later, 1).values()
    stats = hub.stats()
    assert early["node_id"] != late["node_id"]  # one GPU each
    assert _files(Path(late["path"])) == _files(src)
    assert stats["download_bytes"] == 0
