"""Resolve provider settings once: defaults → manifest ``provider:`` → environment → flags.

PURE: the environment arrives as a mapping (the CLI passes ``os.environ``, tests pass a dict).
The result is a frozen :class:`Settings` handed explicitly to the build. The API key is held in a
:class:`Secret` whose ``repr`` and ``str`` are redacted, so it cannot leak into a log or message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from pixmake.errors import ConfigError
from pixmake.manifest import DEFAULT_BASE_URL, ProviderConfig

__all__ = ["Secret", "Settings", "display_url", "parse_rate", "resolve"]

_RATE: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|sec|min|h)\s*$")
_PER_SECOND: Final = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` are redacted; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the places that send it (and the one that takes it out of answers)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the executor and provider need, resolved once."""

    base_url: str
    api_key: Secret | None
    api_key_env: str
    concurrency: int
    submit_rate: float  # submits per second
    poll_interval: float | None  # None: the documented pace (5 s, then 5-10 s with jitter)
    request_timeout: float = 60.0
    max_attempts: int = 8
    # Seconds a task may take before the target fails (it stays journaled): well under a CI job's timeout
    # (an hour on GitLab), so that a stuck task ends the build cleanly, its journal kept, not killed with it.
    max_wait: float = 900.0
    # Seconds a paid task's polls and downloads go on retrying through errors after max_attempts: a network
    # down while a laptop wakes, a gateway restarting, a 429 storm. (A target that gives up stays journaled.)
    retry_window: float = 600.0
    query_rate: float = 40.0  # status queries per second (documented default group: 50/s, §4.2)
    backoff_base: float = 1.0  # first retry waits up to this many seconds (1 s / 2 s / 4 s ..., full jitter)
    backoff_cap: float = 60.0  # no retry waits longer (a Retry-After may)
    max_retry_after: float = 3600.0  # a provider's Retry-After is honoured up to this many seconds
    # After a submit with an unknown outcome, a lookup's "not found" is trusted only this many seconds
    # after the failure: a slow gateway may store the task after it answered (undocumented either way).
    lookup_grace: float = 30.0
    emulator: bool = False  # the bundled emulator (``build --emulator``): its tasks are no provider's
    key_lookalikes: tuple[str, ...] = ()  # with no key: set variables named like api_key_env (a typo?)
    key_empty: bool = False  # with no key: api_key_env is set, to nothing (a CI secret this job cannot see?)


_KEY_ENV: Final = "TOAPIS_API_KEY"  # the default variable: its value is the user's choice, whatever it looks like
_KEY_PREFIX: Final = "sk-"  # every ToAPIs key's (toapis-api.md §1)


def display_url(url: str) -> str:
    """``url`` fit for a message: without user, password, query or fragment (any of them may hold a secret)."""
    # Up to the last "@" before the path, as URL parsers split it: a password may hold an "@".
    match = re.match(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/?#]*@)?(?P<rest>[^?#]*)", url)
    return url.split("?", 1)[0].split("#", 1)[0] if match is None else match["scheme"] + match["rest"]


def _lookalikes(name: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Set variables whose names look like ``name`` (``TOAPIS_KEY``, ``TOAPI_API_KEY``): only names, never values."""
    import difflib

    candidates = [other for other, value in environ.items() if value.strip() and other != name]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.8)  # OPENAI_API_KEY: 0.79
    return tuple(sorted(close))


def _check_manifest_url(url: str) -> None:
    """Refuse a manifest's base URL that would send the key anywhere but the provider's own hosts or this machine.

    A manifest is committed: a pull request that changed ``provider.base_url`` would otherwise send the key
    of whoever builds it (a CI job) to a host of its choosing. Where the key goes is the environment's choice.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    default = urlsplit(DEFAULT_BASE_URL).hostname or ""
    if parts.scheme == "https" and (host == default or host.endswith("." + default)):
        return
    shown = display_url(url)
    where = (host or "an unknown host") + (" in the clear" if parts.scheme == "http" else "")
    raise ConfigError(
        f"provider.base_url {shown!r} would send the API key to {where}:"
        f" a manifest may name only https://{default} (or this machine), since a change to it could send the key"
        f" anywhere; set PIXMAKE_BASE_URL={shown} where builds run instead"
    )


def parse_rate(text: str) -> float:
    """``"60/min"`` → 1.0 submits per second; raises ConfigError for anything else."""
    match = _RATE.match(text)
    if match is None:
        raise ConfigError(f"rate {text!r} is not COUNT/UNIT with UNIT s, min or h (for example 60/min)")
    if float(match.group(1)) <= 0:
        raise ConfigError(f"rate {text!r} allows no submit at all: its COUNT must be more than 0")
    return float(match.group(1)) / _PER_SECOND[match.group(2)]


def _positive_float(name: str, raw: str, *, zero: bool = False, unit: str = "seconds") -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of {unit}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name}={raw!r} must be a {'non-negative' if zero else 'positive'} number of {unit}")
    return value


def resolve(
    provider: ProviderConfig,
    environ: Mapping[str, str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | None = None,
    poll_interval: float | None = None,
) -> Settings:
    """Settings from the manifest's provider block, the environment and explicit overrides (flags win)."""
    url = base_url or environ.get("PIXMAKE_BASE_URL") or provider.base_url
    source = "base URL" if base_url else "PIXMAKE_BASE_URL" if environ.get("PIXMAKE_BASE_URL") else "provider.base_url"
    if not re.match(r"^https?://[^\s/]+", url):
        # Shown only when it looks like a URL, less its credentials: it may be a key put in the wrong variable.
        shown = f" {display_url(url)!r}" if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) else ""
        raise ConfigError(f"{source}{shown} is not an http(s) URL")
    try:  # a port that is no number, a "#" or "/" in a password: never echoed, it may be a secret's part
        parts = urllib.parse.urlsplit(url)
        valid = bool(parts.hostname) and (parts.port is None or parts.port > 0) and not (parts.query or parts.fragment)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(
            f"{source} is not a valid base URL (its host or port, or a ? or # in it; a password's / ? # or @ must "
            "be %-escaped)"
        )
    key = api_key if api_key is not None else environ.get(provider.api_key_env)
    if key is not None:
        key = key.strip()  # a secret pasted with its line's end
        if not key.isprintable() or " " in key:
            raise ConfigError(f"the API key in {provider.api_key_env} holds a space or a control character")
        if not base_url and not environ.get("PIXMAKE_BASE_URL"):
            _check_manifest_url(url)
            if key and api_key is None and provider.api_key_env != _KEY_ENV and not key.startswith(_KEY_PREFIX):
                # The manifest (a pull request's) names the variable, and where it goes: no other secret of a job.
                raise ConfigError(
                    f"provider.api_key_env names {provider.api_key_env}, which holds no ToAPIs key (those start "
                    f"with {_KEY_PREFIX}): pixmake sends it nowhere; name the variable that holds your key"
                )
    interval = poll_interval
    if interval is None and environ.get("PIXMAKE_POLL_INTERVAL"):
        interval = _positive_float("PIXMAKE_POLL_INTERVAL", environ["PIXMAKE_POLL_INTERVAL"])
    if interval is None:
        interval = provider.poll_interval
    jobs = concurrency if concurrency is not None else provider.concurrency
    if jobs < 1:
        raise ConfigError(f"concurrency must be at least 1, not {jobs}")
    settings = Settings(
        base_url=url.rstrip("/"),
        api_key=Secret(key) if key else None,
        api_key_env=provider.api_key_env,
        key_lookalikes=() if key else _lookalikes(provider.api_key_env, environ),
        key_empty=key is not None and not key,
        concurrency=jobs,
        submit_rate=parse_rate(provider.rate),
        poll_interval=interval,
    )
    return dataclasses.replace(settings, **_pacing(environ))


def _pacing(environ: Mapping[str, str]) -> dict[str, Any]:
    """Pacing overrides from the environment (mostly for tests and benchmarks against the emulator)."""
    names = {
        "PIXMAKE_BACKOFF_BASE": "backoff_base",
        "PIXMAKE_MAX_RETRY_AFTER": "max_retry_after",
        "PIXMAKE_QUERY_RATE": "query_rate",
        "PIXMAKE_LOOKUP_GRACE": "lookup_grace",
        "PIXMAKE_MAX_WAIT": "max_wait",
        "PIXMAKE_RETRY_WINDOW": "retry_window",
    }
    # 0: trust the first "not found" (a provider known to store at once); give up after max_attempts alone
    zero_ok = {"PIXMAKE_LOOKUP_GRACE", "PIXMAKE_RETRY_WINDOW"}
    units = {"PIXMAKE_QUERY_RATE": "queries per second"}
    return {
        field: _positive_float(env, environ[env], zero=env in zero_ok, unit=units.get(env, "seconds"))
        for env, field in names.items()
        if environ.get(env)
    }
