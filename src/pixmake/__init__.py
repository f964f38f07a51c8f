"""pixmake: make for AI-generated images.

A YAML manifest declares image targets; pixmake fingerprints their inputs, plans what changed against
``pixmake.lock`` and generates only that through a provider's task API. Heavy modules are imported
lazily so that ``import pixmake`` stays cheap (the no-op ``pixmake plan`` depends on it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "build", "plan", "validate"]

if TYPE_CHECKING:
    from pixmake.api import build, plan, validate


def __getattr__(name: str) -> Any:
    if name in {"build", "plan", "validate"}:
        from pixmake import api

        return getattr(api, name)
    raise AttributeError(f"module 'pixmake' has no attribute {name!r}")
