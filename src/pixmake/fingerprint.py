"""A target's key: sha256 of a canonical JSON document of everything that changes its image.

PURE. In the key: the fingerprint format version, provider, model, final prompt, size, n, model
parameters, and the content hashes of references (in order) and mask. Not in it: the ``out`` path,
file names, concurrency, base URL, API key or target order. Renaming a reference changes nothing;
one changed byte in it changes the key of exactly the targets that use it. :func:`lock_entry` records
a built target under its key, with the same content hashes of its inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from pixmake.lockfile import LockedInput, LockedOutput, LockEntry
from pixmake.manifest import Target, is_url

__all__ = ["FINGERPRINT_VERSION", "input_hash", "key_document", "lock_entry", "target_key"]

FINGERPRINT_VERSION: Final = 1


def input_hash(ref: str, file_hashes: Mapping[str, str]) -> str:
    """Content hash of one reference or mask: the file's sha256, or for a URL a hash of the URL itself."""
    if is_url(ref):
        return "url:" + hashlib.sha256(ref.encode()).hexdigest()
    return file_hashes[ref]


def key_document(target: Target, file_hashes: Mapping[str, str], *, provider: str = "toapis") -> dict[str, Any]:
    """The canonical document hashed into the key (what ``pixmake explain`` prints)."""
    return {
        "fingerprint": FINGERPRINT_VERSION,
        "provider": provider,
        "model": target.model,
        "prompt": target.prompt,
        "size": target.size,
        "n": target.n,
        "params": dict(target.params),
        "references": [input_hash(ref, file_hashes) for ref in target.references],
        "mask": None if target.mask is None else input_hash(target.mask, file_hashes),
    }


def target_key(target: Target, file_hashes: Mapping[str, str], *, provider: str = "toapis") -> str:
    """sha256 hex of the canonical key document; raises KeyError when an input file's hash is unknown."""
    document = key_document(target, file_hashes, provider=provider)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def lock_entry(
    target: Target,
    key: str,
    file_hashes: Mapping[str, str],
    outputs: tuple[LockedOutput, ...],
    *,
    task_id: str | None = None,
    emulator: bool = False,
) -> LockEntry:
    """The lock entry recording ``outputs`` as ``target``'s, built under ``key`` from its inputs' current hashes."""
    mask = None if target.mask is None else LockedInput(target.mask, input_hash(target.mask, file_hashes))
    return LockEntry(
        key=key,
        model=target.model,
        prompt=target.prompt,
        size=target.size,
        n=target.n,
        outputs=outputs,
        references=tuple(LockedInput(ref, input_hash(ref, file_hashes)) for ref in target.references),
        mask=mask,
        # A read-only view is shared, not copied (a lock entry is kept for every target of a build).
        params=target.params if isinstance(target.params, MappingProxyType) else MappingProxyType(dict(target.params)),
        task_id=task_id,
        emulator=emulator,
    )
