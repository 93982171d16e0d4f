"""The ``raydf`` command: ``get`` (like ``dfget``), ``hub``, and friends."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from raydf.errors import (
    ConfigError,
    HubError,
    IntegrityError,
    InvalidURL,
    RaydfError,
    StorageError,
    UnsafeListing,
)

__all__ = ["main"]

EXIT_CODES = """exit status:
  0    every target node has every file, verified
  1    the fan-out did not complete on every target node (the report says which)
  2    bad input: malformed URL, bad or conflicting options
  3    the hub refused or failed: not found, no access, rate limited, unavailable
  4    integrity: a file or piece did not match its digest, a hostile listing
  5    storage: the destination or cache cannot be written
  130  interrupted (Ctrl-C); nothing partial is left at a final path
"""

GET_EPILOG = """examples:
  raydf get hf://Qwen/Qwen2.5-0.5B -O /models/qwen -r
      every file of a model repo into /models/qwen on every GPU node
  raydf get hf://datasets/org/data/train -O /data/train -r --include '*.parquet'
      one folder of a dataset, parquet files only
  raydf get hf://org/model/config.json -O /tmp/config.json
      one file (without -r, -O names the file)
  raydf get modelscope://Qwen/Qwen2.5-0.5B -O /models/qwen -r --ms-revision v1.0
      a ModelScope model at a tag
  raydf get hf://org/private -O /models/p -r --hf-token "$HF_TOKEN" --json
      a private repo; prints one JSON report on stdout
  raydf get hf://org/model -O /models/m -r --exclude '*.bin' --exclude 'original/'
      skip files (fnmatch; '*' crosses '/'; 'dir/' means everything under dir)
  raydf get https://example.com/files/model.gguf -O /models/model.gguf
      any web file, with parallel ranged requests
  raydf get s3://bucket/models/llama/ -O /models/llama -r
      an object-store prefix (also gs://, abs://, hdfs://; S3-compatible stores
      through AWS_ENDPOINT_URL)
  raydf get hf://org/model -O /tmp/m -r --local
      download on this machine only, without Ray
  raydf get hf://org/model -O ~/.cache/huggingface/hub -r --layout hf-cache
      into the Hugging Face cache layout: transformers loads it with HF_HUB_OFFLINE=1

environment (flags win): HF_TOKEN, HF_ENDPOINT, MODELSCOPE_API_TOKEN,
  MODELSCOPE_ENDPOINT, RAYDF_CACHE (node-local cache folder); object stores:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL,
  GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY

""" + EXIT_CODES


def _exit_code(err: RaydfError) -> int:
    if isinstance(err, (InvalidURL, ConfigError)):
        return 2
    if isinstance(err, HubError):
        return 3
    if isinstance(err, (IntegrityError, UnsafeListing)):
        return 4
    if isinstance(err, StorageError):
        return 5
    return 1  # FanoutError, and any other failure to deliver


def _add_get(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "get",
        help="fetch a repo, folder or file onto every target node",
        description="Fetch URL onto every target node of the Ray cluster: the origin is read "
        "once, nodes share pieces with each other.",
        epilog=GET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL",
                   help="hf://[models/|datasets/|spaces/]owner/repo[/path], "
                   "modelscope://[models/|datasets/]owner/repo[/path], http(s)://..., "
                   "file:///..., s3://bucket/key, gs://..., abs://..., hdfs://...")
    p.add_argument("-O", "--output", required=True, metavar="OUT",
                   help="destination: a folder with -r, else the file's path (e.g. -O /models/m)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="fetch everything under URL into the folder OUT (e.g. a whole repo)")
    p.add_argument("--include", action="append", metavar="GLOB", default=[],
                   help="only files matching GLOB; repeatable (e.g. --include '*.safetensors')")
    p.add_argument("--exclude", action="append", metavar="GLOB", default=[],
                   help="skip files matching GLOB; repeatable (e.g. --exclude '*.bin')")
    for hub, name, env_tok, env_ep, rev in (
        ("hf", "Hugging Face", "HF_TOKEN", "HF_ENDPOINT", "main"),
        ("ms", "ModelScope", "MODELSCOPE_API_TOKEN", "MODELSCOPE_ENDPOINT", "master"),
    ):
        p.add_argument(f"--{hub}-token", metavar="T",
                       help=f"{name} token (default ${env_tok}); sent to the hub only, "
                       f"e.g. --{hub}-token \"${env_tok}\"")
        p.add_argument(f"--{hub}-revision", metavar="R",
                       help=f"{name} branch, tag or commit (default {rev}), e.g. --{hub}-revision v1.0")
        p.add_argument(f"--{hub}-endpoint", metavar="URL",
                       help=f"{name} endpoint (default ${env_ep} or the public hub), "
                       f"e.g. --{hub}-endpoint http://127.0.0.1:8080")
    p.add_argument("--layout", choices=("files", "hf-cache"), default="files",
                   help="files: the repo's files under OUT (default); hf-cache: OUT is a "
                   "Hugging Face cache (like HF_HUB_CACHE) that huggingface_hub and "
                   "transformers read offline, e.g. --layout hf-cache -O ~/.cache/huggingface/hub")
    p.add_argument("--json", action="store_true",
                   help="print one JSON report on stdout (and nothing else there)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to use (default $RAY_ADDRESS, a running cluster, else a "
                   "new local one), e.g. --address 10.0.0.1:6379")
    p.add_argument("--nodes", metavar="SELECTOR", default="auto",
                   help="target nodes: auto (GPU nodes if any, else all), gpu, all, or Ray "
                   "labels key=value[,key=value], e.g. --nodes gpu")
    p.add_argument("--local", action="store_true",
                   help="download on this machine only, straight from the origin, without Ray")


def _add_hub(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "hub",
        help="run the local Hugging Face / ModelScope emulator (for tests and rehearsals)",
        description="Local hub emulator; `raydf hub serve --help` for its options.",
        add_help=False,
    )
    p.add_argument("hub_args", nargs=argparse.REMAINDER, help="see `raydf hub --help`")


def _add_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="the main job on the embedded default: hub emulator + simulated cluster",
        description="Start the local hub emulator and a simulated multi-node Ray cluster, and "
        "compare every node downloading on its own with raydf. `raydf demo --help` for options.",
        add_help=False,
    )
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help="see `raydf demo --help`")


def _add_admin(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = sub.add_parser(
        "status", help="jobs, per-node progress and cache use of the cluster",
        epilog="example:\n  raydf status --address 10.0.0.1:6379\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--address", metavar="ADDR",
                        help="Ray cluster (default $RAY_ADDRESS or the running one)")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")

    warm = sub.add_parser(
        "warm", help="pre-seed every target node's cache, so later gets are instant",
        epilog="example:\n  raydf warm hf://Qwen/Qwen2.5-0.5B --nodes gpu\n      every GPU "
        "node caches the model; a later `raydf.get` in a replica places it at once\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    warm.add_argument("url", metavar="URL", help="what to cache, as for `raydf get -r`")
    warm.add_argument("--include", action="append", metavar="GLOB", default=[],
                      help="only files matching GLOB, e.g. --include '*.safetensors'")
    warm.add_argument("--exclude", action="append", metavar="GLOB", default=[],
                      help="skip files matching GLOB, e.g. --exclude '*.bin'")
    for hub in ("hf", "ms"):
        for what, example in (("token", '"$TOKEN"'), ("revision", "v1.0"),
                              ("endpoint", "http://127.0.0.1:8080")):
            warm.add_argument(f"--{hub}-{what}", metavar=what[0].upper(),
                              help=f"as for `raydf get`, e.g. --{hub}-{what} {example}")
    warm.add_argument("--address", metavar="ADDR", help="Ray cluster, e.g. --address auto")
    warm.add_argument("--nodes", metavar="SELECTOR", default="auto",
                      help="target nodes: auto, gpu, all or key=value, e.g. --nodes all")
    warm.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    warm.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    cache = sub.add_parser(
        "cache", help="list, remove or garbage-collect the node-local caches",
        epilog="examples:\n  raydf cache ls            every node's cached files\n"
        "  raydf cache rm sha256-<hex>   drop one file from every node's cache\n"
        "  raydf cache gc            drop cached files no destination uses, and "
        "abandoned partial files\n  raydf cache ls --local    this machine's cache, "
        "without Ray\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cache.add_argument("action", choices=("ls", "rm", "gc"), help="what to do")
    cache.add_argument("key", nargs="?", help="for rm: the key `raydf cache ls` shows")
    cache.add_argument("--local", action="store_true", help="this machine's cache, no Ray")
    cache.add_argument("--address", metavar="ADDR", help="Ray cluster, e.g. --address auto")
    cache.add_argument("--json", action="store_true", help="one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydf",
        description="Distribute Hugging Face / ModelScope repos to every node of a Ray "
        "cluster, peer to peer: the hub is read once.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_get(sub)
    _add_admin(sub)
    _add_hub(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raydf`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `hub` and `demo` parse their own arguments (their --help included).
    if argv and argv[0] == "hub":
        from raydf.testing.hub.__main__ import main as hub_main

        return hub_main(argv[1:])
    if argv and argv[0] == "demo":
        from raydf.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "get":
            return _get(args)
        if args.command == "warm":
            return _warm(args)
        if args.command in ("status", "cache"):
            return _admin(args)
    except RaydfError as err:
        print(f"raydf: error: {err}", file=sys.stderr)
        return _exit_code(err)
    except KeyboardInterrupt:
        print("raydf: interrupted; nothing partial was left at a final path", file=sys.stderr)
        return 130
    return 2


def _get(args: argparse.Namespace) -> int:
    from raydf.api import download_here, run_fanout
    from raydf.options import make_request

    request = make_request(
        args.url,
        args.output,
        recursive=args.recursive,
        include=args.include,
        exclude=args.exclude,
        hub_options={k: getattr(args, k) for k in (
            "hf_token", "hf_revision", "hf_endpoint", "ms_token", "ms_revision", "ms_endpoint")},
        layout=args.layout,
    )
    progress = not (args.no_progress or args.json)
    if args.local:
        if args.address or args.nodes != "auto":
            raise ConfigError("--local downloads on this machine only; drop --address/--nodes")
        if args.layout != "files":
            raise ConfigError("--layout hf-cache runs on the cluster; drop --local")
        report = download_here(request, progress=progress)
    else:
        from raydf.cluster.service import connect, target_nodes

        connect(args.address)
        report = run_fanout(request, target_nodes(args.nodes), progress=progress)
    if args.json:
        print(report.to_json())
    else:
        print(report.summary(), file=sys.stderr)
        for node in report.nodes:
            if not node.ok:
                print(f"raydf: node {node.node_id[:12]} failed: {node.error}", file=sys.stderr)
    return 0 if report.ok else 4 if report.corrupt else 1


def _warm(args: argparse.Namespace) -> int:
    from raydf.api import run_fanout
    from raydf.cluster.service import connect, target_nodes
    from raydf.options import make_request

    request = make_request(
        args.url, "/", recursive=True, include=args.include, exclude=args.exclude,
        hub_options={k: getattr(args, k) for k in (
            "hf_token", "hf_revision", "hf_endpoint", "ms_token", "ms_revision", "ms_endpoint")},
    )
    connect(args.address)
    report = run_fanout(request, target_nodes(args.nodes), place=False,
                        progress=not (args.no_progress or args.json))
    print(report.to_json() if args.json else report.summary(),
          file=sys.stdout if args.json else sys.stderr)
    return 0 if report.ok else 1


def _admin(args: argparse.Namespace) -> int:
    import json

    from raydf.admin import cache_command, cluster_status, format_status

    if args.command == "cache":
        if args.action == "rm" and not args.key:
            raise ConfigError("raydf cache rm needs the KEY that `raydf cache ls` shows")
        if not args.local:
            from raydf.cluster.service import connect

            connect(args.address, start=False)
        result = cache_command(args.action, args.key, local=args.local)
        if args.json or args.action != "ls":
            print(json.dumps(result, sort_keys=True))
        else:
            for node, rows in result.items():
                for row in rows:
                    use = "in use" if row["in_use"] else "unused"
                    print(f"{node[:12]}  {row['bytes']:>14}  {use:6}  {row['key']}")
        return 0
    from raydf.cluster.service import connect

    connect(args.address, start=False)
    status = cluster_status()
    print(json.dumps(status, sort_keys=True, default=str) if args.json else format_status(status))
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
