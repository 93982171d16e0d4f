"""HTTP for the hub backends: retries, redirects, auth scoping, ranged reads.

* **Auth scoping.** The token is attached only to requests whose origin
  (scheme, host, port) is the hub endpoint's. Redirects are followed here, not
  by httpx, so a hop to a CDN never carries ``Authorization`` or a cookie.
* **Retries.** 408, 429, 5xx, timeouts and dropped connections are retried
  with capped exponential backoff (1 s doubling to 8 s, 5 retries, as the
  official clients do) that honours ``Retry-After`` and ``RateLimit: ...;t=N``.
* **Budget.** The hubs' announced quotas are kept and respected by
  :class:`~raydf.backends.ratelimit.RequestBudget` (one per seed).
* **Stalls.** A stream that sends no byte for ``stall_timeout`` seconds (Xet
  bridges do) is cut by httpx's read timeout and retried like a dropped one.
* **Kinds.** Requests are counted by kind: ``api`` (listings, revisions),
  ``resolve`` (a file asked of the hub: HF ``/resolve/``, ModelScope
  ``/repo``), ``content`` (bytes from another host: a CDN or Xet bridge).
* **Ranged reads.** A ranged GET must come back as ``206`` with the exact
  ``Content-Range`` and length asked for; a ``200`` (the range was ignored)
  is accepted only when the whole file was asked for. Anything else is an
  :class:`~raydf.errors.IntegrityError`, never silently written.
* **TLS** verification stays on (httpx's default).
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpcore
import httpx

from raydf.backends.base import Secret
from raydf.backends.ratelimit import RequestBudget, RetryPolicy
from raydf.errors import HubError, IntegrityError, OriginUnavailable, RateLimited

__all__ = [
    "KINDS",
    "STALL_TIMEOUT_S",
    "HubTransport",
    "expires_at",
    "expiring",
]

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
KINDS = ("api", "resolve", "content")
# httpcore reads a response 64 KiB per socket read and h11 handles each read
# in Python, in each of a seed's reading threads: with 1 MiB reads, 1 GiB to
# one node took 4.67 s instead of 7.83 s (README, Benchmarks, single node).
# A class constant, set once for this process (seeds and --local use raydf's
# transport only); a read still returns what has arrived.
SOCKET_READ_BYTES = 1 << 20
httpcore.HTTP11Connection.READ_NUM_BYTES = SOCKET_READ_BYTES
STALL_TIMEOUT_S = 20.0
EXPIRY_MARGIN_S = 60.0  # ask the hub again this long before a signed url expires


def expires_at(url: str) -> float | None:
    """When a presigned url stops working (unix time), if it says so.

    Reads ``Expires=`` (CloudFront, the Xet bridge, the emulator) and
    ``X-Amz-Date`` + ``X-Amz-Expires`` (S3 presigned urls).
    """
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if query.get("expires", "").isdigit():
        return float(query["expires"])
    if query.get("x-amz-expires", "").isdigit() and "x-amz-date" in query:
        try:
            signed = datetime.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ")
        except ValueError:
            return None
        return signed.replace(tzinfo=timezone.utc).timestamp() + int(query["x-amz-expires"])
    return None


def expiring(when: float | None) -> bool:
    """Whether a url that stops working at ``when`` should be asked for again now."""
    return when is not None and time.time() >= when - EXPIRY_MARGIN_S


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, parts.hostname or "", parts.port)


class HubTransport:
    """An httpx client bound to one hub endpoint and (maybe) one token.

    ``describe`` turns a final error response into the right
    :class:`~raydf.errors.HubError`; it never sees the token.
    """

    def __init__(
        self,
        endpoint: str,
        token: Secret | None,
        *,
        auth_headers: Callable[[str], Mapping[str, str]],
        describe: Callable[[httpx.Response], HubError],
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        stall_timeout: float = STALL_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._origin = _origin(self.endpoint)
        self._auth = dict(auth_headers(token.reveal())) if token else {}
        self._describe = describe
        self._retry = retry
        self._sleep = sleep
        self._client = httpx.Client(
            # ``read`` bounds the wait for each next byte: a stalled stream is cut
            # after ``stall_timeout`` s of silence and retried (see read_range).
            timeout=httpx.Timeout(timeout, connect=10.0, read=stall_timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"User-Agent": "raydf/0.1"},
        )
        self._count_lock = threading.Lock()
        self.requests = 0
        self.requests_by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.budget = RequestBudget(sleep=sleep)

    def __repr__(self) -> str:
        return f"<HubTransport {self.endpoint} auth={'yes' if self._auth else 'no'}>"

    def close(self) -> None:
        self._client.close()

    def get_json(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a JSON document (following redirects); errors become HubError."""
        with self.open("GET", path_or_url, params=params, kind="api") as response:
            response.read()
            return response.json()

    @contextmanager
    def open(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        stream_check: Callable[[httpx.Response], None] | None = None,
        kind: str = "api",
        stay_on_hub: bool = False,
    ) -> Iterator[httpx.Response]:
        """Send a request with retries and redirects; yield the open, successful response.

        ``stream_check`` may raise :class:`IntegrityError` for a response that
        looks successful but is not what was asked for. ``kind`` is what a
        request to the hub counts as (:data:`KINDS`). ``stay_on_hub``: a
        redirect to another host is not followed but yielded, as the official
        clients read a file's metadata from the hub's own redirect answer.
        """
        response = self._send(method, path_or_url, params, headers, stream_check, kind,
                              stay_on_hub)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path_or_url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        stream_check: Callable[[httpx.Response], None] | None,
        kind: str = "api",
        stay_on_hub: bool = False,
    ) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self.endpoint + path_or_url
        attempt = 0
        while True:
            try:
                response = self._follow(method, url, params, headers, kind, stay_on_hub)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if _tls_refused(exc):
                    raise OriginUnavailable(
                        f"{self.endpoint}: its TLS certificate could not be verified; raydf "
                        "keeps verification on. Fix the certificate, or point SSL_CERT_FILE at "
                        "the CA that signed it"
                    ) from None
                if attempt >= self._retry.retries:
                    raise OriginUnavailable(
                        f"{self.endpoint} did not answer ({type(exc).__name__}) after "
                        f"{attempt + 1} attempts; check the endpoint and the network, then retry"
                    ) from None
                self._sleep(self._retry.delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in _RETRY_STATUS:
                response.close()
                if attempt >= self._retry.retries:
                    raise self._give_up(response, attempt)
                self._sleep(self._retry.delay(attempt, response))
                attempt += 1
                continue
            if response.status_code >= 400:
                response.read()
                response.close()
                raise self._describe(response)
            if stream_check is not None:
                try:
                    stream_check(response)
                except BaseException:
                    response.close()
                    raise
            return response

    def _follow(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        kind: str = "api",
        stay_on_hub: bool = False,
    ) -> httpx.Response:
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers or {})
            on_hub = _origin(url) == self._origin
            if on_hub:
                sent.update(self._auth)
            request = self._client.build_request(method, url, params=params, headers=sent)
            counted = kind if on_hub else "content"
            with self._count_lock:
                self.requests += 1
                self.requests_by_kind[counted] += 1
            taken = self.budget.acquire(counted) if on_hub else None
            try:
                response = self._client.send(request, stream=True)
            except BaseException:
                self.budget.settle(counted, taken, None)
                raise
            if on_hub:
                self.budget.settle(counted, taken, response)
            if response.status_code not in _REDIRECT_STATUS:
                return response
            location = response.headers.get("Location")
            if not location:
                response.close()
                raise OriginUnavailable(f"{self.endpoint} sent a redirect without a Location")
            target = urljoin(str(response.url), location)
            # Read the (empty or tiny) body of the redirect before letting go of it:
            # an unread response closes its connection, and a new one per file is
            # what a repo of thousands of small files cannot afford.
            response.read()
            if stay_on_hub and _origin(target) != self._origin:
                return response  # the caller reads the redirect itself
            response.close()
            url = target
            params = None  # the Location carries its own query
        raise OriginUnavailable(f"{self.endpoint} redirected more than {_MAX_REDIRECTS} times")

    def _give_up(self, response: httpx.Response, attempt: int) -> HubError:
        if response.status_code == 429:
            return RateLimited(
                f"{self.endpoint} kept answering 429 Too Many Requests after {attempt + 1} "
                "attempts; wait a few minutes or use a token with a higher rate limit"
            )
        return OriginUnavailable(
            f"{self.endpoint} kept answering HTTP {response.status_code} after {attempt + 1} "
            "attempts; the hub may be down, retry later"
        )

    def read_range(
        self, path_or_url: str, start: int, buffer: memoryview, *, total: int | None = None,
        params: Mapping[str, Any] | None = None, kind: str = "resolve",
    ) -> str:
        """Fill ``buffer`` with bytes ``[start, start+len(buffer))``; retry short reads.

        Returns the url that served them (after redirects), for callers that
        reuse a redirect target for a file's next pieces.
        """
        length = len(buffer)
        if length == 0:
            return path_or_url
        end = start + length  # exclusive
        attempt = 0
        while True:
            try:
                return self._read_range_once(path_or_url, start, end, buffer, total, params, kind)
            except (httpx.TransportError, _ShortBody) as exc:
                # A body cut short (truncated response, reset connection) or a
                # stream silent for stall_timeout s (httpx.ReadTimeout) is
                # retried like a 5xx: the bytes received so far are discarded.
                if attempt >= self._retry.retries:
                    raise OriginUnavailable(
                        f"{self.endpoint} kept cutting the download of {path_or_url} short "
                        f"({exc}) after {attempt + 1} attempts; retry later"
                    ) from None
                self._sleep(self._retry.delay(attempt, None))
                attempt += 1

    def _read_range_once(
        self, path_or_url: str, start: int, end: int, buffer: memoryview,
        total: int | None, params: Mapping[str, Any] | None, kind: str,
    ) -> str:
        def check(response: httpx.Response) -> None:
            _check_range(response, start, end, total, path_or_url)

        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        with self.open("GET", path_or_url, params=params, headers=headers,
                       stream_check=check, kind=kind) as response:
            filled = 0
            for chunk in response.iter_raw():  # as read: no re-chunking copy
                n = len(chunk)
                if filled + n > len(buffer):
                    raise IntegrityError(
                        f"{path_or_url}: origin sent more than the {len(buffer)} bytes asked for"
                    )
                buffer[filled:filled + n] = chunk
                filled += n
            if filled != len(buffer):
                raise _ShortBody(f"got {filled} of {len(buffer)} bytes")
            return str(response.url)


def _tls_refused(exc: BaseException) -> bool:
    """A certificate that failed verification: retrying cannot help."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


class _ShortBody(Exception):
    """A response body that ended before its length: retryable."""


def _check_range(
    response: httpx.Response, start: int, end: int, total: int | None, what: str
) -> None:
    length = end - start
    if response.status_code == 200:
        whole = start == 0 and total is not None and end == total
        if whole and response.headers.get("Content-Length") == str(length):
            return
        raise IntegrityError(
            f"{what}: origin answered a ranged request for bytes {start}-{end - 1} with the "
            "whole file (HTTP 200); refusing to guess which bytes these are"
        )
    if response.status_code != 206:
        raise IntegrityError(f"{what}: expected HTTP 206 for a ranged request, got "
                             f"{response.status_code}")
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match or (int(match.group(1)), int(match.group(2))) != (start, end - 1):
        raise IntegrityError(
            f"{what}: asked for bytes {start}-{end - 1}, origin sent Content-Range "
            f"{response.headers.get('Content-Range')!r}"
        )
    if total is not None and match.group(3) not in ("*", str(total)):
        raise IntegrityError(
            f"{what}: the file is {match.group(3)} bytes at the origin, the listing said {total}"
        )
