"""Make the small reference and mask PNGs that examples/ commits (deterministic: same bytes every run).

Run: python scripts/make_example_images.py  (writes examples/photos/mug.png and examples/masks/mug-background.png)
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZE = (256, 256)


def mug() -> Image.Image:
    """A flat drawing of a mug on a grey background: the reference photo."""
    image = Image.new("RGB", SIZE, (200, 200, 205))
    draw = ImageDraw.Draw(image)
    draw.rectangle((78, 70, 168, 200), fill=(30, 90, 160), outline=(10, 40, 80), width=3)
    draw.ellipse((150, 100, 200, 160), outline=(10, 40, 80), width=10)
    draw.ellipse((78, 60, 168, 82), fill=(240, 240, 240), outline=(10, 40, 80), width=3)
    return image


def background_mask() -> Image.Image:
    """RGBA mask, same pixel size as the reference: transparent (repainted) everywhere but the mug."""
    mask = Image.new("RGBA", SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(mask)
    draw.rectangle((70, 55, 205, 208), fill=(0, 0, 0, 255))
    return mask


def main() -> None:
    """Write both images."""
    (EXAMPLES / "photos").mkdir(parents=True, exist_ok=True)
    (EXAMPLES / "masks").mkdir(parents=True, exist_ok=True)
    mug().save(EXAMPLES / "photos" / "mug.png", optimize=True)
    background_mask().save(EXAMPLES / "masks" / "mug-background.png", optimize=True)


if __name__ == "__main__":
    main()
