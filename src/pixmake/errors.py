"""The whole error tree of pixmake, in one place.

::

    PixmakeError
    ├── UserError                 one line, no traceback, exit 3 (nothing ran)
    │   ├── ManifestError         file, line, column, field path ("targets.hero.size")
    │   │   └── UnsafePathError   a manifest path escapes the project root (diagnostics of kind "unsafe-path")
    │   ├── LockfileError         corrupt, or written by a newer pixmake (refused, never rebuilt silently)
    │   ├── ConfigError           bad flag, environment variable or setting; missing API key
    │   └── ProjectBusyError      another build holds the project lock
    ├── StorageError              a write to the project's disk failed (an output, .pixmake/, the lockfile)
    ├── BudgetError               a submit the plan did not announce would pay past --max-images
    └── ProviderError             raised only by providers/; carries HTTP status and server message
        ├── AuthError             401/403: fatal, cancels the whole build
        ├── QuotaError            402: no balance left; fatal, cancels the whole build
        ├── RateLimitedError      429 or 503 rate_limit_unavailable: retryable, has retry_after
        ├── ServerError           5xx: retryable for idempotent calls only
        ├── NetworkError          a transport failure; ``sent`` says whether the request may have arrived
        ├── RequestRejectedError  400/404/422: not retryable; shows the server's message
        ├── GenerationFailedError the task finished as failed
        └── BadResultError        the task or download delivered something unusable (count, decode)

Exceptions carry data and never print. Messages are built from fields and never include an API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AuthError",
    "BadResultError",
    "BudgetError",
    "ConfigError",
    "Diagnostic",
    "GenerationFailedError",
    "InputChangedError",
    "LockfileError",
    "ManifestError",
    "NetworkError",
    "PixmakeError",
    "ProjectBusyError",
    "ProviderError",
    "QuotaError",
    "RateLimitedError",
    "RequestRejectedError",
    "ServerError",
    "StorageError",
    "UnsafePathError",
    "UserError",
]


class PixmakeError(Exception):
    """Base of every error pixmake raises on purpose."""


class UserError(PixmakeError):
    """Something the user can fix; reported in one line, exit code 3."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a manifest, located precisely enough for an editor to underline it.

    ``kind`` classifies it for machines (``"manifest"``, ``"unsafe-path"``, ``"input"``); ``severity`` is
    ``"error"`` or ``"warning"``. An empty ``file`` (a path checked outside any manifest) prints no location.
    """

    file: str
    line: int
    column: int
    field: str
    message: str
    severity: str = "error"
    kind: str = "manifest"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: " if self.file else ""
        return f"{where}{self.field}: {self.message}" if self.field else f"{where}{self.message}"

    def as_dict(self) -> dict[str, str | int]:
        """The diagnostic as a JSON-ready dict (``validate --json``)."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
            "severity": self.severity,
            "kind": self.kind,
        }


class ManifestError(UserError):
    """The manifest is invalid; carries every diagnostic found, sorted by position."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics, key=lambda d: (d.file, d.line, d.column, d.field)))
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @classmethod
    def of(cls, diagnostics: Sequence[Diagnostic]) -> ManifestError:
        """The right error for these diagnostics: an :class:`UnsafePathError` if any is of kind "unsafe-path"."""
        unsafe = [d for d in diagnostics if d.kind == "unsafe-path"]
        if unsafe:
            first = min(unsafe, key=lambda d: (d.file, d.line, d.column))
            return UnsafePathError(first.field, "", diagnostics=diagnostics)
        return cls(diagnostics)

    @classmethod
    def at(cls, file: str, line: int, column: int, field: str, message: str) -> ManifestError:
        """Build an error with a single diagnostic."""
        return cls([Diagnostic(file, line, column, field, message)])


class LockfileError(UserError):
    """The lockfile is corrupt or was written by a newer pixmake."""


class ConfigError(UserError):
    """A flag, environment variable or provider setting is invalid or missing."""


class UnsafePathError(ManifestError):
    """A path in the manifest resolves outside the project root (absolute, ``..`` or a symlink).

    A :class:`ManifestError` whose diagnostics include at least one of kind ``"unsafe-path"``; ``field``
    names the first such one and ``path`` the offending path when the raiser knew it (its message always
    shows it). Other problems found in the same pass ride along in ``diagnostics``, so one run still
    reports everything; the exit code stays 3.
    """

    def __init__(self, field: str, path: str, *, diagnostics: Sequence[Diagnostic] = ()) -> None:
        self.field = field
        self.path = path
        if not diagnostics:
            message = f"path {path!r} leaves the project root"
            diagnostics = [Diagnostic("", 0, 0, field, message, kind="unsafe-path")]
        super().__init__(diagnostics)


class ProjectBusyError(UserError):
    """Another pixmake build holds the project lock."""


class StorageError(PixmakeError):
    """A write to the project's disk failed: an output, ``.pixmake/`` or the lockfile.

    ``build_wide`` is True when no other target could be written either (the disk is full or
    read-only, or ``.pixmake/`` is unusable): the build stops submitting. Paid results stay journaled.
    """

    def __init__(self, message: str, *, build_wide: bool) -> None:
        super().__init__(message)
        self.build_wide = build_wide


class InputChangedError(PixmakeError):
    """A target's local reference or mask changed (or went away) between the plan and its upload: the
    target is not submitted, since its key and its lock entry would describe other bytes than those sent."""


class BudgetError(PixmakeError):
    """A submit was not sent: it would pay past ``--max-images`` (a resumed task the provider no longer has)."""


class ProviderError(PixmakeError):
    """A provider call failed; raised only by ``pixmake.providers``."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message if status is None else f"HTTP {status}: {message}")


class AuthError(ProviderError):
    """The API key was refused (401/403); the whole build stops."""


class QuotaError(ProviderError):
    """The account has no balance left (402); the whole build stops."""


class RateLimitedError(ProviderError):
    """The provider asked us to slow down (429, 503 rate_limit_unavailable)."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class ServerError(ProviderError):
    """The provider or its gateway failed (5xx, HTML error page)."""


class NetworkError(ProviderError):
    """A transport failure. ``sent`` is False only when the request surely never left this machine.

    ``reason`` is the short cause for people ("connection refused", "host name not found", "timed out").
    """

    def __init__(self, message: str, *, sent: bool, reason: str = "") -> None:
        super().__init__(message)
        self.sent = sent
        self.reason = reason or message


class RequestRejectedError(ProviderError):
    """The provider refused the request as invalid (400/404/422); retrying will not help."""


class GenerationFailedError(ProviderError):
    """The task ran and finished as failed."""


class BadResultError(ProviderError):
    """A finished task delivered an unusable result: wrong image count, undecodable or truncated bytes."""
