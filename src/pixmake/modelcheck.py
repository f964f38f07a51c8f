"""Check one expanded target against the pure rules of the model table, before any money is spent.

PURE. Called by :func:`pixmake.manifest.parse_manifest` for every target once its fields are
interpolated; the rules are read from :data:`pixmake.models.MODELS` (prompt length, size, n,
reference count, images in all, mask support, documented parameters). The rules that need the
image files themselves run later, in :mod:`pixmake.inputs`. Problems are reported through the
``add`` (error) and ``warn`` callables, at the field path each comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pixmake.models import MODELS
from pixmake.schema import FieldPath, suggest

__all__ = ["ModelRequest", "RequestPaths", "check_model"]

_Report = Callable[[FieldPath, str], None]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What a target asks of its model, after interpolation and defaults."""

    model: str
    prompt: str
    size: str
    n: int
    references: tuple[str, ...]
    mask: str | None
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RequestPaths:
    """Where the target's fields were written: its own entry, or ``defaults`` for inherited ones."""

    target: FieldPath
    model: FieldPath
    size: FieldPath
    n: FieldPath


def check_model(r: ModelRequest, p: RequestPaths, add: _Report, warn: _Report) -> None:
    """The pure rules of :data:`pixmake.models.MODELS`: prompt length, size, n, reference count, mask."""
    model, prompt, size, n, references, mask, params = r.model, r.prompt, r.size, r.n, r.references, r.mask, r.params
    where, model_path, size_path, n_path = p.target, p.model, p.size, p.n
    if mask is not None and not references:
        add((*where, "mask"), "a mask needs a reference image to apply to (add references:)")
    spec = MODELS.get(model)
    if spec is None:
        add(model_path, f"unknown model {model!r}{suggest(model, MODELS)} (known: {', '.join(sorted(MODELS))})")
        return
    if len(prompt) > spec.prompt_max:
        add((*where, "prompt"), f"expected at most {spec.prompt_max} characters for {model}, found {len(prompt)}")
    if size not in spec.sizes:
        others = sorted(m for m, s in MODELS.items() if size in s.sizes)  # as for a mask: where it is at home
        elsewhere = f" (models that make {size}: {', '.join(others)})" if others else ""
        add(size_path, f"expected one of {', '.join(spec.sizes)} for {model}, found {size!r}{elsewhere}")
    if n not in spec.n_allowed:
        allowed = ", ".join(str(v) for v in sorted(spec.n_allowed))
        add(n_path, f"expected n in {{{allowed}}} for {model}, found {n}")
    if len(references) > spec.max_references:
        add(
            (*where, "references"),
            f"expected at most {spec.max_references} references for {model}, found {len(references)}",
        )
    if spec.max_images is not None and len(references) + n > spec.max_images:
        add(
            (*where, "n"),
            f"{model} takes at most {spec.max_images} images in all (references + n), found {len(references)} + {n}",
        )
    if mask is not None and not spec.supports_mask:
        masked = sorted(m for m, s in MODELS.items() if s.supports_mask)
        add((*where, "mask"), f"{model} does not accept a mask (models that do: {', '.join(masked)})")
    fmt = params.get("output_format")
    if fmt is not None and str(fmt).lower() != "png":  # the bytes land in a .png file as they come
        add((*where, "params", "output_format"), f"out names a .png file: expected output_format png, found {fmt!r}")
    for name in params:
        if name not in spec.params:
            documented = ", ".join(sorted(spec.params)) or "none"
            warn(
                (*where, "params", name),
                f"{model} does not document the parameter {name!r}{suggest(name, spec.params)} "
                f"(documented: {documented}); it is sent as written",
            )
