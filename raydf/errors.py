"""The one error tree of raydf.

Every error raydf raises on purpose is a :class:`RaydfError`; each message says
what happened and what to do about it. Errors from httpx, pyarrow and Ray are
translated where they enter (``raise ... from exc``). All of them pickle, since
they cross actor boundaries, and none of them ever carries a token.

::

    RaydfError
    ├── InvalidURL            malformed or unsupported URL
    ├── ConfigError           bad or conflicting options
    ├── HubError              the origin answered with an error
    │   ├── AuthError         401: no token or a wrong token
    │   ├── GatedRepoError    gated repo, access not granted
    │   ├── AccessDenied      403: the token may not read this repo
    │   ├── RepoNotFound      no such repo (or private and no token)
    │   ├── RevisionNotFound  no such branch, tag or commit
    │   ├── EntryNotFound     no such file in the repo
    │   ├── RateLimited       429 after every retry
    │   └── OriginUnavailable 5xx, timeouts, refused connections after every retry
    ├── IntegrityError        a piece or file failed its digest, a bad range answer
    ├── UnsafeListing         a listing entry would escape the destination
    ├── StorageError          the destination or cache cannot be written
    │   └── DestinationBusy   another job is writing the same destination
    └── FanoutError           a fan-out did not complete on every target node
        └── SenderFailed      a holder was briefly unavailable or missed a pull's deadline
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AuthError",
    "ConfigError",
    "DestinationBusy",
    "EntryNotFound",
    "FanoutError",
    "GatedRepoError",
    "HubError",
    "IntegrityError",
    "InvalidURL",
    "OriginUnavailable",
    "RateLimited",
    "RaydfError",
    "RepoNotFound",
    "RevisionNotFound",
    "SenderFailed",
    "StorageError",
    "UnsafeListing",
    "exit_code",
    "unwrap",
]


class RaydfError(Exception):
    """Base of every error raydf raises on purpose.

    ``str(err)`` is a complete one-line message fit for a terminal.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.message,))

    def __str__(self) -> str:
        return self.message


class InvalidURL(RaydfError, ValueError):
    """A URL raydf cannot parse or does not support."""


class ConfigError(RaydfError, ValueError):
    """Options that are malformed or contradict each other."""


class HubError(RaydfError):
    """The origin hub answered with an error."""


class AuthError(HubError):
    """The hub wants a token, or rejected the one given."""


class GatedRepoError(HubError):
    """The repo is gated and the token's user has not been granted access."""


class AccessDenied(HubError):
    """The token is valid but may not read this repo."""


class RepoNotFound(HubError):
    """No such repo, or a private one read without a token."""


class RevisionNotFound(HubError):
    """No such branch, tag or commit in the repo."""


class EntryNotFound(HubError):
    """No such file in the repo at that revision."""


class RateLimited(HubError):
    """The hub kept answering 429 after every retry."""


class OriginUnavailable(HubError):
    """The hub kept failing (5xx, timeouts, refused connections) after every retry."""


class IntegrityError(RaydfError):
    """Bytes that do not match their digest or their requested range."""


class UnsafeListing(RaydfError):
    """A listing entry that would be written outside the destination."""


class StorageError(RaydfError, OSError):
    """The destination or the cache cannot be written."""


class DestinationBusy(StorageError):
    """Another job (another revision, token or filter) is writing that destination."""


class FanoutError(RaydfError):
    """A fan-out that did not complete on every target node."""


class SenderFailed(FanoutError):
    """A holder did not deliver a piece (briefly unavailable, or past the pull's
    deadline): the piece is taken again, and the holder is blamed, not the receiver."""


def unwrap(exc: BaseException) -> BaseException:
    """The raydf error inside a Ray task error, so users see one clean line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RaydfError):
        return cause
    return exc


def exit_code(err: BaseException) -> int:
    """The command's exit status for ``err`` (the README's table): 2 bad input,
    3 the hub refused or failed, 4 integrity, 5 storage, 1 anything else."""
    if isinstance(err, (InvalidURL, ConfigError)):
        return 2
    if isinstance(err, HubError):
        return 3
    if isinstance(err, (IntegrityError, UnsafeListing)):
        return 4
    if isinstance(err, StorageError):
        return 5
    return 1  # FanoutError, and any other failure to deliver
