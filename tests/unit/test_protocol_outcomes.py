"""The typed protocol without Ray: messages, and how the scheduler folds each
pull outcome into a job (raydf.cluster.driving), with fake handles."""

from __future__ import annotations

import ast
import dataclasses
import pickle
from pathlib import Path

import pytest

from raydf.backends.base import RemoteFile
from raydf.blame import BAD_BYTES_LIMIT, Fault
from raydf.cluster import driving
from raydf.cluster.job import Job
from raydf.cluster.protocol import (
    FileCorrupt,
    JobSpec,
    Pull,
    PullBatch,
    PullFailed,
    Received,
    SourceLost,
    Stale,
)
from raydf.cluster.spec import TaskSpec
from raydf.plan import RepoPlan
from raydf.policy import Assignment, Limits, PlanState

MiB = 2**20


class FakeHandle:
    """Stands in for a PeerHandle or SeedHandle: the folding never calls it but kill()."""

    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True


def make_job(pieces: int = 2, nodes: tuple[str, ...] = ("a", "b")) -> Job:
    f = RemoteFile("w.bin", "w.bin", pieces * MiB, sha256="0" * 64)
    task = TaskSpec("t", f, ("w.bin",), MiB)
    plan = RepoPlan("hf://org/m", "c" * 40, (f,))
    job = Job("j", plan, {"t": task}, "seed-j", FakeHandle(), {n: FakeHandle() for n in nodes},
              "/models/m", Limits(), None)
    job.state = PlanState({"t": pieces}, [job.seed_id], job.limits)
    for n in nodes:
        job.state.add_peer(n, ["t"])
    return job


def start(job: Job, peer: str, index: int, source: str) -> Assignment:
    state = job.state
    assert state is not None
    if source != job.seed_id:
        state.add_holding(source, ("t", index))
    else:
        state.add_holding(job.seed_id, ("t", index))
    a = Assignment(peer, ("t", index), source)
    state.start(a)
    return a


def test_the_protocol_module_imports_no_ray() -> None:
    tree = ast.parse((Path(driving.__file__).parent / "protocol.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}


def test_messages_are_frozen_and_pickle() -> None:
    batch = PullBatch("j", (Pull("t", 0, None, "node-a"),), {"node-a": "a handle"})
    assert pickle.loads(pickle.dumps(batch)) == batch
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.job_id = "other"  # type: ignore[misc]
    spec = JobSpec("j", RepoPlan("hf://org/m", "c" * 40), (), "/models/m")
    assert "token" not in repr(spec).lower()


def test_received_pieces_complete_the_node_and_count_its_bytes() -> None:
    job = make_job()
    for index in range(2):
        a = start(job, "a", index, job.seed_id)
        driving._pulled(job, a, Received(MiB, 0.1, 123, file_done=index == 1))
    assert job.node_event("a").is_set() and "a" not in job.node_error
    assert job.node_bytes["a"] == 2 * MiB and job.node_received["a"] == 2 * MiB
    assert job.crc[("t", 0)] == 123


def test_a_stale_piece_is_needed_again() -> None:
    job = make_job()
    a = start(job, "a", 0, job.seed_id)
    driving._pulled(job, a, Stale())
    assert a not in job.state.in_flight()  # type: ignore[union-attr]
    job.state.start(a)  # type: ignore[union-attr]  # it may be assigned again


def test_bad_bytes_from_one_sender_get_it_distrusted_not_the_receiver_failed() -> None:
    job = make_job(pieces=BAD_BYTES_LIMIT + 1, nodes=("a", "b"))
    for index in range(BAD_BYTES_LIMIT):
        a = start(job, "a", index, "b")
        driving._pulled(job, a, PullFailed(Fault.BAD_BYTES, "piece failed its CRC-32"))
    assert "a" not in job.node_error
    assert "b" not in job.state.holders(("t", BAD_BYTES_LIMIT - 1))  # type: ignore[union-attr]


def test_a_lost_source_fails_that_node_and_the_seed_when_it_is_the_seed() -> None:
    job = make_job()
    a = start(job, "a", 0, "b")
    driving._pulled(job, a, SourceLost("ActorDiedError"))
    assert "node lost" in job.node_error["b"] and "a" not in job.node_error
    seed = job.seed
    assert isinstance(seed, FakeHandle)
    a = start(job, "a", 1, job.seed_id)
    driving._pulled(job, a, SourceLost("OwnerDiedError"))
    assert seed.killed and job.seed is None and job.seed_losses == 1


def test_a_corrupt_file_fails_the_receiver_with_exit_code_4() -> None:
    job = make_job()
    a = start(job, "a", 0, job.seed_id)
    driving._pulled(job, a, FileCorrupt("w.bin failed its sha256"))
    assert job.node_code["a"] == 4 and "sha256" in job.node_error["a"]
