"""What the ``raydf`` command writes to the user's terminal: its own lines, nothing of Ray's.

Ray's driver writes to the process's file descriptors 1 and 2 from C++ (GCS
connection warnings, raylet and RPC errors), and a thread ``ray.init`` starts
prints the raylet's error messages (``(raylet) ...``) on ``sys.stdout``, where
they would break ``--json``. So before a command touches Ray, :func:`shield`
points descriptors 1 and 2 (and so ``sys.stdout`` and everything Ray started)
at a log file, and gives raydf streams on the original terminal: ``out`` for
the JSON report and listings, ``err`` (also bound to ``sys.stderr``, where
the progress bar draws) for progress, the summary and errors.

``RAYDF_DEBUG=1`` turns the shield off (Ray's lines and tracebacks then reach
the terminal).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = ["Streams", "debugging", "fill_closed_streams", "log_path", "quiet_broken_pipe", "shield"]

_LOG_MAX_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Streams:
    """Where raydf's own output goes: ``out`` (stdout) and ``err`` (stderr)."""

    out: TextIO
    err: TextIO


def debugging() -> bool:
    """``RAYDF_DEBUG=1``: show Ray's own lines and full tracebacks."""
    return os.environ.get("RAYDF_DEBUG", "") not in ("", "0")


def log_path() -> Path:
    """The file Ray's own output goes to (``$RAYDF_CLI_LOG``, else one per user in the temp dir)."""
    explicit = os.environ.get("RAYDF_CLI_LOG")
    if explicit:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / f"raydf-cli-{os.getuid()}.log"


def _real_fds() -> bool:
    """True when sys.stdout and sys.stderr write to descriptors 1 and 2 (not a
    caller's capture, as in tests that call ``main`` in-process)."""
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def shield() -> Streams:
    """Keep Ray's output off the terminal; return the streams raydf writes to."""
    current = Streams(sys.stdout, sys.stderr)
    if debugging() or not _real_fds():
        return current
    # Imported first, so the handlers Ray's logging sets up write to
    # descriptor 2 as it is about to be (the log), not to raydf's stderr.
    import ray  # noqa: F401

    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > _LOG_MAX_BYTES:
            path.unlink()
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        log_fd = os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    sys.stderr.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding=sys.stdout.encoding,
                    errors=sys.stdout.errors)
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding,
                    errors="backslashreplace")
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = err
    log = sys.stdout  # descriptor 1: the log now

    def to_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
               file: TextIO | None = None, line: str | None = None) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = to_log
    return Streams(out, err)


def fill_closed_streams() -> None:
    """Descriptors 0-2 that the caller closed (``raydf get ... >&-``) become
    /dev/null, and so do ``sys.stdout``/``sys.stderr`` that Python left as None
    for them: output then goes nowhere, the exit code still says what happened,
    and no file or socket Ray opens later can land on descriptor 1 or 2 (where
    raydf's or Ray's output would corrupt it)."""
    for fd in (0, 1, 2):  # in order: the lowest free descriptor is then the one filled
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's stdout
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the process's stderr


def quiet_broken_pipe(streams: Streams) -> None:
    """The reader of stdout went away (``raydf ... | head -1``): point stdout at
    /dev/null so the final flush at exit does not raise again (the way Python's
    documentation for SIGPIPE recommends)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in {id(s): s for s in (streams.out, sys.stdout)}.values():
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)
