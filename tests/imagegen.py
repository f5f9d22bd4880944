"""Synthetic test images with distinct content: shapes, gradients, textures."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def distinct_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A reproducible image whose colours, layout and texture depend on `seed`."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    base = c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]
    freq = rng.uniform(2, 12)
    stripes = np.sin(2 * math.pi * freq * (xx * np.cos(angle * 3) + yy * np.sin(angle * 3)) / w)
    base += 40 * stripes[..., None] * rng.uniform(-1, 1, 3)[None, None, :]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1, y1 = x0 + int(rng.integers(30, w // 2)), y0 + int(rng.integers(30, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
    return img


def near_duplicate(img: Image.Image) -> Image.Image:
    """Crop ~10 %, resize and blur slightly: what a user would search with."""
    w, h = img.size
    cropped = img.crop((w // 12, h // 12, w - w // 12, h - h // 12))
    resized = cropped.resize((int(w * 0.7), int(h * 0.7)), Image.Resampling.BILINEAR)
    return resized.filter(ImageFilter.GaussianBlur(0.6))


def jpeg_bytes(img: Image.Image, quality: int = 70) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def write_distinct_set(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"img_{i:03d}.jpg"
        distinct_image(i).save(path, quality=90)
        paths.append(path)
    return paths
