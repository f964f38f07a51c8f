"""What a project has learned of its provider's lookups by ``client_business_id``: ``.pixmake/lookups.json``.

Shell. Only the provider's Chinese docs document such lookups (toapis-api.md §2.1): a gateway that answered
every one "not found" would have each submit whose outcome is unknown (a 5xx, a dropped connection) paid
for twice. So before a build trusts a "not found" it looks up a task it knows was created, its *witness*.
The first task each build sees created is kept here, by base URL and account (a fingerprint of the key: a
task of another account's is "not found" to this one), so a later build can check before it has created
anything (one that starts by resuming an interrupted build's submits); so is the verdict. The file
only spares a payment: one that cannot be read or written is ignored.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pixmake.models import RESULT_LIFETIME
from pixmake.store import atomic_write, read_json

__all__ = ["LookupRecord", "Witness"]

_KEPT: Final = 8  # base URLs remembered at most (the newest witnesses)


@dataclass(frozen=True, slots=True)
class Witness:
    """A task the provider created: the ``client_business_id`` it was sent with, its id, and when (``time.time()``)."""

    client_business_id: str
    task_id: str
    created: float


class LookupRecord:
    """The witness and verdict ``.pixmake/lookups.json`` keeps for one base URL (with the account it is for)."""

    def __init__(self, path: Path, base_url: str) -> None:
        self.path = path
        self.base_url = base_url
        self._all: dict[str, Any] | None = None

    def witness(self) -> Witness | None:
        """The kept witness while the provider surely still has its task (its results' lifetime), else None."""
        said = self._mine().get("witness")
        try:
            cbid, task_id, created = said  # type: ignore[misc]
            witness = Witness(str(cbid), str(task_id), float(created))
        except (TypeError, ValueError):
            return None
        return witness if 0 <= time.time() - witness.created < RESULT_LIFETIME else None

    def verdict(self) -> bool | None:
        """Whether a lookup of the witness found it, when a build asked (None: never asked)."""
        work = self._mine().get("work")
        return work if isinstance(work, bool) else None

    def saw_created(self, witness: Witness) -> None:
        """Keep ``witness`` (with the verdict already kept)."""
        self._save({**self._mine(), "witness": [witness.client_business_id, witness.task_id, witness.created]})

    def judged(self, work: bool) -> None:
        """Keep the verdict of a lookup of a witness."""
        self._save({**self._mine(), "work": work})

    def _load(self) -> dict[str, Any]:
        if self._all is None:
            loaded = read_json(self.path)
            self._all = loaded if isinstance(loaded, dict) else {}
        return self._all

    def _mine(self) -> dict[str, Any]:
        mine = self._load().get(self.base_url)
        return mine if isinstance(mine, dict) else {}

    def _save(self, mine: dict[str, Any]) -> None:
        def age(item: tuple[str, Any]) -> float:
            said = item[1].get("witness") if isinstance(item[1], dict) else None
            return (
                -float(said[2])
                if isinstance(said, list) and len(said) == 3 and isinstance(said[2], int | float)
                else 0.0
            )

        others = {url: value for url, value in self._load().items() if url != self.base_url}
        kept = dict(sorted(others.items(), key=age)[: _KEPT - 1])
        self._all = {self.base_url: mine, **kept}
        with contextlib.suppress(OSError):
            atomic_write(self.path, json.dumps(self._all, sort_keys=True).encode(), durable=False)
