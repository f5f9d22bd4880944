"""Images to model inputs for every resize mode of the grid, decoding each image once per size."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from app.evaluation.recipes import Prep

Prepared = dict[Prep, tuple[np.ndarray, tuple[int, int]]]  # pixels (S, S, 3), valid (h, w)


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_upright(data: bytes, draft_to: int | None = None) -> Image.Image:
    """Upright RGB image; JPEGs decoded at the smallest DCT scale >= `draft_to` if given."""
    with Image.open(io.BytesIO(data)) as img:
        if draft_to is not None and img.format in ("JPEG", "MPO"):
            img.draft(None, (draft_to, draft_to))
        img.seek(0)
        return _rgb(ImageOps.exif_transpose(img))


def _mean_colour() -> tuple[int, int, int]:
    from app.ml.trunks import IMAGENET_MEAN

    r, g, b = (round(255 * m) for m in IMAGENET_MEAN)
    return r, g, b


def resize_for(img: Image.Image, prep: Prep) -> tuple[np.ndarray, tuple[int, int]]:
    """Model input for `prep.mode` from an upright RGB image (not squash-bilinear, which is
    the service's decode_image), and the (h, w) of the image inside the SxS input."""
    s = prep.size
    w, h = img.size
    if prep.mode == "squash-nearest":
        return np.asarray(img.resize((s, s), Image.Resampling.NEAREST)), (s, s)
    if prep.mode == "crop":
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        resized = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - s) // 2, (nh - s) // 2
        return np.asarray(resized.crop((left, top, left + s, top + s))), (s, s)
    if prep.mode == "pad":
        scale = s / max(w, h)
        nw, nh = min(s, max(1, round(w * scale))), min(s, max(1, round(h * scale)))
        canvas = Image.new("RGB", (s, s), _mean_colour())
        canvas.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), (0, 0))
        return np.asarray(canvas), (nh, nw)
    raise ValueError(f"unknown resize mode {prep.mode!r}")


def prepare(data: bytes, preps: Sequence[Prep], max_pixels: int) -> Prepared:
    """Every `prep` input of one image, decoding it once per size (plus once in full for
    squash-nearest). Raises ImageDecodeError for files the service would refuse."""
    from app.ml.imageio import decode_image

    out: Prepared = {}
    sizes = sorted({p.size for p in preps})
    decode_image(data, size=sizes[0], max_pixels=max_pixels)  # the service's checks
    full: Image.Image | None = None
    drafted: dict[int, Image.Image] = {}
    for prep in preps:
        s = prep.size
        if prep.mode == "squash-bilinear":
            out[prep] = decode_image(data, size=s, max_pixels=max_pixels).pixels, (s, s)
        elif prep.mode == "squash-nearest":
            if full is None:
                full = open_upright(data)
            out[prep] = resize_for(full, prep)
        else:
            if s not in drafted:
                drafted[s] = open_upright(data, 2 * s)
            out[prep] = resize_for(drafted[s], prep)
    return out


def valid_cells(valid: tuple[int, int], size: int, fh: int, fw: int) -> tuple[int, int]:
    """Feature-map rows and columns covering the image (a cell counts when >= half inside)."""
    h, w = valid
    rows = max(1, min(fh, math.floor(h * fh / size + 0.5)))
    cols = max(1, min(fw, math.floor(w * fw / size + 0.5)))
    return rows, cols
