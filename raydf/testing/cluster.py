"""A real multi-node Ray cluster on one machine, for tests, benchmarks and the demo.

``LocalCluster(4)`` starts a CPU head (where the seed runs) and four simulated
GPU nodes (``num_gpus=1``), each a real raylet with its own object store, so
pieces really cross object stores. Each worker node gets its own
``RAYDF_NODE_ROOT`` (and so its own destination tree and cache), which is how
four "nodes" on one disk do not write the same files. All Ray sockets are on
127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from raydf.options import TOPOLOGY_LABEL

__all__ = ["CpuMeter", "LocalCluster", "burn_cpu", "seed_actors", "wait_until"]

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


class CpuMeter:
    """The CPU seconds a cluster's processes spend between enter and exit.

    Raylets do not account for the workers they reap, so a thread samples
    every process every ``every`` seconds: one that exits (a seed killed at the
    end of its job) keeps what it had used at its last sample, and one that
    starts counts from zero. What is lost is at most one interval of each
    process that exits. ``samples`` counts the samples taken.
    """

    def __init__(self, cluster: LocalCluster, every: float = 0.25) -> None:
        self._cluster = cluster
        self._every = every
        self._start: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raydf-cpu-meter", daemon=True)
        self.samples = 0

    def __enter__(self) -> CpuMeter:
        self._start = self._cluster.process_cpu()
        self._last = dict(self._start)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        self._last.update(self._cluster.process_cpu())
        self.samples += 1

    @property
    def seconds(self) -> float:
        return sum(used - self._start.get(key, 0.0) for key, used in self._last.items())


def burn_cpu(seconds: float) -> float:
    """Spend ``seconds`` of this process's CPU; return what it used (a task for
    tests of CPU accounting)."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return time.process_time() - start


def wait_until(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll ``check`` until it returns something truthy and return that.

    For tests that must act in the middle of a fan-out: they wait for a stated
    condition (a node holds pieces, a partial file exists), never for a time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def seed_actors() -> dict[str, bool]:
    """The seed actors alive in the connected cluster: name -> serving a job
    (False for the scheduler's standby, which has no request and no token)."""
    import ray

    from raydf.cluster.placement import NAMESPACE, SEED_PREFIX

    seeds = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == NAMESPACE and actor["name"].startswith(SEED_PREFIX):
            handle = ray.get_actor(actor["name"], namespace=NAMESPACE)
            try:
                seeds[actor["name"]] = not ray.get(handle.stats.remote())["standby"]
            except ray.exceptions.RayActorError:
                continue  # died between the listing and the call
    return seeds


class LocalCluster:
    """``with LocalCluster(4) as c: raydf.fanout(..., address=c.address)``.

    ``node_root(node_id)`` is where a node's files live; ``path_on(node_id,
    dest)`` is where ``dest`` landed on that node.
    """

    def __init__(
        self,
        num_nodes: int = 4,
        *,
        root: Path | None = None,
        object_store_memory: int = 256 * 2**20,
        head_object_store_memory: int | None = None,
        connect: bool = True,
        metrics_interval_ms: int | None = None,
        zones: Sequence[str] = (),
        cache_root: Path | None = None,
        seed_on_node: bool = False,
    ) -> None:
        """``metrics_interval_ms``: how often workers export metrics to their node
        (Ray's default when None; tests that scrape them want 1000; every
        simulated node's agent then costs the shared CPUs more). ``zones``: node
        *i* is labelled in zone ``zones[i % len(zones)]`` (``TOPOLOGY_LABEL``),
        the head (where the seed runs) in ``zones[0]``. ``cache_root``: each node's
        configured cache (``RAYDF_CACHE``) is ``cache_root/<node>`` instead of
        ``<node root>/cache``, e.g. on another file system than ``root``.
        ``seed_on_node``: the ``raydf_seed`` resource is on node 0 instead of the
        head, as on a one-machine cluster, where the seed shares the node's
        object store with its peer."""
        self.num_nodes = num_nodes
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="raydf-")
        self.root = Path(root) if root is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.object_store_memory = object_store_memory
        self.head_object_store_memory = head_object_store_memory or object_store_memory
        self._connect = connect
        self._metrics_interval_ms = metrics_interval_ms
        self.zones = list(zones)
        self.cache_root = Path(cache_root) if cache_root is not None else None
        self.seed_on_node = seed_on_node
        self._cluster: Any = None
        self.node_ids: list[str] = []
        self._roots: dict[str, Path] = {}

    def __repr__(self) -> str:
        return f"<LocalCluster {self.num_nodes} nodes at {self.address or '-'}>"

    @property
    def address(self) -> str | None:
        return self._cluster.address if self._cluster is not None else None

    def start(self) -> LocalCluster:
        os.environ.update(RAY_ENV)
        import ray
        from ray.cluster_utils import Cluster

        from raydf.cluster.placement import SEED_RESOURCE

        head_root = self.root / "head"
        head_args: dict[str, Any] = {
            "num_cpus": 2,
            "num_gpus": 0,
            "object_store_memory": self.head_object_store_memory,
            "resources": {} if self.seed_on_node else {SEED_RESOURCE: 1},
            "env_vars": self._node_env("head", head_root),
        }
        if self.zones:
            head_args["labels"] = {TOPOLOGY_LABEL: self.zones[0]}
        if self._metrics_interval_ms is not None:
            head_args["_system_config"] = {"metrics_report_interval_ms": self._metrics_interval_ms}
        self._cluster = Cluster(initialize_head=True, head_node_args=head_args)
        self._roots["head"] = head_root
        for i in range(self.num_nodes):
            self._start_node(i, {})
        self._cluster.wait_for_nodes()
        if self._connect:
            ray.init(address=self._cluster.address, log_to_driver=False, logging_level=logging.ERROR)
        return self

    def node_root(self, node_id: str) -> Path:
        return self._roots[node_id]

    def cache_of(self, node_id: str) -> Path:
        """The node's configured cache (``RAYDF_CACHE`` or ``<node root>/cache``)."""
        root = self._roots[node_id]
        return self.cache_root / root.name if self.cache_root is not None else root / "cache"

    def _node_env(self, name: str, node_root: Path) -> dict[str, str]:
        env = {"RAYDF_NODE_ROOT": str(node_root)}
        if self.cache_root is not None:
            env["RAYDF_CACHE"] = str(self.cache_root / name)
        return env

    def path_on(self, node_id: str, dest: str | os.PathLike[str]) -> Path:
        """Where ``dest`` (an absolute path as given to raydf) is on ``node_id``."""
        return self._roots[node_id] / Path(dest).absolute().relative_to("/")

    def clear_caches(self) -> None:
        """Empty every node's raydf cache, as if the nodes were new."""
        for node_id, root in self._roots.items():
            # The configured cache, and the one on the node root's file system
            # when that is another (raydf.cache_roots).
            for blob in [*(self.cache_of(node_id) / "blobs").glob("*"),
                         *(root / ".raydf-cache" / "blobs").glob("*")]:
                blob.unlink()

    def cpu_meter(self, every: float = 0.25) -> CpuMeter:
        """A meter of the CPU this cluster's processes spend while it is entered."""
        return CpuMeter(self, every)

    def process_cpu(self) -> dict[tuple[int, float], float]:
        """CPU seconds (user + system) used so far by each process of this cluster,
        keyed by (pid, start time): each node's Ray processes (GCS, raylet,
        agents) and their descendants (workers, actors)."""
        import psutil

        assert self._cluster is not None, "the cluster is not started"
        roots = [proc.pid for node in (self._cluster.head_node, *self._cluster.worker_nodes)
                 for _, proc in node.live_processes()]
        used: dict[tuple[int, float], float] = {}
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in (root, *root.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        used[(proc.pid, proc.create_time())] = times.user + times.system
        return used

    def add_node(self, labels: dict[str, str] | None = None) -> str:
        """Start one more simulated GPU node, as :meth:`start` makes them (as an
        autoscaler would add it); return its node id once the cluster sees it alive.
        Its root is ``node<i>`` (see :meth:`node_root`), its zone as ``zones``
        says for node *i*; ``labels`` are added to its own."""
        assert self._cluster is not None, "the cluster is not started"
        node_id = self._start_node(len(self.node_ids), labels or {})
        self.num_nodes += 1
        self._cluster.wait_for_nodes()
        return node_id

    def _start_node(self, i: int, labels: dict[str, str]) -> str:
        from raydf.cluster.placement import SEED_RESOURCE

        node_root = self.root / f"node{i}"
        zone = {TOPOLOGY_LABEL: self.zones[i % len(self.zones)]} if self.zones else {}
        node = self._cluster.add_node(
            num_cpus=1,
            num_gpus=1,
            object_store_memory=self.object_store_memory,
            env_vars=self._node_env(node_root.name, node_root),
            labels={"raydf/sim-node": str(i), **zone, **labels},
            resources={SEED_RESOURCE: 1} if self.seed_on_node and i == 0 else {},
        )
        self._roots[node.node_id] = node_root
        self.node_ids.append(node.node_id)
        return str(node.node_id)

    def remove_node(self, node_id: str) -> None:
        """Kill a simulated node (its raylet and workers), as a crash would."""
        for node in self._cluster.worker_nodes:
            if node.node_id == node_id:
                self._cluster.remove_node(node, allow_graceful=False)
                return
        raise KeyError(node_id)

    def shutdown(self) -> None:
        import ray

        if self._connect and ray.is_initialized():
            ray.shutdown()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
