"""What a caller asks for: URL, destination, filters and hub options, checked once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from raydf.backends import BackendOptions, open_backend, options_for
from raydf.backends.base import Backend
from raydf.errors import ConfigError, InvalidURL
from raydf.layout import LAYOUTS
from raydf.plan import RepoPlan, filter_files, normalize_patterns
from raydf.uri import OBJECT_STORE_SCHEMES, Source, parse_url

__all__ = ["HUB_OPTION_KEYS", "TOPOLOGY_LABEL", "Request", "describe_filters", "make_request"]

TOPOLOGY_LABEL = "ray.io/availability-zone"  # the Ray node label that names a node's zone

HUB_OPTION_KEYS = frozenset(f"{hub}_{what}" for hub in ("hf", "ms")
                            for what in ("token", "endpoint", "revision"))


@dataclass(frozen=True)
class Request:
    """One checked request. ``backend_options`` holds the token: it goes to the
    seed only, and its repr shows no secret."""

    source: Source
    dest: Path
    recursive: bool
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    layout: str = "files"  # or "hf-cache": -O is a Hugging Face hub cache

    @property
    def url(self) -> str:
        return self.source.format()

    def without_secrets(self) -> Request:
        """The same request with no token: safe to send anywhere."""
        options = dataclasses.replace(self.backend_options, token=None)
        return dataclasses.replace(self, backend_options=options)

    def open_backend(self) -> Backend:
        return open_backend(self.source, self.backend_options)

    def make_plan(self, backend: Backend) -> RepoPlan:
        """Resolve the revision once, list once, filter, and fit to ``-O``."""
        commit = backend.resolve()
        listed = backend.list_files(commit)
        files = filter_files(listed, self.include, self.exclude, origin=self.source.format())
        if listed and not files and (self.include or self.exclude):
            raise ConfigError(f"{describe_filters(self.include, self.exclude)} match none of "
                              f"the {len(listed)} files under {self.url}; check the patterns "
                              "(fnmatch: '*' crosses '/', 'dir/' means everything under dir)")
        if not self.recursive:
            named = self.source.is_hub or self.source.scheme in OBJECT_STORE_SCHEMES
            single = len(files) == 1 and (
                not named or files[0].repo_path == self.source.path.rstrip("/"))
            if not single:
                raise ConfigError(
                    f"{self.url} is a folder or a whole repo; pass -r (--recursive) to fetch "
                    "everything under it into the folder -O"
                )
            # Without -r, -O names the file itself (as with dfget).
            files = (dataclasses.replace(files[0], path=self.dest.name),)
        return RepoPlan(self.url, commit, files)

    @property
    def dest_dir(self) -> Path:
        """The folder files are placed under (``-O`` itself with ``-r``)."""
        return self.dest if self.recursive else self.dest.parent


def make_request(
    url: str,
    dest: str | Path,
    *,
    recursive: bool = True,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    hub_options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    layout: str = "files",
) -> Request:
    """Parse and check everything before any I/O.

    ``hub_options`` holds CLI-style keys: ``hf_token``, ``hf_endpoint``,
    ``hf_revision``, ``ms_token``, ``ms_endpoint``, ``ms_revision``.
    """
    source = parse_url(url)
    if not str(dest).strip():
        raise ConfigError("the destination (-O) is empty; name a folder (with -r) or a file")
    if not source.path and not source.is_hub and not (
            recursive and source.scheme in OBJECT_STORE_SCHEMES):
        raise InvalidURL(f"{url} names no file" + (
            "; pass -r to fetch the whole bucket" if source.scheme in OBJECT_STORE_SCHEMES else ""))
    if not recursive and source.is_hub and not source.path:
        raise ConfigError(
            f"{url} is a whole repo; pass -r (--recursive) to fetch it into the folder -O"
        )
    unknown = sorted(set(hub_options or {}) - HUB_OPTION_KEYS)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; hub options are "
                          f"{', '.join(sorted(HUB_OPTION_KEYS))}")
    normalize_patterns(include)
    normalize_patterns(exclude)
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if layout == "hf-cache" and (source.scheme != "hf" or not recursive):
        raise ConfigError("--layout hf-cache needs an hf:// URL and -r (-O is then the "
                          "Hugging Face cache folder, like HF_HUB_CACHE)")
    options = options_for(source, hub_options, environ)
    return Request(
        source=source,
        dest=_destination(source, str(dest), recursive),
        recursive=recursive,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        backend_options=options,
        layout=layout,
    )


def _destination(source: Source, dest: str, recursive: bool) -> Path:
    """``-O`` as every node must read it: absolute, taken from the caller's working
    directory (a peer's own working directory means nothing to the caller).

    Without ``-r``, an ``-O`` ending in ``/`` is a folder and the file goes
    inside it under its own name, as ``cp`` and ``dfget`` do.
    """
    path = Path(dest).expanduser().absolute()
    if not recursive and dest.endswith(("/", os.sep)):
        name = PurePosixPath(source.path.rstrip("/")).name
        if not name:
            raise ConfigError(f"-O {dest} is a folder, and {source.format()} names no file "
                              "to put in it; name the file with -O, or pass -r")
        path = path / name
    return path


def describe_filters(include: Sequence[str], exclude: Sequence[str]) -> str:
    """``--include '*.bin' --exclude 'x/'``, as the caller typed them."""
    return " ".join([*(f"--include {p!r}" for p in include),
                     *(f"--exclude {p!r}" for p in exclude)])
