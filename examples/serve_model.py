"""A Ray Serve app whose replicas get their model with ``raydf.get``: the hub is read once.

Each replica, in ``__init__``, calls ``raydf.get(url, dest)``: replicas that
start together share one fan-out (the hub read once, pieces passed from node
to node through the object store), and a node whose cache has the files gets
them at once. Then the replica maps the safetensors shards with numpy
(:mod:`safetensors_numpy`, no torch).
A request is answered with something computed from the weights: the sum of
every tensor (or of one, ``?tensor=NAME``), with the replica and its node.

One GPU per replica, so ``--replicas N`` on N GPU nodes puts one replica on
each node::

    python examples/serve_model.py --url hf://org/tiny --replicas 4 \\
        --hf-endpoint http://127.0.0.1:PORT --local-nodes 4
    python examples/serve_model.py --url hf://Qwen/Qwen2.5-0.5B --replicas 8 --address auto

It prints one JSON line per replica (``replica``, ``node_id``, ``path``,
``sums``) and exits; on a real cluster the app keeps serving HTTP on the head
node until ``serve shutdown``. Importable: :func:`build_app` makes the app,
:func:`answers_from_every_replica` collects an answer from each replica.
See ``examples/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
from cluster_args import add_cluster_args, cluster_from_args
from ray import serve
from ray.serve.handle import DeploymentHandle
from safetensors_numpy import load_safetensors_folder
from starlette.requests import Request
from starlette.responses import JSONResponse

import raydf

__all__ = ["ModelServer", "answers_from_every_replica", "build_app", "main", "tensor_sum"]


def tensor_sum(array: np.ndarray) -> int | float:
    """The exact sum of an integer or boolean tensor, the float64 sum of a float one."""
    if array.dtype.kind == "f":
        return float(array.sum(dtype=np.float64))
    return int(array.sum(dtype=np.uint64 if array.dtype.kind in "ub" else np.int64))


class ModelServer:
    """Gets the model onto this node with raydf, maps its weights, answers with their sums.

    A plain class: :func:`build_app` makes it a deployment.
    """

    def __init__(self, url: str, dest: str, hf_endpoint: str | None) -> None:
        self.path = raydf.get(url, dest, hf_endpoint=hf_endpoint)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.weights = load_safetensors_folder(self.path)
        if not self.weights:
            raise ValueError(f"{url} has no .safetensors weights at its top level ({self.path})")

    def sums(self, tensor: str | None = None) -> dict[str, Any]:
        """``{"replica", "node_id", "path", "sums": {name: sum}}`` for one tensor or all."""
        names = [tensor] if tensor is not None else sorted(self.weights)
        missing = [n for n in names if n not in self.weights]
        if missing:
            raise KeyError(f"no tensor {missing[0]!r}; this model has {sorted(self.weights)}")
        return {"replica": self.replica, "node_id": self.node_id, "path": self.path,
                "sums": {n: tensor_sum(self.weights[n]) for n in names}}

    async def __call__(self, request: Request) -> JSONResponse:
        """HTTP: ``GET /`` sums every tensor, ``GET /?tensor=NAME`` one (404 if unknown)."""
        try:
            return JSONResponse(self.sums(request.query_params.get("tensor")))
        except KeyError as exc:
            return JSONResponse({"error": exc.args[0]}, status_code=404)


def build_app(url: str, dest: str, replicas: int, hf_endpoint: str | None = None,
              *, gpus_per_replica: float = 1) -> serve.Application:
    """The app: ``replicas`` replicas of :class:`ModelServer`, each on ``gpus_per_replica`` GPUs.

    ``hf_endpoint`` (else the replicas' ``HF_ENDPOINT``, else the public hub)
    is a bind argument, so it is stored with the app: pass tokens through the
    nodes' environment (``HF_TOKEN``), never here.
    """
    deployment = serve.deployment(num_replicas=replicas,
                                  ray_actor_options={"num_gpus": gpus_per_replica})(ModelServer)
    return deployment.bind(url, dest, hf_endpoint)


def answers_from_every_replica(handle: DeploymentHandle, replicas: int,
                               rounds: int = 20) -> dict[str, dict[str, Any]]:
    """One :meth:`ModelServer.sums` answer per replica, by replica id.

    The router picks a replica per request, so this sends rounds of
    concurrent requests (which it spreads by queue length) until every
    replica has answered; ``RuntimeError`` if some never does.
    """
    answers: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for response in [handle.sums.remote() for _ in range(4 * replicas)]:
            answer = response.result()
            answers.setdefault(answer["replica"], answer)
        if len(answers) >= replicas:
            return answers
    raise RuntimeError(f"{len(answers)} of {replicas} replicas answered in {rounds} rounds")


def main(argv: Sequence[str] | None = None) -> int:
    """Deploy the app, print one answer per replica as JSON lines."""
    parser = argparse.ArgumentParser(description="Serve a model that raydf puts on every node.")
    parser.add_argument("--url", required=True, help="hf://org/model or modelscope://org/model")
    parser.add_argument("--dest", help="where the model goes on every node (default /models/<name>)")
    parser.add_argument("--replicas", type=int, default=1, help="one per GPU node (default 1)")
    parser.add_argument("--gpus-per-replica", type=float, default=1,
                        help="0 to run on a cluster without GPUs (default 1)")
    parser.add_argument("--hf-endpoint", help="HF endpoint, e.g. the hub emulator's HF_ENDPOINT")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address on the head node")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port on the head node")
    add_cluster_args(parser)
    args = parser.parse_args(argv)
    dest = args.dest or f"/models/{args.url.rstrip('/').rsplit('/', 1)[-1]}"
    with cluster_from_args(args) as local:
        serve.start(proxy_location="HeadOnly", http_options={"host": args.host, "port": args.port})
        app = build_app(args.url, dest, args.replicas, args.hf_endpoint,
                        gpus_per_replica=args.gpus_per_replica)
        handle = serve.run(app, name="raydf-model")
        for answer in answers_from_every_replica(handle, args.replicas).values():
            print(json.dumps(answer), flush=True)
        if local:  # the simulated cluster ends with this script
            serve.shutdown()
        else:
            print(f"serving on http://{args.host}:{args.port}/ until `serve shutdown`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
