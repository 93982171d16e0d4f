"""``raydf warm --auto [--top K] [--nodes SELECTOR] [--follow]``: the command's options,
checks and output (the work is :mod:`raydf.warming`)."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable

from raydf.errors import ConfigError
from raydf.terminal import Streams
from raydf.warming import TOP, Warmed, check_selector, follow, node_line, recorded, warm_one

__all__ = ["AUTO_EPILOG", "add_auto_options", "check_warm_args", "run_auto"]

AUTO_EPILOG = f"""
usage-based warming (--auto):
  raydf warm --auto --top 3 --nodes gpu
      the 3 repos this cluster's jobs asked for most (the scheduler counts each caller
      of a get or warm of a Hugging Face or ModelScope repo), each at the commit those
      jobs got, into every GPU node's cache; one line per repo
  ray job submit -- raydf warm --auto --follow --nodes gpu
      the same now, then keeps running: every GPU node that joins the cluster (e.g. the
      autoscaler adds it) gets them from the peers that hold them before any job asks,
      at no origin cost; `ray job stop` (SIGTERM, exit 143) or Ctrl-C (130) ends it
  tokens are never stored: a private or gated repo is warmed only when this call has a
  token for its hub (--hf-token / --ms-token, or HF_TOKEN / MODELSCOPE_API_TOKEN), on
  every call; without one it is skipped with a line saying so, and the exit status is 3
  nothing recorded yet: "nothing to warm", exit 0 (with --follow it keeps watching);
  --top defaults to {TOP}; the counts live in the scheduler's memory (lost if it restarts)
"""


def add_auto_options(warm: argparse.ArgumentParser) -> None:
    """``--auto``, ``--top`` and ``--follow`` on ``raydf warm``'s parser."""
    warm.add_argument("--auto", action="store_true",
                      help="instead of a URL: the repos this cluster's jobs asked for most, "
                      "each at the commit they got (see below)")
    warm.add_argument("--top", type=int, metavar="K", default=None,
                      help=f"with --auto: how many repos (default {TOP}), e.g. --top 5")
    warm.add_argument("--follow", action="store_true",
                      help="with --auto: keep running and warm every node that joins the "
                      "cluster (and matches --nodes) from its peers; private repos need "
                      "--hf-token/--ms-token on this call, tokens are never stored")


def check_warm_args(args: argparse.Namespace) -> None:
    """Refuse (exit 2) the combinations that mean nothing."""
    if not args.auto:
        if args.follow or args.top is not None:
            raise ConfigError(f"{'--follow' if args.follow else '--top'} goes with --auto "
                              "(raydf warm --auto --follow); a URL is warmed once")
        if args.url is None:
            raise ConfigError("raydf warm needs a URL to warm, or --auto for the repos this "
                              "cluster's jobs asked for most")
        return
    if args.url is not None:
        raise ConfigError(f"--auto warms the repos the cluster recorded; drop the URL "
                          f"{args.url!r}, or drop --auto to warm that URL")
    pinned = [f"--{name.replace('_', '-')}" for name in (
        "include", "exclude", "hf_revision", "hf_endpoint", "ms_revision", "ms_endpoint")
        if getattr(args, name)]
    if pinned:
        raise ConfigError(f"--auto warms each repo with the filters, endpoint and commit its "
                          f"jobs used; drop {pinned[0]} (only --hf-token/--ms-token apply)")
    if args.top is not None and args.top < 1:
        raise ConfigError(f"--top {args.top}: warm at least one repo (--top 1 or more)")
    if args.follow and args.json:
        raise ConfigError("--json prints one object when the command ends, and --follow "
                          "does not end; drop --json (one line per node joining)")
    check_selector(args.nodes)


def run_auto(args: argparse.Namespace, streams: Streams, connected: Callable[[], None]) -> int:
    """``raydf warm --auto``; ``connected`` runs once Ray is (the SIGTERM handler)."""
    from raydf.cluster.service import connect, target_nodes
    from raydf.warming import matching_nodes

    connect(args.address, start=False)
    connected()
    top = args.top or TOP
    tokens = {"hf_token": args.hf_token, "ms_token": args.ms_token}
    nodes = matching_nodes(args.nodes) if args.follow else set(target_nodes(args.nodes))
    entries = recorded(top)
    if not entries:
        print("raydf: nothing to warm: no job on this cluster has asked for a Hugging Face "
              "or ModelScope repo yet (the scheduler records each get and warm)",
              file=streams.err)
    if entries and not nodes:
        print(f"raydf: no alive node matches --nodes {args.nodes} yet", file=streams.err)
    progress = not (args.no_progress or args.json)
    results: list[Warmed] = []
    for usage in entries if nodes else ():
        result = warm_one(usage, sorted(nodes), tokens, progress=progress,
                          topology_label=args.topology_label)
        results.append(result)
        prefix = "raydf: " if result.error is None else "raydf: error: "
        print(prefix + result.line(), file=streams.err, flush=True)
    code = next((r.exit_code for r in results if r.exit_code), 0)
    if args.json:
        print(json.dumps({"ok": code == 0, "exit_code": code, "nodes": sorted(nodes),
                          "repos": [r.to_dict() for r in results]}, sort_keys=True),
              file=streams.out)
    if not args.follow:
        return code
    print(f"raydf: following: each node that joins and matches --nodes {args.nodes} gets the "
          f"top {top} repos from its peers (Ctrl-C or SIGTERM stops)", file=streams.err,
          flush=True)
    follow(threading.Event(), top, selector=args.nodes, tokens=tokens, known=nodes,
           topology_label=args.topology_label,
           on_node=lambda node, done: print("raydf: " + node_line(node, done), file=streams.err,
                                            flush=True))
    return code  # follow returns only when its event is set, which nothing here does
