"""Find or create the actors, choose nodes, connect to Ray.

The documented detached service is the scheduler (``raydf-scheduler``) and
one peer per node that ever took part (``raydf-peer-<node id>``), all in the
``raydf`` namespace: they outlive a job so the next one (or ``raydf.get`` in a
Serve replica) finds them. Seeds belong to the scheduler (they die with it):
it keeps one started, tokenless *standby* seed, so a job does not wait for a
worker process to start, and kills each job's seed when the job ends. A seed
is given one job's token, by its caller, and never another.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raydf.cluster.handles import SchedulerHandle, SeedHandle
from raydf.cluster.peer import CALL_THREADS, SERVE_GROUP, SERVE_THREADS, PeerActor
from raydf.cluster.placement import NAMESPACE, SCHEDULER_NAME, SEED_RESOURCE, alive_nodes, on_head
from raydf.cluster.scheduler import SchedulerActor
from raydf.errors import ConfigError
from raydf.options import Request

__all__ = [
    "NAMESPACE",
    "SCHEDULER_NAME",
    "SEED_RESOURCE",
    "connect",
    "existing_peers",
    "fingerprint",
    "peer_for",
    "scheduler",
    "seed_for",
    "target_nodes",
]

_PROBE_SECONDS = 3.0  # per step of the check that a Ray cluster answers at an address
# Ray sockets on 127.0.0.1, no token file, no usage stats: safe defaults for a
# cluster raydf starts by itself (a real cluster is started by its operator).
_LOCAL_DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def connect(address: str | None = None, *, start: bool = True) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``, or a running one); else start
    one (unless ``start`` is false: then it is an error).

    An address where no Ray cluster answers fails within seconds with one
    line (ConfigError), instead of ``ray.init`` retrying for minutes.
    """
    if ray.is_initialized():
        return
    flag = "--address" if address else "RAY_ADDRESS"
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is None or target == "auto":
        recorded = _recorded_address()
        # A recorded cluster that is gone would make ray.init retry it for minutes.
        stale = recorded if recorded is not None and _why_no_gcs(recorded) else None
        if stale is None:
            try:
                ray.init(address="auto", log_to_driver=False, logging_level=logging.ERROR)
                return
            except ConnectionError:
                pass
        if not start or target == "auto":
            raise ConfigError("no Ray cluster is running here" + (
                f" (the last one, at {stale}, does not answer)" if stale else "")
                + "; pass --address HOST:PORT of the head node, or start one with "
                "`ray start --head`")
        for key, value in _LOCAL_DEFAULTS.items():
            os.environ.setdefault(key, value)
        # "local": a new cluster even where a stale one is recorded.
        ray.init(address="local", log_to_driver=False, logging_level=logging.ERROR)
        return
    why = None if target.startswith("ray://") else _why_no_gcs(target)
    if why is not None:
        raise ConfigError(
            f"no Ray cluster answers at {flag} {target}: {why}; check the head node's "
            "address and GCS port (`ray status` on the head; 6379 by default)"
            + (", or leave --address and RAY_ADDRESS unset to start a local cluster"
               if start else ""))
    try:
        ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, ValueError) as exc:
        raise ConfigError(f"no Ray cluster answers at {flag} {target}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}; "
                          "check the address, or start one with `ray start --head`") from None


def _recorded_address() -> str | None:
    """The address of the cluster last started on this machine (the file `ray start`
    writes under the Ray temp dir), if any."""
    from ray._private.utils import read_ray_address

    return read_ray_address(os.environ.get("RAY_TMPDIR")) or None


def _why_no_gcs(address: str, timeout: float = _PROBE_SECONDS) -> str | None:
    """None if a Ray GCS answers at ``host:port``, else why not (one phrase).

    One TCP connect, then one GCS call (``GetClusterId``) with a deadline:
    seconds, where ``ray.init`` retries a wrong address for minutes. A GCS
    that refuses the call (token auth) still counts as answering.
    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "expected HOST:PORT, e.g. 10.0.0.1:6379"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect ({exc.strerror or type(exc).__name__})"
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None  # the GCS speaks TLS: the TCP connect is the probe
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                        grpc.StatusCode.UNKNOWN):
                return "something listens there, but it is not a Ray GCS"
    return None


def target_nodes(selector: str = "auto") -> list[str]:
    """Node ids to deliver to.

    ``auto``: the nodes with GPUs if the cluster has any, else all alive nodes;
    ``gpu``: nodes with GPUs (an error if none); ``all``: every alive node;
    ``key=value[,key=value]``: nodes whose Ray labels match.
    """
    nodes = alive_nodes()
    gpu = [n for n in nodes if n.get("Resources", {}).get("GPU", 0) > 0]
    if selector == "auto":
        chosen = gpu or nodes
    elif selector == "gpu":
        chosen = gpu
    elif selector == "all":
        chosen = nodes
    else:
        wanted = {}
        for part in selector.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--nodes {selector!r}: expected all, gpu, auto or "
                                  "key=value[,key=value] (Ray node labels)")
            wanted[key.strip()] = value.strip()
        chosen = [n for n in nodes
                  if all(n.get("Labels", {}).get(k) == v for k, v in wanted.items())]
    if not chosen:
        raise ConfigError(f"--nodes {selector!r} matches no alive node in the cluster")
    return sorted(n["NodeID"] for n in chosen)


def scheduler() -> SchedulerHandle:
    """The cluster's scheduler actor, created on the head node on first use."""
    return SchedulerHandle(ray.remote(SchedulerActor).options(
        name=SCHEDULER_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        # Hard: a scheduler that wandered onto a worker dies with that node.
        **on_head(soft=False),
    ).remote())


def peer_for(node_id: str, actor_class: type[PeerActor] = PeerActor) -> Any:
    """The peer actor of ``node_id`` (hard node affinity), created on first use
    (as ``actor_class``: tests install a misbehaving one, see raydf.testing.faults)."""
    # Concurrency groups are a class option (``.options()`` refuses them).
    remote_class = ray.remote(concurrency_groups={SERVE_GROUP: SERVE_THREADS})  # type: ignore[call-overload]
    return remote_class(actor_class).options(
        name=f"raydf-peer-{node_id}",
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=CALL_THREADS,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(node_id)


def existing_peers() -> dict[str, Any]:
    """The peer actors already running on alive nodes (none is created)."""
    peers = {}
    for node in alive_nodes():
        node_id = str(node["NodeID"])
        with contextlib.suppress(ValueError):
            peers[node_id] = ray.get_actor(f"raydf-peer-{node_id}", namespace=NAMESPACE)
    return peers


def seed_for(sched: SchedulerHandle, request: Request, fetches: int) -> SeedHandle:
    """A seed for ``request``, with its token: the scheduler's standby seed (already
    started) or a new one.

    The token is given by a direct call (``seed.take``), never in the creation
    spec, which the GCS stores. The seed belongs to the scheduler, which kills
    it when the job ends.
    """
    try:
        return _give_request(ray.get(sched.new_seed(fetches)), request)
    except ray.exceptions.RayActorError:
        # The standby died (its node went away): the next one is new.
        return _give_request(ray.get(sched.new_seed(fetches)), request)


def _give_request(seed: SeedHandle, request: Request) -> SeedHandle:
    try:
        ray.get(seed.take(request.without_secrets(), request.backend_options.token))
    except BaseException:
        seed.kill()
        raise
    return seed


def fingerprint(request: Request) -> str:
    """What makes two requests the same job: URL, revision, endpoint, filters,
    destination, and the token (hashed), so no one shares a job they could not
    have run themselves."""
    options = request.backend_options
    token = options.token.reveal() if options.token else ""
    parts = [request.url, options.revision or "", options.endpoint or "",
             "\0".join(request.include), "\0".join(request.exclude), str(request.dest_dir),
             str(request.recursive), hashlib.sha256(token.encode()).hexdigest()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()

