"""Backends by URL scheme, and how their options are found.

Built in: ``hf`` (Hugging Face), ``modelscope``, ``http``/``https``, ``file``, and
through ``pyarrow.fs`` the object stores ``s3``, ``gs``, ``abs`` and ``hdfs``
(these read their credentials from the environment their own SDKs read).
Third-party packages add schemes through the entry-point group
``raydf.backends`` (``name = "pkg.module:BackendClass"``, the class has a
``SCHEME`` and is constructed as ``cls(source, BackendOptions)``).

Options: a hub's token, endpoint and revision come from its flags
(``--hf-token`` ...), else from the environment the official clients read
(``HF_TOKEN``, ``HF_ENDPOINT``, ``MODELSCOPE_API_TOKEN``,
``MODELSCOPE_ENDPOINT``; for Hugging Face also ``HUGGING_FACE_HUB_TOKEN`` and
``$HF_HOME/token``). Flags win over the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from raydf.backends.azure import AzureBackend
from raydf.backends.base import Backend, BackendOptions, RemoteFile, Secret
from raydf.backends.file import FileBackend
from raydf.backends.gcs import GcsBackend
from raydf.backends.hdfs import HdfsBackend
from raydf.backends.http import HttpBackend
from raydf.backends.huggingface import HuggingFaceBackend
from raydf.backends.modelscope import ModelScopeBackend
from raydf.backends.s3 import S3Backend
from raydf.errors import ConfigError, InvalidURL
from raydf.uri import Source

__all__ = [
    "Backend",
    "BackendOptions",
    "RemoteFile",
    "Secret",
    "backend_class",
    "open_backend",
    "options_for",
    "register",
]

_REGISTRY: dict[str, type] = {}
_HUB_PREFIXES: dict[str, Any] = {"hf": HuggingFaceBackend, "ms": ModelScopeBackend}


def register(cls: type) -> type:
    """Register a backend class under its ``SCHEME`` (and ``SCHEMES``, if any)."""
    for scheme in getattr(cls, "SCHEMES", (cls.SCHEME,)):  # type: ignore[attr-defined]
        _REGISTRY[scheme] = cls
    return cls


for _cls in (HuggingFaceBackend, ModelScopeBackend, HttpBackend, FileBackend, S3Backend,
             GcsBackend, AzureBackend, HdfsBackend):
    register(_cls)


def backend_class(scheme: str) -> type:
    """The backend class for ``scheme``, looking in entry points if not built in."""
    if scheme not in _REGISTRY:
        for ep in entry_points(group="raydf.backends"):
            if ep.name == scheme:
                register(ep.load())
    try:
        return _REGISTRY[scheme]
    except KeyError:
        raise InvalidURL(
            f"no backend for {scheme}:// is installed; built in are "
            f"{', '.join(sorted(_REGISTRY))} (others come as packages registering the "
            "'raydf.backends' entry point)"
        ) from None


def options_for(
    source: Source,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> BackendOptions:
    """Token, endpoint and revision for ``source`` from flags, else the environment.

    ``flags`` holds CLI-style keys (``hf_token``, ``ms_revision``, ...); a flag
    meant for another hub than the URL's is a :class:`ConfigError`.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if environ is None else environ
    cls: Any = backend_class(source.scheme)
    prefix = getattr(cls, "OPTION_PREFIX", None)
    for other in _HUB_PREFIXES:
        stray = [k for k in flags if k.startswith(other + "_") and other != prefix]
        if stray:
            flag = "--" + stray[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to {_HUB_PREFIXES[other].SCHEME}:// URLs, "
                              f"not to {source}")
    if prefix is None:
        # Object stores: the caller's own settings and keys, sealed for its seed.
        credentials = getattr(cls, "caller_credentials", None)
        return BackendOptions(credentials(env) if credentials else None)
    token = flags.get(f"{prefix}_token")
    if token is None:
        token = next((env[name] for name in cls.ENV_TOKENS if env.get(name)), None)
    if token is None and prefix == "hf":
        token = _hf_token_file(env)
    endpoint = flags.get(f"{prefix}_endpoint") or env.get(cls.ENV_ENDPOINT) or None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint {endpoint!r} must start with http:// or https://")
    revision = flags.get(f"{prefix}_revision")
    if revision is not None and (not revision.strip() or revision != revision.strip()
                                 or any(ord(c) < 0x20 for c in revision) or ".." in revision):
        raise ConfigError(f"revision {revision!r} is not a valid branch, tag or commit")
    return BackendOptions(Secret(token) if token else None, endpoint, revision)


def _hf_token_file(env: Mapping[str, str]) -> str | None:
    home = Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    try:
        token = (home / "token").read_text().strip()
    except OSError:
        return None
    return token or None


def open_backend(source: Source, options: BackendOptions) -> Backend:
    """Construct the backend for ``source``."""
    backend: Backend = backend_class(source.scheme)(source, options)
    return backend
