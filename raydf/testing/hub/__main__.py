"""Command line of the hub emulator: ``python -m raydf.testing.hub serve|make-model|make-dataset``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from raydf.testing.hub import HubEmulator, make_dataset, make_model

_EPILOG = """\
examples:
  # a 1 GiB model, then a hub serving it with a token for alice
  python -m raydf.testing.hub make-model --root /tmp/hub org/llm --shards 4 --shard-size 268435456
  python -m raydf.testing.hub serve --root /tmp/hub --token hf_secret=alice --approved alice
  HF_ENDPOINT=http://127.0.0.1:PORT hf download org/llm

  # fixed ports, origin capped at 20 MB/s in total and 5 MB/s per stream
  python -m raydf.testing.hub serve --root /tmp/hub --hf-port 8900 --ms-port 8901 \\
      --cdn-port 8902 --bandwidth 20e6 --per-connection 5e6

serve prints HF_ENDPOINT=..., MODELSCOPE_ENDPOINT=... and CDN_ENDPOINT=...,
one a line, then runs until SIGINT or SIGTERM. Repo layout, access rules and
knobs: see the docstring of raydf.testing.hub (pydoc raydf.testing.hub).
"""


def _token(value: str) -> tuple[str, str]:
    token, sep, user = value.partition("=")
    if not sep or not token or not user:
        raise argparse.ArgumentTypeError(f"want TOKEN=USER, got {value!r}")
    return token, user


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raydf.testing.hub",
        description="A local Hugging Face + ModelScope hub emulator over a folder of repos.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve ROOT until SIGINT/SIGTERM", epilog=_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--root", type=Path, required=True, help="folder holding models/, datasets/, spaces/")
    serve.add_argument("--host", default="127.0.0.1", help="address of the HF and ModelScope listeners")
    serve.add_argument("--hf-port", type=int, default=0, help="0 picks a free port (default)")
    serve.add_argument("--ms-port", type=int, default=0)
    serve.add_argument("--cdn-host", default="127.0.0.2", help="a different address than --host")
    serve.add_argument("--cdn-port", type=int, default=0)
    serve.add_argument("--token", type=_token, action="append", default=[], metavar="TOKEN=USER")
    serve.add_argument("--approved", action="append", default=[], metavar="USER",
                       help="a user let into gated repos (repeatable)")
    serve.add_argument("--bandwidth", type=float, help="aggregate cap on file content, bytes/s")
    serve.add_argument("--per-connection", type=float, help="cap per file-content stream, bytes/s")
    serve.add_argument("--tree-page-size", type=int, default=1000)
    serve.add_argument("--ms-files-limit", type=int, default=3000)
    for name, what in (("make-model", "safetensors shards"), ("make-dataset", "parquet-named files")):
        make = sub.add_parser(name, help=f"write a synthetic repo of {what} under ROOT")
        make.add_argument("--root", type=Path, required=True)
        make.add_argument("repo_id", help="owner/name (owner/name@label for another revision's folder)")
        make.add_argument("--shards", type=int, default=4)
        make.add_argument("--shard-size", type=int, default=64 * 2**20, help="bytes per shard")
        make.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command != "serve":
        make = make_model if args.command == "make-model" else make_dataset
        folder = make(args.root, args.repo_id, [args.shard_size] * args.shards, seed=args.seed)
        print(folder)
        return 0
    if not args.root.is_dir():
        # A typo would otherwise serve an empty hub, and every repo would be "not found".
        print(f"raydf hub serve: error: --root {args.root} is not a folder; pass the folder "
              "holding models/, datasets/ and spaces/ (make one with make-model)", file=sys.stderr)
        return 2
    hub = HubEmulator(
        args.root, tokens=dict(args.token), approved=args.approved, host=args.host,
        hf_port=args.hf_port, ms_port=args.ms_port, cdn_host=args.cdn_host, cdn_port=args.cdn_port,
        tree_page_size=args.tree_page_size, ms_files_limit=args.ms_files_limit,
        bandwidth=args.bandwidth, per_connection=args.per_connection,
    )
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    with hub:
        print(f"HF_ENDPOINT={hub.hf_endpoint}")
        print(f"MODELSCOPE_ENDPOINT={hub.ms_endpoint}")
        print(f"CDN_ENDPOINT={hub.cdn_endpoint}", flush=True)
        while not stop.wait(0.5):  # a timed wait lets signal handlers run promptly
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
