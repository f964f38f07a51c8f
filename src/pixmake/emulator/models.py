"""Per-model request rules as a data table, and the one validator that reads it.

``gpt-4o-image`` follows toapis-api.md §2.1 exactly; the other rows are the "light" summaries of §2.3.
Where the docs are silent (sizes for Gemini/Seedream/Flux, their ``n`` ranges, pixel sizes outside the
gpt-4o-image and gpt-image-2 tables) the values are INF and marked so. ``validate_submit`` is pure: it takes
the parsed JSON body and returns either a :class:`Submission` or an :class:`InvalidField`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "MODELS",
    "TEXT_MODELS",
    "InvalidField",
    "ModelSpec",
    "Submission",
    "pixel_size",
    "validate_submit",
]

RefStyle = Literal["string", "object", "either"]

_RATIOS_4O: Final = ("1:1", "2:3", "3:2")
_RATIOS_GROK: Final = ("1:1", "2:3", "3:2", "16:9", "9:16")
_RATIOS_G2: Final = (
    *("1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5"),
    *("16:9", "9:16", "2:1", "1:2", "21:9", "9:21"),
)
_RATIOS_COMMON: Final = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")  # INF
_MAX_SIDE: Final = 3840  # OpenAI's largest output side; keeps 4K placeholders bounded (INF)
_RES_1K_2K_4K: Final[Mapping[str, int]] = {"1K": 1024, "2K": 2048, "4K": 2880}
_WEB_FORMATS: Final = frozenset({"image/jpeg", "image/png", "image/webp"})  # "jpeg/jpg/png/webp"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The request rules of one model id (one row of :data:`MODELS`)."""

    id: str
    max_prompt: int | None
    sizes: tuple[str, ...]
    n_allowed: frozenset[int]
    max_refs: int
    ref_style: RefStyle = "string"
    ref_fields: tuple[str, ...] = ("image_urls",)
    resolutions: Mapping[str, int] | None = None  # name -> short side in pixels
    resolution_path: tuple[str, ...] = ("metadata", "resolution")
    default_resolution: str | None = None
    n_plus_refs_max: int | None = None
    ref_formats: frozenset[str] | None = None  # MIME types of uploaded references; None: not documented


def _spec(model_id: str, **kwargs: object) -> tuple[str, ModelSpec]:
    return model_id, ModelSpec(id=model_id, **kwargs)  # type: ignore[arg-type]  # table rows below are typed by hand


MODELS: Final[Mapping[str, ModelSpec]] = dict(
    [
        _spec(
            "gpt-4o-image",  # §2.1, §5: jpeg/jpg/png/webp; GIF is uploadable but not a reference format
            max_prompt=1000,
            sizes=_RATIOS_4O,
            n_allowed=frozenset({1, 2, 4}),
            max_refs=5,
            ref_formats=_WEB_FORMATS,
        ),
        _spec(
            "gpt-image-2",
            max_prompt=32000,
            sizes=_RATIOS_G2,
            n_allowed=frozenset(range(1, 11)),
            max_refs=16,
            ref_fields=("reference_images", "image_urls"),
            resolutions={"1k": 1024, "2k": 2048, "4k": 2880},
            resolution_path=("resolution",),
            default_resolution="1k",
            ref_formats=frozenset({"image/png", "image/jpeg"}),  # [D-g2e]: PNG/JPG
        ),
        _spec("grok-4-1-image", max_prompt=1000, sizes=_RATIOS_GROK, n_allowed=frozenset({1, 2, 4}), max_refs=5),
        _spec("grok-4-2-image", max_prompt=1000, sizes=_RATIOS_GROK, n_allowed=frozenset({1, 2, 4}), max_refs=5),
        _spec(
            "gemini-3-pro-image-preview",
            max_prompt=None,
            sizes=_RATIOS_COMMON,
            n_allowed=frozenset({1, 2, 3, 4}),
            max_refs=14,
            ref_style="object",  # [D-gem3][D-gem31]: image_urls as object[] with url
            ref_formats=_WEB_FORMATS,  # [D-gem3][D-gem31]: jpeg/jpg/png/webp
            resolutions=_RES_1K_2K_4K,
            default_resolution="1K",
        ),
        _spec(
            "gemini-3.1-flash-image-preview",  # [D-gem31]: as 3-pro, plus 0.5K and the extreme ratios
            max_prompt=None,
            sizes=(*_RATIOS_COMMON, "1:4", "4:1", "1:8", "8:1"),
            n_allowed=frozenset({1, 2, 3, 4}),
            max_refs=14,
            ref_style="object",  # [D-gem3][D-gem31]: image_urls as object[] with url
            ref_formats=_WEB_FORMATS,  # [D-gem3][D-gem31]: jpeg/jpg/png/webp
            resolutions={"0.5K": 512, **_RES_1K_2K_4K},
            default_resolution="1K",
        ),
        _spec(
            "doubao-seedream-4-5",
            max_prompt=None,
            sizes=_RATIOS_COMMON,
            n_allowed=frozenset(range(1, 16)),
            max_refs=10,
            resolutions={"2K": 2048, "4K": 2880},
            default_resolution="2K",
            n_plus_refs_max=15,
        ),
        _spec(
            "doubao-seedream-5-0-pro",  # [D-sd5p]: n 1-10, refs <= 10, refs + outputs <= 15
            max_prompt=None,
            sizes=_RATIOS_COMMON,
            n_allowed=frozenset(range(1, 11)),
            max_refs=10,
            resolutions={"2K": 2048, "4K": 2880},
            default_resolution="2K",
            n_plus_refs_max=15,
        ),
        *(
            _spec(kontext, max_prompt=None, sizes=_RATIOS_COMMON, n_allowed=frozenset({1, 2, 3, 4}), max_refs=1)
            for kontext in ("flux-kontext-pro", "flux-kontext-max")  # [D-flux]: at most one reference
        ),
        _spec(
            "flux-2-pro",
            max_prompt=None,
            sizes=_RATIOS_COMMON,
            n_allowed=frozenset({1, 2, 3, 4}),
            max_refs=8,
            resolutions=_RES_1K_2K_4K,
            default_resolution="1K",
        ),
    ]
)
"""Image models the emulator accepts, by id."""

TEXT_MODELS: Final = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5")
"""Text models listed by ``GET /v1/models`` without ``type=image`` (§1: the default lists text models)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated submit: what the task needs to exist and to render its images."""

    model: str
    prompt: str
    size: str
    n: int
    width: int
    height: int
    client_business_id: str | None
    references: tuple[tuple[str, str], ...] = ()  # (field, url) of every reference image, in order
    mask_url: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidField:
    """Why a submit was refused: the 400 body's ``param`` and ``message``, and its ``code`` (§4.1)."""

    param: str
    message: str
    code: str = "invalid_request"


def pixel_size(ratio: str, short_side: int) -> tuple[int, int]:
    """Pixels for an aspect ratio: short side fixed, long side scaled, multiples of 16, capped at 3840.

    ``pixel_size("3:2", 1024) == (1536, 1024)`` as documented for gpt-4o-image (§2.1).
    """
    w_ratio, h_ratio = (int(part) for part in ratio.split(":"))
    scale = short_side / min(w_ratio, h_ratio)
    width, height = w_ratio * scale, h_ratio * scale
    shrink = min(1.0, _MAX_SIDE / max(width, height))
    return _round16(width * shrink), _round16(height * shrink)


def _round16(value: float) -> int:
    return max(16, round(value / 16) * 16)


def _dig(body: Mapping[str, object], path: tuple[str, ...]) -> object:
    node: object = body
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _ref_ok(item: object, style: RefStyle) -> bool:
    as_object = isinstance(item, Mapping) and _is_http_url(item.get("url"))
    as_string = _is_http_url(item)
    return {"string": as_string, "object": as_object, "either": as_string or as_object}[style]


def _check_prompt(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return InvalidField("prompt", "The 'prompt' field is required.")
    if spec.max_prompt is not None and len(prompt) > spec.max_prompt:
        return InvalidField("prompt", f"The 'prompt' field must be at most {spec.max_prompt} characters.")
    return None


def _check_size(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    size = body.get("size", spec.sizes[0])
    if size not in spec.sizes:
        return InvalidField("size", f"The 'size' field must be one of: {', '.join(spec.sizes)}.")
    return None


def _check_n(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    n = body.get("n", 1)
    # bool is an int subclass and a quoted number is a str: the docs say both are refused (§2.1).
    if isinstance(n, bool) or not isinstance(n, int) or n not in spec.n_allowed:
        allowed = ", ".join(str(value) for value in sorted(spec.n_allowed))
        return InvalidField("n", f"The 'n' field must be an integer, one of: {allowed}.")
    return None


def _check_refs(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    for field in spec.ref_fields:
        refs = body.get(field)
        if refs is None:
            continue
        if not isinstance(refs, list) or not all(_ref_ok(item, spec.ref_style) for item in refs):
            return InvalidField(field, f"The '{field}' field must be a list of http(s) image URLs.")
        if len(refs) > spec.max_refs:
            return InvalidField(field, f"The '{field}' field accepts at most {spec.max_refs} images.")
        n = body.get("n", 1)
        if spec.n_plus_refs_max is not None and isinstance(n, int) and len(refs) + n > spec.n_plus_refs_max:
            return InvalidField(field, f"Reference images plus 'n' must not exceed {spec.n_plus_refs_max}.")
    return None


def _check_mask(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    mask = body.get("mask_url")
    if mask is not None and not _is_http_url(mask):
        return InvalidField("mask_url", "The 'mask_url' field must be an http(s) URL of a PNG image.")
    return None


def _check_resolution(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    value = _dig(body, spec.resolution_path)
    if value is None or spec.resolutions is None:
        return None
    if value not in spec.resolutions:
        param = ".".join(spec.resolution_path)
        return InvalidField(param, f"The '{param}' field must be one of: {', '.join(spec.resolutions)}.")
    return None


def _check_business_id(spec: ModelSpec, body: Mapping[str, object]) -> InvalidField | None:
    for path in (("client_business_id",), ("metadata", "client_business_id")):
        value = _dig(body, path)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 128):
            param = ".".join(path)
            return InvalidField(param, f"The '{param}' field must be a string of 1 to 128 characters.")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        return InvalidField("metadata", "The 'metadata' field must be an object.")
    return None


_CHECKS: Final = (
    _check_prompt,
    _check_size,
    _check_n,
    _check_refs,
    _check_mask,
    _check_resolution,
    _check_business_id,
)


def _references(spec: ModelSpec, body: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    refs: list[tuple[str, str]] = []
    for field in spec.ref_fields:
        items = body.get(field)
        for item in items if isinstance(items, list) else ():
            url = item.get("url") if isinstance(item, Mapping) else item
            refs.append((field, str(url)))
    return tuple(refs)


def _business_id(body: Mapping[str, object]) -> str | None:
    value = body.get("client_business_id") or _dig(body, ("metadata", "client_business_id"))
    return value if isinstance(value, str) else None


def _short_side(spec: ModelSpec, body: Mapping[str, object]) -> int:
    if spec.resolutions is None:
        return 1024
    chosen = _dig(body, spec.resolution_path) or spec.default_resolution
    return spec.resolutions[str(chosen)]


def validate_submit(body: object) -> Submission | InvalidField:
    """Check a submit body against its model's row; top-level ``client_business_id`` wins over metadata's."""
    if not isinstance(body, Mapping):
        return InvalidField("body", "The request body must be a JSON object.")
    model = body.get("model")
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        return InvalidField("model", f"The model '{model}' is not supported.")
    for check in _CHECKS:
        problem = check(spec, body)
        if problem is not None:
            return problem
    size = str(body.get("size", spec.sizes[0]))
    width, height = pixel_size(size, _short_side(spec, body))
    return Submission(
        model=spec.id,
        prompt=str(body["prompt"]),
        size=size,
        n=int(body.get("n", 1)),
        width=width,
        height=height,
        client_business_id=_business_id(body),
        references=_references(spec, body),
        mask_url=str(body["mask_url"]) if body.get("mask_url") is not None else None,
    )
