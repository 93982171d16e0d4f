"""The ``raydf`` command: ``get`` (like ``dfget``), ``hub``, and friends."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from raydf import errors
from raydf.errors import ConfigError, RaydfError, StorageError, exit_code
from raydf.terminal import Streams, debugging, fill_closed_streams, quiet_broken_pipe, shield
from raydf.warm_command import AUTO_EPILOG, add_auto_options, check_warm_args, run_auto

if TYPE_CHECKING:
    from raydf.options import Request
    from raydf.report import Report

__all__ = ["console", "main"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for a writer killed by it

EXIT_CODES = """exit status:
  0    every target node has every file, verified
  1    the fan-out did not complete on every target node (the report says which),
       or an unexpected error (one line; RAYDF_DEBUG=1 shows the traceback)
  2    bad input: malformed URL, bad or conflicting options, --include/--exclude
       matching no file, a cache key no node has, an --address (or RAY_ADDRESS)
       where no Ray cluster answers (checked within seconds)
  3    the hub refused or failed: not found, no access (private, gated), rate
       limited, unavailable
  4    integrity: a file or piece did not match its digest, a hostile listing
  5    storage: the destination or cache cannot be written (e.g. -r -O naming an
       existing file, -O naming an existing folder without -r)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM, `ray job stop`): the transfer is
       cancelled, what nodes verified is kept for a re-run, nothing partial is placed
  141  stdout was closed by its reader (`raydf ... | head -1`); nothing more is written
errors are one line on stderr ("raydf: error: ..."); with --json, stdout also holds
one object {"ok": false, "error": ..., "exit_code": N, "url": ...}. Ray's own log
lines never reach the terminal: they go to $RAYDF_CLI_LOG (default
$TMPDIR/raydf-cli-<uid>.log); RAYDF_DEBUG=1 shows them instead.
"""

GET_EPILOG = """examples:
  raydf get hf://Qwen/Qwen2.5-0.5B -O /models/qwen -r
      every file of a model repo into /models/qwen on every GPU node
  raydf get hf://datasets/org/data/train -O /data/train -r --include '*.parquet'
      one folder of a dataset, parquet files only
  raydf get hf://org/model/config.json -O /tmp/config.json
      one file (without -r, -O names the file)
  raydf get hf://org/model/config.json -O /tmp/cfg/
      one file into a folder: an -O ending in / is a folder (as with cp and dfget)
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
                   help="destination: a folder with -r, else the file's path, or a folder if it ends "
                   "in / (e.g. -O /models/m); a relative path is taken from this directory, "
                   "the same on every node")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="fetch everything under URL into the folder OUT (e.g. a whole repo)")
    p.add_argument("--include", action="append", metavar="GLOB", default=[],
                   help="only files matching GLOB; repeatable (e.g. --include '*.safetensors'); "
                   "filters that leave no file are an error (exit 2)")
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
                   help="print one JSON object on stdout (and nothing else there): the report "
                   "with ok and exit_code, or on an error {ok: false, error, exit_code, url}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to use (default $RAY_ADDRESS, a running cluster, else a "
                   "new local one), e.g. --address 10.0.0.1:6379; one where no Ray cluster "
                   "answers fails within seconds (exit 2)")
    p.add_argument("--nodes", metavar="SELECTOR", default="auto",
                   help="target nodes: auto (GPU nodes if any, else all), gpu, all, or Ray "
                   "labels key=value[,key=value], e.g. --nodes gpu")
    p.add_argument("--local", action="store_true",
                   help="download on this machine only, straight from the origin, without Ray")
    _add_topology(p)


def _add_topology(p: argparse.ArgumentParser) -> None:
    from raydf.options import TOPOLOGY_LABEL

    p.add_argument("--topology-label", metavar="KEY", default=TOPOLOGY_LABEL,
                   help="Ray node label naming each node's zone (default %(default)s): "
                   "peers take pieces from their own zone and about one copy of each piece "
                   "crosses into each zone; the report counts the bytes that crossed. "
                   "--topology-label '' ignores zones")


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
        "node caches the model; a later `raydf.get` in a replica places it at once\n"
        + AUTO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    warm.add_argument("url", metavar="URL", nargs="?",
                      help="what to cache, as for `raydf get -r` (or --auto, without a URL)")
    add_auto_options(warm)
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
    _add_topology(warm)
    warm.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    warm.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    cache = sub.add_parser(
        "cache", help="list, remove or garbage-collect the node-local caches",
        epilog="examples:\n  raydf cache ls            every node's cached files\n"
        "  raydf cache rm sha256-<hex>   drop one file from every node's cache\n"
        "  raydf cache gc            drop cached files no destination uses, and "
        "abandoned partial files\n  raydf cache ls --local    this machine's caches, "
        "without Ray\n\nA node keeps its files in the cache on each destination's file "
        "system\n(RAYDF_CACHE if it is there, else .raydf-cache at the top of that file "
        "system),\nso a destination is a hard link, one copy on disk; RAYDF_CACHE_PER_FS=0: "
        "RAYDF_CACHE only.\nThese commands see every cache of a node.\n",
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


def console() -> NoReturn:
    """The ``raydf`` console script: :func:`main`, then exit with its code.

    A command that connected to Ray exits as soon as its output is flushed,
    without the driver's teardown (``ray.shutdown`` and the interpreter's, 0.5-1 s
    on a busy machine): the cluster sees the driver go either way, and every
    actor raydf starts is detached (the job ended before the report was printed).
    """
    code = main()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        for stream in (sys.stdout, sys.stderr):
            # A closed pipe: the exit code already says what happened.
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """What the ``raydf`` console script runs (see :func:`console`); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fill_closed_streams()
    # `hub` and `demo` parse their own arguments (their --help included).
    if argv and argv[0] == "hub":
        from raydf.testing.hub.__main__ import main as hub_main

        return hub_main(argv[1:])
    if argv and argv[0] == "demo":
        from raydf.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    uses_ray = args.command in ("warm", "status") or (
        args.command in ("get", "cache") and not args.local)
    streams = shield() if uses_ray else Streams(sys.stdout, sys.stderr)
    try:
        code = _run(args, streams)
        streams.out.flush()
        return code
    except BrokenPipeError:
        # The reader of stdout went away (`| head -1`): no traceback, no more output.
        quiet_broken_pipe(streams)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if _signals_received:
            return _fail(args, streams, "terminated (SIGTERM); the transfer was cancelled, "
                         "nothing partial was left at a final path; run the same command "
                         "again to resume", 143, prefix="raydf: ")
        return _fail(args, streams, "interrupted; nothing partial was left at a final path", 130,
                     prefix="raydf: ")
    except RaydfError as err:
        return _fail(args, streams, str(err), exit_code(err))
    except Exception as exc:  # anything else: one line, the traceback only when debugging
        if debugging():
            raise
        return _fail(args, streams, *_unexpected(exc))


_signals_received: list[int] = []


def _terminated(signum: int, frame: object) -> None:
    # A KeyboardInterrupt, so the cancel path of Ctrl-C runs; Ray re-raises
    # interrupts met inside ray.get as a plain KeyboardInterrupt, so the signal
    # is remembered here rather than in an exception subclass.
    _signals_received.append(signum)
    raise KeyboardInterrupt


def _cancel_on_sigterm() -> None:
    """SIGTERM (`ray job stop`, a pod's termination, `kill`) cancels like Ctrl-C: the
    job is told, what nodes verified is kept, nothing partial is placed. Installed
    after connecting, since ``ray.init`` sets a SIGTERM handler of its own."""
    signal.signal(signal.SIGTERM, _terminated)


def _run(args: argparse.Namespace, streams: Streams) -> int:
    if args.command == "get":
        return _get(args, streams)
    if args.command == "warm":
        return _warm(args, streams)
    return _admin(args, streams)


def _fail(args: argparse.Namespace, streams: Streams, message: str, code: int, *,
          prefix: str = "raydf: error: ") -> int:
    """One line on stderr; with --json also the error object on stdout (see README)."""
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"{prefix}{line}", file=streams.err)
    if getattr(args, "json", False):
        try:
            print(json.dumps({"ok": False, "error": line, "exit_code": code,
                              "url": getattr(args, "url", None)}, sort_keys=True),
                  file=streams.out, flush=True)
        except BrokenPipeError:
            quiet_broken_pipe(streams)
    return code


def _unexpected(exc: Exception) -> tuple[str, int]:
    """The one line and exit status for an exception raydf did not translate."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return (f"cannot use {exc.filename}: {exc.strerror or exc}; check the path "
                "(-O, RAYDF_CACHE) and its permissions", 5)
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return (f"unexpected {type(exc).__name__}{detail} (RAYDF_DEBUG=1 shows the traceback "
            "and Ray's own messages)", 1)


def _with_status(report: Report, error: RaydfError | None = None) -> str:
    """The report as --json prints it: the report's fields, plus ``ok`` and
    ``exit_code`` (and ``error`` when the CLI found why it failed)."""
    extra: dict[str, object] = {"ok": report.ok, "exit_code": report.exit_code}
    if error is not None:
        extra.update(exit_code=exit_code(error), error=str(error))
    return json.dumps({**report.to_dict(), **extra}, sort_keys=True)


def _get(args: argparse.Namespace, streams: Streams) -> int:
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
        from raydf.cluster.service import connect, scheduler, target_nodes

        connect(args.address)
        _cancel_on_sigterm()
        # Created now, so that on a fresh cluster its worker (and its standby
        # seed's) starts while the peers' do, not after the destination check.
        scheduler()
        nodes = target_nodes(args.nodes)
        _check_destinations(request, nodes)
        report = run_fanout(request, nodes, progress=progress,
                            topology_label=args.topology_label)
    problem = None if report.ok or args.local else _job_error(report)
    if problem is not None:  # one line and its exit code, as --local says it
        print(f"raydf: error: {problem}", file=streams.err)
        if args.json:
            print(_with_status(report, problem), file=streams.out)
        return exit_code(problem)
    if args.json:
        print(_with_status(report), file=streams.out)
    else:
        print(report.summary(), file=streams.err)
        for node in report.nodes:
            if not node.ok:
                print(f"raydf: node {node.node_id[:12]} failed: {node.error}", file=streams.err)
    return report.exit_code


def _job_error(report: Report) -> RaydfError | None:
    """The typed error that failed the whole job on every node (the hub refused, the
    listing was hostile, ...), so its exit code is the README's (3, 4, ...), not 1."""
    kind = getattr(errors, report.error_type, None) if report.error_type else None
    failed = [n for n in report.nodes if not n.ok]
    if not (isinstance(kind, type) and issubclass(kind, RaydfError)) or not failed or (
            len(failed) < len(report.nodes)):
        return None
    return kind(failed[0].error or report.error_type)


def _check_destinations(request: Request, nodes: list[str]) -> None:
    """Refuse (exit 5, before any origin byte) an -O that cannot be written on some
    target node: an existing file for -r, an existing folder for one file."""
    import ray

    from raydf.cluster.service import peer_for

    dest = str(request.dest)
    calls = [peer_for(node).destination_problem.remote(dest, request.recursive) for node in nodes]
    found = []
    for call in calls:
        try:
            problem = ray.get(call)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            continue  # a node that just died: the job skips it or says why it failed
        if problem is not None:
            found.append(problem)
    if found:
        raise StorageError(f"{found[0]} (on {len(found)} of {len(nodes)} target nodes)")


def _warm(args: argparse.Namespace, streams: Streams) -> int:
    from raydf.api import run_fanout
    from raydf.cluster.service import connect, target_nodes
    from raydf.options import make_request

    check_warm_args(args)
    if args.auto:
        return run_auto(args, streams, _cancel_on_sigterm)
    request = make_request(
        args.url, "/", recursive=True, include=args.include, exclude=args.exclude,
        hub_options={k: getattr(args, k) for k in (
            "hf_token", "hf_revision", "hf_endpoint", "ms_token", "ms_revision", "ms_endpoint")},
    )
    connect(args.address)
    _cancel_on_sigterm()
    report = run_fanout(request, target_nodes(args.nodes), place=False,
                        progress=not (args.no_progress or args.json),
                        topology_label=args.topology_label)
    print(_with_status(report) if args.json else report.summary(),
          file=streams.out if args.json else streams.err)
    return report.exit_code


def _admin(args: argparse.Namespace, streams: Streams) -> int:
    from raydf.admin import cache_command, cluster_status, format_status

    if args.command == "cache":
        if args.action == "rm" and not args.key:
            raise ConfigError("raydf cache rm needs the KEY that `raydf cache ls` shows")
        if not args.local:
            from raydf.cluster.service import connect

            connect(args.address, start=False)
        result = cache_command(args.action, args.key, local=args.local)
        if args.action == "rm" and not any(result.values()):
            raise ConfigError(
                f"no {'cache here' if args.local else 'node'} holds {args.key!r}"
                + ("" if args.local else " (or a running job uses it)")
                + "; `raydf cache ls` lists the keys")
        if args.json or args.action != "ls":
            print(json.dumps(result, sort_keys=True), file=streams.out)
        else:
            for node, rows in result.items():
                for row in rows:
                    use = "in use" if row["in_use"] else "unused"
                    # The cache it is in: a node has one per file system of its -O.
                    print(f"{node[:12]}  {row['bytes']:>14}  {use:6}  {row['key']}  "
                          f"{row.get('cache', '')}", file=streams.out)
        return 0
    from raydf.cluster.service import connect

    connect(args.address, start=False)
    status = cluster_status()
    print(json.dumps(status, sort_keys=True, default=str) if args.json else format_status(status),
          file=streams.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
