"""A target's key: sha256 of a canonical JSON document of everything that changes its image.

PURE. In the key: the fingerprint format version, provider, model, final prompt, size, n, model
parameters, and the content hashes of references (in order) and mask. Not in it: the ``out`` path,
file names, concurrency, base URL, API key or target order. Renaming a reference changes nothing;
one changed byte in it changes the key of exactly the targets that use it. :func:`lock_entry` records
a built target under its key, with the same content hashes of its inputs.

Nor what cannot change the image: the prompt is keyed with its line ends as ``\n``, each run of other
whitespace within a line as one space, and no whitespace at its ends or its lines' ends (a prompt made a
``>`` or ``|`` block, which ends in a newline, or given CRLFs by a Windows checkout, is the same prompt;
its line breaks still count, and it is still sent as written); and ``callback_url`` (where the provider
reports, not what it draws) is left out of the parameters. A prompt already in that form, without
``callback_url``, has the key it always had. Earlier versions keyed every prompt verbatim, so a lock holds
the verbatim key of such an entry (:func:`written_key`, which they read as built) and every reader takes it
as today's (:func:`current_keys`): nothing is paid again on upgrading, nor by a teammate not yet upgraded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final

from pixmake.lockfile import Lock, LockedInput, LockedOutput, LockEntry
from pixmake.manifest import Target, is_url

__all__ = [
    "FINGERPRINT_VERSION",
    "current_key",
    "current_keys",
    "input_hash",
    "key_document",
    "keyed_params",
    "keyed_prompt",
    "lock_entry",
    "target_key",
    "verbatim_key",
    "written_key",
]

FINGERPRINT_VERSION: Final = 1
_NOT_DRAWN: Final = frozenset({"callback_url"})  # parameters that change where a result is reported, not the image


def input_hash(ref: str, file_hashes: Mapping[str, str]) -> str:
    """Content hash of one reference or mask: the file's sha256, or for a URL a hash of the URL itself."""
    if is_url(ref):
        return "url:" + hashlib.sha256(ref.encode()).hexdigest()
    return file_hashes[ref]


def key_document(
    target: Target, file_hashes: Mapping[str, str], *, provider: str = "toapis", verbatim: bool = False
) -> dict[str, Any]:
    """The canonical document hashed into the key (what ``pixmake explain`` prints); ``verbatim``: as
    :func:`verbatim_key` hashes it."""
    references = [input_hash(ref, file_hashes) for ref in target.references]
    mask = None if target.mask is None else input_hash(target.mask, file_hashes)
    return _document(target, references, mask, provider=provider, verbatim=verbatim)


def _document(
    of: Target | LockEntry, references: list[str], mask: str | None, *, provider: str, verbatim: bool
) -> dict[str, Any]:
    prompt, params = (of.prompt, of.params) if verbatim else (keyed_prompt(of.prompt), keyed_params(of.params))
    return {
        "fingerprint": FINGERPRINT_VERSION,
        "provider": provider,
        "model": of.model,
        "prompt": prompt,
        "size": of.size,
        "n": of.n,
        "params": dict(params),
        "references": references,
        "mask": mask,
    }


def keyed_prompt(prompt: str) -> str:
    """The prompt as the key sees it: line ends as ``\n``, each other run of whitespace within a line one
    space, none at the ends of the prompt or of a line."""
    lines = prompt.strip().replace("\r\n", "\n").replace("\r", "\n").split("\n")  # not U+2028 and the like
    return "\n".join(" ".join(line.split()) for line in lines)


def keyed_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parameters the key holds: those that can change the image."""
    return params if _NOT_DRAWN.isdisjoint(params) else {k: v for k, v in params.items() if k not in _NOT_DRAWN}


def _hashed(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def target_key(target: Target, file_hashes: Mapping[str, str], *, provider: str = "toapis") -> str:
    """sha256 hex of the canonical key document; raises KeyError when an input file's hash is unknown."""
    return _hashed(key_document(target, file_hashes, provider=provider))


def verbatim_key(target: Target, file_hashes: Mapping[str, str], *, provider: str = "toapis") -> str:
    """The key of the prompt and parameters exactly as written, as earlier pixmake keyed every target (their
    locks and journals hold it). The same as :func:`target_key` for a prompt in the keyed form without
    ``callback_url``."""
    return _hashed(key_document(target, file_hashes, provider=provider, verbatim=True))


def _entry_key(entry: LockEntry, *, verbatim: bool) -> str:
    references = [r.sha256 for r in entry.references]
    mask = None if entry.mask is None else entry.mask.sha256
    return _hashed(_document(entry, references, mask, provider="toapis", verbatim=verbatim))


def _keyed_as_written(entry: LockEntry) -> bool:
    """Whether today's key and the verbatim key of ``entry``'s fields are one."""
    return keyed_prompt(entry.prompt) == entry.prompt and _NOT_DRAWN.isdisjoint(entry.params)


def current_key(entry: LockEntry) -> LockEntry:
    """``entry`` under today's key when an earlier version locked it under the verbatim key of the inputs it
    records (a prompt with a trailing newline or CRLFs, a ``callback_url``), else ``entry`` itself."""
    if _keyed_as_written(entry):
        return entry
    if entry.key != _entry_key(entry, verbatim=True):
        return entry
    return replace(entry, key=_entry_key(entry, verbatim=False))


def written_key(entry: LockEntry) -> str:
    """The key a lockfile (or journal, or history) records for ``entry``: the verbatim key of its fields when
    its key is today's and the two differ, so that earlier versions, which key prompts verbatim, read the
    lock as built instead of paying again; :func:`current_key` reads it back as today's."""
    if _keyed_as_written(entry):
        return entry.key
    if entry.key != _entry_key(entry, verbatim=False):
        return entry.key
    return _entry_key(entry, verbatim=True)


def current_keys(lock: Lock) -> Lock:
    """``lock`` with every entry under today's key (see :func:`current_key`): the same object when none changes."""
    entries = {name: current_key(entry) for name, entry in lock.entries.items()}
    if all(entries[name] is entry for name, entry in lock.entries.items()):
        return lock
    return Lock(MappingProxyType(entries))


def lock_entry(
    target: Target,
    key: str,
    file_hashes: Mapping[str, str],
    outputs: tuple[LockedOutput, ...],
    *,
    task_id: str | None = None,
    emulator: bool = False,
    pixels: Mapping[str, str | None] = MappingProxyType({}),
) -> LockEntry:
    """The lock entry recording ``outputs`` as ``target``'s, built under ``key`` from its inputs' current hashes
    (and ``pixels``, the digests of what those show, by sha256, where known)."""

    def locked(path: str) -> LockedInput:
        sha256 = input_hash(path, file_hashes)
        return LockedInput(path, sha256, pixels.get(sha256))

    return LockEntry(
        key=key,
        model=target.model,
        prompt=target.prompt,
        size=target.size,
        n=target.n,
        outputs=outputs,
        references=tuple(map(locked, target.references)),
        mask=None if target.mask is None else locked(target.mask),
        # A read-only view is shared, not copied (a lock entry is kept for every target of a build).
        params=target.params if isinstance(target.params, MappingProxyType) else MappingProxyType(dict(target.params)),
        task_id=task_id,
        emulator=emulator,
    )
