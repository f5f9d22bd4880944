"""The photos the bench runs on: a folder sampled or repeated to N files, and the query JPEG."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from app.bench.common import QUERY_SIZE, BenchError


def reencode(src: Path, target: Path, max_side: int) -> None:
    """`src` as an upright RGB JPEG (quality 90) whose longer side is at most `max_side`."""
    from PIL import Image, ImageOps

    with Image.open(src) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    rgb.save(target, format="JPEG", quality=90)


def prepare_images(source: Path, count: int, dest: Path, max_side: int | None = None) -> list[Path]:
    """`count` image files in `dest`: `source`'s images evenly sampled, or repeated cyclically.

    Repeats are hard links (copies across file systems) under distinct names, so each is its
    own image to the pipeline. With `max_side`, each picked photo is first re-encoded as a
    JPEG of at most that many pixels a side (500: PASCAL VOC's size), in a sibling folder.
    All files are read once so both paths start from a warm cache.
    """
    from app.ml.imageio import has_image_extension

    found = sorted(p for p in source.rglob("*") if p.is_file() and has_image_extension(p.name))
    if not found:
        raise BenchError(f"no image files under {source}")
    if count < 1:
        raise BenchError("--count must be at least 1")
    if len(found) >= count:
        step = len(found) / count
        picks = [found[int(i * step)] for i in range(count)]
    else:
        picks = [found[i % len(found)] for i in range(count)]
    dest.mkdir(parents=True, exist_ok=True)
    if max_side is not None:
        resized = dest.parent / f"{dest.name}-max{max_side}"
        resized.mkdir(exist_ok=True)
        made_for: dict[Path, Path] = {}
        for src in dict.fromkeys(picks):
            made_for[src] = resized / f"{len(made_for):06d}.jpg"
            reencode(src, made_for[src], max_side)
        picks = [made_for[src] for src in picks]
    made = []
    for i, src in enumerate(picks):
        target = dest / f"{i:06d}{src.suffix.lower()}"
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
        target.read_bytes()
        made.append(target)
    return made


def prepare_sample(folder: Path) -> list[Path]:
    from app.ml.imageio import has_image_extension

    return sorted(p for p in folder.rglob("*") if p.is_file() and has_image_extension(p.name))


def query_jpeg(sample: Path | None) -> bytes:
    """The search benchmark's query: a 500x375 JPEG, from `sample` or synthetic."""
    import numpy as np
    from PIL import Image, ImageOps

    if sample is not None:
        with Image.open(sample) as img:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    else:
        rng = np.random.default_rng(7)
        yy, xx = np.mgrid[0 : QUERY_SIZE[1], 0 : QUERY_SIZE[0]].astype(np.float32)
        base = np.stack([xx / 2, yy / 1.5, (xx + yy) / 3.5], axis=-1) % 256
        noise = rng.normal(0, 12, base.shape)
        rgb = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    rgb.resize(QUERY_SIZE, Image.Resampling.BILINEAR).save(out, format="JPEG", quality=90)
    return out.getvalue()
