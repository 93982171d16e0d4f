"""URL grammar: text -> :class:`Source` and back (pure, no I/O).

The forms are Dragonfly's::

    hf://[models/|datasets/|spaces/]owner/repo[/path]
    modelscope://[models/|datasets/]owner/repo[/path]
    http://host[:port]/path   https://host[:port]/path
    file:///absolute/path
    s3://bucket/key  gs://bucket/key  abs://container/key  hdfs://host/path

``parse_url(text).format() == text`` for every canonical URL, and
``parse_url(source.format()) == source`` for every ``Source``. Anything else
raises :class:`~raydf.errors.InvalidURL` naming the URL and the expected form.
Paths are checked here, before any I/O: no ``.``/``..`` segments (also when
percent-encoded), no empty segments, no backslashes, control characters or
whitespace, and no credentials inside the URL (they would end up in logs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from raydf.errors import InvalidURL

__all__ = ["HUB_SCHEMES", "REPO_TYPES", "Source", "parse_url"]

#: Repo types each hub knows, in URL spelling; the first is the default.
REPO_TYPES: dict[str, tuple[str, ...]] = {
    "hf": ("models", "datasets", "spaces"),
    "modelscope": ("models", "datasets"),
}
HUB_SCHEMES = frozenset(REPO_TYPES)
OBJECT_STORE_SCHEMES = frozenset({"s3", "gs", "abs", "hdfs"})

_EXPECTED = {
    "hf": "hf://[models/|datasets/|spaces/]owner/repo[/path]",
    "modelscope": "modelscope://[models/|datasets/]owner/repo[/path]",
    "http": "http://host[:port]/path",
    "https": "https://host[:port]/path",
    "file": "file:///absolute/path",
    "s3": "s3://bucket/key",
    "gs": "gs://bucket/key",
    "abs": "abs://container/key",
    "hdfs": "hdfs://host[:port]/path",
}
# Hub names: what HF and ModelScope accept for owners and repos.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?\Z")
_MAX_URL = 4096
# Characters left as they are when a path is formatted back into a URL.
_PATH_SAFE = "/-._~!$&'()*+,;=:@"


def _expected_forms() -> str:
    return ", ".join(_EXPECTED.values())


@dataclass(frozen=True)
class Source:
    """Where to read from, parsed from a URL.

    ``repo_type``/``repo_id`` are set for hubs (``"models"``, ``"org/name"``),
    ``repo_id`` holds the bucket or ``host[:port]`` for object stores and web
    URLs. ``path`` is the decoded path inside the repo (``""`` = everything),
    inside the bucket, or on the host (absolute for ``file``/``http``).
    """

    scheme: str
    repo_type: str = ""
    repo_id: str = ""
    path: str = ""
    query: str = ""

    @property
    def is_hub(self) -> bool:
        return self.scheme in HUB_SCHEMES

    @property
    def name(self) -> str:
        """A short label: the repo id for hubs, else the last path segment."""
        if self.is_hub:
            return self.repo_id
        return self.path.rstrip("/").rsplit("/", 1)[-1] or self.repo_id

    def format(self) -> str:
        """The canonical URL; ``parse_url(s.format()) == s``."""
        path = quote(self.path, safe=_PATH_SAFE)
        if self.is_hub:
            owner = self.repo_id.split("/", 1)[0]
            prefix = ""
            # The type prefix is optional only for models, and required when the
            # owner's name would otherwise read as a type.
            if self.repo_type != "models" or owner in REPO_TYPES[self.scheme]:
                prefix = self.repo_type + "/"
            return f"{self.scheme}://{prefix}{self.repo_id}" + (f"/{path}" if path else "")
        query = f"?{self.query}" if self.query else ""
        if self.scheme == "file":
            return f"file://{path}"
        if self.scheme in OBJECT_STORE_SCHEMES:
            return f"{self.scheme}://{self.repo_id}" + (f"/{path}" if path else "")
        return f"{self.scheme}://{self.repo_id}{path}{query}"

    def __str__(self) -> str:
        return self.format()


def parse_url(text: str) -> Source:
    """Parse a raydf URL into a :class:`Source`.

    >>> parse_url("hf://datasets/org/data/train").repo_type
    'datasets'
    """
    if not isinstance(text, str) or not text:
        raise InvalidURL(f"empty URL: expected one of {_expected_forms()}")
    shown = _redact(text)
    if len(text) > _MAX_URL:
        raise InvalidURL(f"URL is {len(text)} characters long (limit {_MAX_URL}): {shown[:80]}…")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise InvalidURL(
            f"URL {shown!r} contains whitespace or control characters; "
            "percent-encode them (a space is %20)"
        )
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InvalidURL(f"URL {shown!r} has no scheme: expected one of {_expected_forms()}")
    if scheme not in _EXPECTED:
        raise InvalidURL(
            f"unsupported scheme {scheme!r} in {shown!r}: expected one of {_expected_forms()}"
        )
    if scheme in HUB_SCHEMES:
        return _parse_hub(text, scheme, rest)
    return _parse_location(text, scheme)


def _parse_hub(text: str, scheme: str, rest: str) -> Source:
    expected = _EXPECTED[scheme]
    if "?" in rest or "#" in rest:
        raise InvalidURL(f"URL {text!r} has a query or fragment; expected {expected}")
    raw = rest.rstrip("/").split("/") if rest else []
    types = REPO_TYPES[scheme]
    repo_type = types[0]
    if raw and raw[0] in REPO_TYPES["hf"]:
        if raw[0] not in types:
            raise InvalidURL(f"{scheme} has no {raw[0]}: {text!r}; expected {expected}")
        repo_type = raw.pop(0)
    if len(raw) < 2 or not raw[0] or not raw[1]:
        raise InvalidURL(f"URL {text!r} needs both owner and repo; expected {expected}")
    for name in raw[:2]:
        if not _NAME.match(name) or ".." in name or "--" in name:
            raise InvalidURL(
                f"invalid owner or repo name {name!r} in {text!r}: use letters, digits, "
                f"'-', '_' and '.'; expected {expected}"
            )
    path = _clean_path(text, raw[2:], expected)
    return Source(scheme, repo_type, f"{raw[0]}/{raw[1]}", path)


def _parse_location(text: str, scheme: str) -> Source:
    expected = _EXPECTED[scheme]
    try:
        parts = urlsplit(text)
        port = parts.port  # validates the port
    except ValueError as exc:
        raise InvalidURL(f"malformed URL {_redact(text)!r}: {exc}; expected {expected}") from None
    if parts.username is not None or parts.password is not None:
        raise InvalidURL(
            f"URL {_redact(text)!r} carries credentials; pass them as options or "
            "environment variables instead, so they stay out of logs"
        )
    if parts.fragment:
        raise InvalidURL(f"URL {text!r} has a fragment; expected {expected}")
    segments = parts.path.split("/")[1:] if parts.path else []
    trailing = bool(segments) and segments[-1] == ""
    if trailing:
        segments = segments[:-1]
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise InvalidURL(f"URL {text!r} must be a local absolute path; expected {expected}")
        if not segments:
            raise InvalidURL(f"URL {text!r} has no path; expected {expected}")
        return Source("file", path="/" + _clean_path(text, segments, expected))
    host = parts.hostname or ""
    if not host:
        raise InvalidURL(f"URL {text!r} has no host; expected {expected}")
    netloc = host if port is None else f"{host}:{port}"
    if netloc != parts.netloc:
        raise InvalidURL(f"URL {text!r} has a malformed host; expected {expected}")
    path = _clean_path(text, segments, expected)
    if scheme in OBJECT_STORE_SCHEMES:
        if parts.query:
            raise InvalidURL(f"URL {text!r} has a query; expected {expected}")
        return Source(scheme, repo_id=netloc, path=path + ("/" if trailing and path else ""))
    if not path:
        raise InvalidURL(f"URL {text!r} names no file; expected {expected}")
    return Source(scheme, repo_id=netloc, path="/" + path, query=parts.query)


def _clean_path(text: str, segments: list[str], expected: str) -> str:
    """Decode and check path segments; refuse anything that could traverse."""
    clean = []
    for raw in segments:
        try:
            seg = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidURL(f"URL {text!r} has a malformed percent-escape") from None
        bad = (
            not seg
            or seg in (".", "..")
            or "/" in seg
            or "\\" in seg
            or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in seg)
            or seg != seg.strip()
        )
        if bad:
            raise InvalidURL(
                f"URL {text!r} has an unsafe path segment {raw!r} (empty, '.', '..', "
                f"an encoded slash or backslash, or a control character); expected {expected}"
            )
        clean.append(seg)
    return "/".join(clean)


def _redact(text: str) -> str:
    """Hide a ``user:password@`` part so a credential never reaches a message."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", text)
