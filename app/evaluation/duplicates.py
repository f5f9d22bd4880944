"""Near-duplicate queries: the transforms (crop, resize, JPEG, colour, flip, rotation,
grayscale, text, all at once), and the query files made from a sample of originals.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from app.evaluation.preprocess import open_upright

DUP_TRANSFORMS = (
    "crop",
    "resize",
    "jpeg",
    "colour",
    "flip",
    "rotate",
    "grayscale",
    "text",
    "combined",
)


QUERY_VERSION = 2  # bump when the near-duplicate transforms change


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _crop(img: Image.Image, side: float = 0.4) -> Image.Image:
    """Keep `side` of each side (0.4: 16 % of the area), off centre."""
    w, h = img.size
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    left, top = round(0.6 * (w - cw)), round(0.3 * (h - ch))
    return img.crop((left, top, left + cw, top + ch))


def _resize(img: Image.Image, longest: int = 64) -> Image.Image:
    """A thumbnail: longest side 64 px."""
    scale = longest / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _colour(img: Image.Image) -> Image.Image:
    """A strong warm filter: red x1.3, blue x0.6, saturation x1.8, contrast x1.3."""
    r, g, b = img.convert("RGB").split()
    warm = Image.merge(
        "RGB",
        (r.point(lambda v: min(255, round(v * 1.3))), g, b.point(lambda v: round(v * 0.6))),
    )
    return ImageEnhance.Contrast(ImageEnhance.Color(warm).enhance(1.8)).enhance(1.3)


def _rotate(img: Image.Image, degrees: float = 20.0) -> Image.Image:
    """Rotate about the centre, then crop the largest centred rectangle without corners."""
    w, h = img.size
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    scale = min(w / (w * cos + h * sin), h / (w * sin + h * cos))
    rotated = img.rotate(degrees, resample=Image.Resampling.BICUBIC)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((left, top, left + cw, top + ch))


def _text(img: Image.Image) -> Image.Image:
    """Three lines of yellow, black-outlined text, each 1/6 of the height tall."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    size = max(10, out.height // 6)
    font = ImageFont.load_default(size=size)
    for i, text in enumerate(("PICSEARCH SAMPLE", "© 2024 NOT YOURS", "REPOSTED")):
        draw.text(
            (out.width // 20, out.height * (1 + 3 * i) // 10),
            text,
            fill="yellow",
            font=font,
            stroke_width=max(1, size // 10),
            stroke_fill="black",
        )
    return out


TRANSFORM_FUNCTIONS: dict[str, Callable[[Image.Image], bytes]] = {
    "crop": lambda img: _jpeg(_crop(img)),
    "resize": lambda img: _jpeg(_resize(img)),
    "jpeg": lambda img: _jpeg(img, quality=5),
    "colour": lambda img: _jpeg(_colour(img)),
    "flip": lambda img: _jpeg(ImageOps.mirror(img)),
    "rotate": lambda img: _jpeg(_rotate(img)),
    "grayscale": lambda img: _jpeg(ImageOps.grayscale(img)),
    "text": lambda img: _jpeg(_text(img)),
    # a re-post: cropped, filtered, captioned and recompressed
    "combined": lambda img: _jpeg(_text(_colour(_crop(img, 0.6))), quality=30),
}


TRANSFORM_NOTES: dict[str, str] = {
    "crop": "40% of each side kept (16% of the area), off centre",
    "resize": "thumbnail, longest side 64 px",
    "jpeg": "JPEG quality 5",
    "colour": "warm filter: red x1.3, blue x0.6, saturation x1.8, contrast x1.3",
    "flip": "mirrored left-right",
    "rotate": "rotated 20 degrees, cropped to the largest rectangle without corners",
    "grayscale": "grayscale",
    "text": "three lines of yellow outlined text, each 1/6 of the height",
    "combined": "60% crop + warm filter + text + JPEG quality 30",
}


def near_duplicate(img: Image.Image, transform: str) -> bytes:
    """JPEG bytes of `img` altered by `transform` (deterministic; quality 92 unless the
    transform itself recompresses)."""
    return TRANSFORM_FUNCTIONS[transform](img.convert("RGB"))


def make_queries(
    originals: Sequence[Path], out_dir: Path, transforms: Sequence[str] = DUP_TRANSFORMS
) -> list[tuple[Path, int, str]]:
    """Write one near-duplicate per (original, transform) under `out_dir`:
    (query path, index of its original, transform). Unreadable originals are skipped."""
    queries: list[tuple[Path, int, str]] = []
    for i, path in enumerate(originals):
        targets = {t: out_dir / t / f"{i:05d}.jpg" for t in transforms}
        if not all(target.is_file() for target in targets.values()):
            try:
                img = open_upright(path.read_bytes())
            except (OSError, ValueError, SyntaxError):
                continue
            for t, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(near_duplicate(img, t))
        queries += [(target, i, t) for t, target in targets.items()]
    return queries
