"""Crop queries: detail crops cut out of originals at their own scale (rectangles and masked
circles, 64-160 px across), the same crops resized, recompressed and colour-shifted, and which
of them are flat (too little texture for any method to place).

Every crop is drawn from a generator seeded by (seed, query number), so the same originals
give the same crops on every run and machine.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from app.evaluation.preprocess import open_upright

CROP_SHAPES = ("rect", "circle")
CROP_VARIANTS = ("same", "0.5x", "2x", "jpeg40", "colour")
CROP_NOTES: dict[str, str] = {
    "rect": "rectangle, each side 64-160 px of the original, at its scale",
    "circle": "circle 64-160 px across, outside the circle white (as the service composites a "
    "transparent PNG)",
    "same": "exact pixels (PNG)",
    "0.5x": "resized to half (Lanczos, PNG)",
    "2x": "resized to double (bicubic, PNG)",
    "jpeg40": "JPEG quality 40",
    "colour": "light colour shift: red x1.08, blue x0.92, saturation x1.2, brightness x1.06 (PNG)",
    "flat": "grey standard deviation inside the crop below 12 (of 255): sky, walls, blur",
}
CROP_KINDS = tuple(f"{shape} {variant}" for shape in CROP_SHAPES for variant in CROP_VARIANTS)
MIN_SIDE, MAX_SIDE = 64, 160
FLAT_STD = 12.0
FILL = (255, 255, 255)
CROP_VERSION = 1  # bump when the crops change


@dataclass(frozen=True)
class CropBox:
    """Where a crop was cut: in upright pixels of its original."""

    shape: str
    x: int
    y: int
    w: int
    h: int
    flat: bool


@dataclass(frozen=True)
class CropQuery:
    path: Path
    source: int  # index into the originals given to make_crop_queries
    box: CropBox
    variant: str

    @property
    def kind(self) -> str:
        return f"{self.box.shape} {self.variant}"


def circle_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size[0] - 1, size[1] - 1), fill=255)
    return mask


def grey_std(img: Image.Image, mask: Image.Image | None = None) -> float:
    """Standard deviation (0-255) of the grey pixels, inside `mask` where given."""
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    if mask is not None:
        grey = grey[np.asarray(mask) > 127]
    return float(grey.std()) if grey.size else 0.0


def draw_box(img_size: tuple[int, int], rng: np.random.Generator) -> CropBox | None:
    """A random rectangle or circle that fits in an image of `img_size` (None if too small)."""
    width, height = img_size
    shape = CROP_SHAPES[int(rng.integers(len(CROP_SHAPES)))]
    top = min(MAX_SIDE, width, height)
    if top < MIN_SIDE:
        return None
    w = int(rng.integers(MIN_SIDE, top + 1))
    h = w if shape == "circle" else int(rng.integers(MIN_SIDE, top + 1))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return CropBox(shape, x, y, w, h, flat=False)


def cut(img: Image.Image, box: CropBox) -> tuple[Image.Image, CropBox]:
    """The crop's pixels (a circle on white) and its box with `flat` measured."""
    piece = img.convert("RGB").crop((box.x, box.y, box.x + box.w, box.y + box.h))
    mask = circle_mask(piece.size) if box.shape == "circle" else None
    flat = grey_std(piece, mask) < FLAT_STD
    if mask is not None:
        piece = Image.composite(piece, Image.new("RGB", piece.size, FILL), mask)
    return piece, CropBox(box.shape, box.x, box.y, box.w, box.h, flat)


def _colour(img: Image.Image) -> Image.Image:
    r, g, b = img.split()
    shifted = Image.merge(
        "RGB",
        (r.point(lambda v: min(255, round(v * 1.08))), g, b.point(lambda v: round(v * 0.92))),
    )
    return ImageEnhance.Brightness(ImageEnhance.Color(shifted).enhance(1.2)).enhance(1.06)


def _scaled(img: Image.Image, factor: float, resample: Image.Resampling) -> Image.Image:
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return img.resize(size, resample)


def variant_bytes(piece: Image.Image, variant: str) -> bytes:
    """The file of one crop variant (PNG, or JPEG for jpeg40)."""
    out = io.BytesIO()
    if variant == "jpeg40":
        piece.save(out, format="JPEG", quality=40)
        return out.getvalue()
    if variant == "0.5x":
        piece = _scaled(piece, 0.5, Image.Resampling.LANCZOS)
    elif variant == "2x":
        piece = _scaled(piece, 2.0, Image.Resampling.BICUBIC)
    elif variant == "colour":
        piece = _colour(piece)
    elif variant != "same":
        raise ValueError(f"unknown crop variant {variant!r}")
    piece.save(out, format="PNG")
    return out.getvalue()


def make_crop_queries(
    originals: Sequence[Path],
    sources: Sequence[int],
    count: int,
    out_dir: Path,
    seed: int,
    variants: Sequence[str] = CROP_VARIANTS,
) -> list[CropQuery]:
    """`count` crops, the j-th cut from `originals[sources[j % len(sources)]]` at a box drawn
    from a generator seeded by (seed, j), each written once per variant under `out_dir`.
    Originals too small for a 64 px crop, or unreadable, give no query."""
    queries: list[CropQuery] = []
    images: dict[int, Image.Image | None] = {}
    for j in range(count if sources else 0):
        source = sources[j % len(sources)]
        if source not in images:
            try:
                images[source] = open_upright(originals[source].read_bytes())
            except (OSError, ValueError, SyntaxError):
                images[source] = None
        img = images[source]
        if img is None:
            continue
        drawn = draw_box(img.size, np.random.default_rng([seed, j]))
        if drawn is None:
            continue
        piece, box = cut(img, drawn)
        for variant in variants:
            suffix = "jpg" if variant == "jpeg40" else "png"
            target = out_dir / variant / f"{j:05d}-{box.shape}.{suffix}"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(variant_bytes(piece, variant))
            queries.append(CropQuery(target, source, box, variant))
        if len(images) > 8:  # originals are visited in order; keep memory flat
            images.pop(next(iter(images)))
    return queries
