"""The emulator's knobs: one frozen value, validated once, buildable from JSON or CLI strings.

Defaults describe a well-behaved, fast ToAPIs: any ``Bearer sk-...`` key, 50 ms tasks, the documented
default-group rate limits (toapis-api.md §4.2), no faults. Every fault knob is a probability drawn from a
seeded ``random.Random``, so a fault sequence is reproducible for a given seed and request order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_CONFIG",
    "FAULT_GROUPS",
    "EmulatorConfig",
    "ErrorCodeStyle",
    "ExpiredResult",
    "ResultStyle",
    "StatusDialect",
    "config_from_mapping",
    "url_origin",
]

StatusDialect = Literal["queued", "submitted", "pending"]
ErrorCodeStyle = Literal["string", "int"]
ResultStyle = Literal["result", "images", "data"]
DuplicateBusinessId = Literal["create", "reject"]
ExpiredResult = Literal[410, 404, 403]

_CHOICES: Final[Mapping[str, tuple[object, ...]]] = {
    "status_dialect": get_args(StatusDialect),
    "error_code_style": get_args(ErrorCodeStyle),
    "result_style": get_args(ResultStyle),
    "duplicate_business_id": get_args(DuplicateBusinessId),
    "expired_result_status": get_args(ExpiredResult),
}
FAULT_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "submit": (
        "p_429",
        "p_500",
        "p_502",
        "p_504_html",
        "p_503_unavailable",
        "p_drop_after_submit",
        "p_504_after_submit",
    ),
    "query": ("p_429", "p_500", "p_502", "p_504_html"),
    "upload": ("p_500", "p_502", "p_504_html"),
    "download": ("p_slow_download", "p_truncated_download", "p_403_download", "p_404_download"),
    "outcome": ("p_task_failed", "p_content_policy", "p_task_no_balance", "p_short_result", "p_long_result"),
}
"""The fault knobs each kind of request (or a task's outcome) draws from, in draw order; the query and
upload groups are subsets of the submit group, so checking submit, download and outcome sums covers all."""
_SUMMED_GROUPS: Final = ("submit", "download", "outcome")
_DEFAULT_PORTS: Final[Mapping[str, int]] = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Every knob of the emulator; the defaults are a well-behaved fast server.

    Rate: ``*_rps=None`` disables that bucket. Faults: probabilities in [0, 1]; the submit faults, the
    outcome faults and the download faults are each one categorical draw, so each group must sum to ≤ 1.
    ``error_code_style="string"`` returns the error bodies exactly as documented (which mixes string and
    integer codes, §4.1); ``"int"`` turns every HTTP error ``code`` into the integer status.

    ``p_short_result``: the task completes with one image fewer than ``n`` (so an ``n=1`` task completes
    with an empty result list) and is still charged ``n``: charges are pre-deducted by ``n`` at submit
    (§2.1) and nothing documents a refund for a partial result (§7 q1). ``p_long_result``: one image more
    than ``n`` (nothing documents that ``result.data`` holds exactly ``n``, §7 q1). ``upload_ttl``: seconds an upload
    is served and accepted in submits (None: forever; the lifetime is undocumented, §5); after it the
    file answers 410 and a submit naming it answers 400. ``lookup_lag``: seconds a new task stays
    invisible to a lookup by its ``client_business_id`` (a gateway that answers before the task is
    stored; undocumented either way, so a client must not trust an early "not found").
    ``lookup_by_business_id=False`` answers every lookup by ``client_business_id`` 404, as a gateway that
    follows the English docs only might (§2.1: such lookups are documented in Chinese alone).
    ``result_times=False`` leaves ``completed_at`` and ``expires_at`` out of a completed status (the docs'
    top-level ``url`` shape shows neither, §3.3). ``expired_result_status``: what a result file answers
    after ``expires_at`` (the docs suggest 404 or 410, A.7, but do not say; signed CDN and object-store
    links commonly answer 403).
    ``webhook_url``: the Token's default webhook (§2.1, [D-wh]). None (the default) means webhooks are not
    configured, so a submit with ``callback_url`` answers ``400 webhook_not_configured``; once set, a
    ``callback_url`` must keep its scheme, host and port (path and query may differ). Nothing is delivered.
    ``users``: which user each API key belongs to. A user's keys share the rate buckets (§4.2) and see each
    other's tasks, by id or ``client_business_id`` (§1: scoped to the key's user); a key not listed is a
    user of its own, so by default no two keys share anything. From the command line: ``sk-a:ann,sk-b:ann``.
    """

    api_key: str | None = None
    latency: float = 0.05
    latency_jitter: float = 0.0
    queued_fraction: float = 0.2
    result_ttl: float = 86400.0
    expired_result_status: ExpiredResult = 410
    upload_ttl: float | None = None
    submit_rps: float | None = 5.0
    submit_burst: int = 50
    query_rps: float | None = 50.0
    query_burst: int = 500
    p_429: float = 0.0
    p_500: float = 0.0
    p_502: float = 0.0
    p_504_html: float = 0.0
    p_503_unavailable: float = 0.0
    p_drop_after_submit: float = 0.0
    p_504_after_submit: float = 0.0
    p_task_failed: float = 0.0
    p_content_policy: float = 0.0
    p_task_no_balance: float = 0.0
    p_short_result: float = 0.0
    p_long_result: float = 0.0
    p_slow_download: float = 0.0
    p_truncated_download: float = 0.0
    p_403_download: float = 0.0
    p_404_download: float = 0.0
    slow_download_seconds: float = 1.0
    status_dialect: StatusDialect = "queued"
    error_code_style: ErrorCodeStyle = "string"
    top_level_url: bool = False
    result_times: bool = True
    result_style: ResultStyle = "result"
    duplicate_business_id: DuplicateBusinessId = "create"
    quota_images: int | None = None
    lookup_lag: float = 0.0
    lookup_by_business_id: bool = True
    webhook_url: str | None = None
    users: Mapping[str, str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse impossible knob values early, with the knob's name."""
        groups = [FAULT_GROUPS[name] for name in _SUMMED_GROUPS]
        for name in (*(knob for group in groups for knob in group), "queued_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        for group in groups:
            if sum(getattr(self, name) for name in group) > 1.0 + 1e-9:
                raise ValueError(f"the probabilities {', '.join(group)} must sum to at most 1")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("latency", "latency_jitter", "result_ttl", "slow_download_seconds", "upload_ttl"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.users is not None:  # a private copy: the caller's dict may change later
            object.__setattr__(self, "users", _to_users("users", self.users))
        if self.webhook_url is not None and url_origin(self.webhook_url) is None:
            raise ValueError(f"webhook_url must be an http(s) URL with a host, got {self.webhook_url!r}")


def url_origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL, the default port filled in; None if it is not one.

    ``url_origin("https://Hooks.example.com/a?b=1") == ("https", "hooks.example.com", 443)``.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS[parts.scheme]


def _to_bool(name: str, value: object) -> object:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be a boolean")


def _to_int(name: str, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _to_float(name: str, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _to_str(name: str, value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _to_users(name: str, value: object) -> dict[str, str]:
    """``{key: user}`` from a JSON object or from ``KEY:USER`` pairs separated by commas."""
    users = value
    if isinstance(value, str):
        pairs = [item.partition(":") for item in value.split(",")]
        if all(separator for _, separator, _ in pairs):
            users = {key.strip(): user.strip() for key, _, user in pairs}
    if isinstance(users, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in users.items()
    ):
        return dict(users)
    raise ValueError(f"{name} must map API keys to user names (KEY:USER,KEY:USER), got {value!r}")


_CONVERTERS: Final[Mapping[type, Callable[[str, object], object]]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    dict: _to_users,
}


def _coerce(name: str, value: object, default: object) -> object:
    """Turn a JSON or command-line value into the type of the knob's default (None allowed where it is)."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
        if name in _NULLABLE:
            return None
        raise ValueError(f"{name} may not be null")
    return _CONVERTERS[_KINDS.get(name, type(default))](name, value)


_NULLABLE: Final = frozenset(
    {"api_key", "upload_ttl", "submit_rps", "query_rps", "quota_images", "webhook_url", "users"}
)
_KINDS: Final[Mapping[str, type]] = {
    "api_key": str,
    "webhook_url": str,
    "upload_ttl": float,
    "submit_rps": float,
    "query_rps": float,
    "quota_images": int,
    "users": dict,
}


DEFAULT_CONFIG: Final = EmulatorConfig()
"""The defaults: a well-behaved fast server."""


def config_from_mapping(data: Mapping[str, object], base: EmulatorConfig | None = None) -> EmulatorConfig:
    """Return ``base`` (default: the defaults) with the knobs in ``data`` replaced.

    Values may be JSON-typed or strings (as from ``--knob name=value``). Raises ``ValueError`` for an
    unknown knob or a value of the wrong type or range.
    """
    base = base or DEFAULT_CONFIG
    fields = {field.name: getattr(base, field.name) for field in dataclasses.fields(EmulatorConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown emulator knob(s): {', '.join(unknown)}; the knobs are {', '.join(sorted(fields))}")
    changes = {name: _coerce(name, value, fields[name]) for name, value in data.items()}
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # checked by _coerce and __post_init__
