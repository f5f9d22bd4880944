"""Decode untrusted image bytes into model-ready RGB pixels, or say precisely why not.

Shared by the API (query uploads) and the workers (folder loads), so a query and an indexed
copy of the same file go through identical pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# We enforce our own pixel limit (after JPEG draft scaling), so Pillow's global one is off.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}
# JPEG can be decoded at 1/8 scale in the DCT domain, so its nominal size may exceed the limit.
JPEG_DRAFT_FACTOR = 8
BACKGROUND = (255, 255, 255)


class ImageDecodeError(Exception):
    """The bytes are not a usable image; `reason` is shown to the user per file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (size, size, 3) uint8, RGB
    format: str
    width: int  # upright size before resizing
    height: int


def has_image_extension(name: str) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised content)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt image header: {exc}") from None
    if img.format not in ACCEPTED_FORMATS:
        img.close()
        raise ImageDecodeError(f"unsupported image format {img.format}")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's own conversion clips 16-bit data to white; rescale to 8 bits instead.
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or float(arr.max(initial=0.0)) > 255 else 255.0
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    return img


def _upright_rgb(data: bytes, draft_to: int, max_pixels: int) -> tuple[Image.Image, str, int, int]:
    """Open, check, decode (JPEG at reduced DCT scale >= `draft_to`), rotate upright, to RGB."""
    img = _open(data)
    try:
        fmt = str(img.format)
        width, height = img.size
        too_many = ImageDecodeError(
            f"too many pixels: {width}x{height} exceeds the limit of {max_pixels:,}"
        )
        is_jpeg = fmt in ("JPEG", "MPO")
        if width * height > max_pixels * (JPEG_DRAFT_FACTOR**2 if is_jpeg else 1):
            raise too_many
        if is_jpeg:
            img.draft(None, (draft_to, draft_to))
            if img.size[0] * img.size[1] > max_pixels:
                raise too_many
        try:
            img.seek(0)
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
        swapped = upright.size != img.size  # a 90° EXIF rotation swaps the axes
        return rgb, fmt, *((height, width) if swapped else (width, height))
    finally:
        img.close()


def decode_image(data: bytes, *, size: int, max_pixels: int) -> DecodedImage:
    """Decode `data` to an upright RGB `size`×`size` array (aspect squashed, area-filtered).

    Animated images give their first frame; EXIF orientation is applied; alpha is composited
    on white; CMYK, palette, 16-bit and greyscale are converted. Raises ImageDecodeError.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on odd metadata; we report real failures
        # DCT-domain downscale to at least twice the target keeps the vector unchanged.
        rgb, fmt, width, height = _upright_rgb(data, size * 2, max_pixels)
        resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return DecodedImage(np.asarray(resized, dtype=np.uint8), fmt, width, height)


@dataclass(frozen=True)
class UprightImage:
    """An image decoded upright at a working size, for region windows and verification."""

    rgb: Image.Image  # alpha composited on white, longest side at most the asked one
    alpha: np.ndarray | None  # (h, w) uint8 at the rgb's size, when the image had alpha
    width: int  # upright size of the original
    height: int

    @property
    def scale(self) -> float:
        """The working image's pixels per original pixel (<= 1)."""
        return self.rgb.width / self.width


def decode_upright(data: bytes, *, max_side: int, max_pixels: int) -> UprightImage:
    """Decode `data` upright with its aspect kept, scaled down to `max_side` at most (JPEG at
    a reduced DCT scale first); the alpha channel is kept apart. Raises ImageDecodeError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb, _, width, height = _upright_rgb(data, max_side, max_pixels)  # checks the limits
        img = _open(data)
        try:
            alpha = _alpha(img) if _has_alpha(img) else None
        finally:
            img.close()
        if max(rgb.size) > max_side:
            factor = max_side / max(rgb.size)
            size = (max(1, round(rgb.width * factor)), max(1, round(rgb.height * factor)))
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        if alpha is not None and alpha.shape[::-1] != rgb.size:
            alpha = np.asarray(Image.fromarray(alpha).resize(rgb.size, Image.Resampling.NEAREST))
    return UprightImage(rgb, alpha, width, height)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def _alpha(img: Image.Image) -> np.ndarray | None:
    """The upright alpha channel, or None when it is fully opaque."""
    try:
        img.seek(0)
        alpha = ImageOps.exif_transpose(img).convert("RGBA").getchannel("A")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    values = np.asarray(alpha, dtype=np.uint8)
    return None if bool((values == 255).all()) else values


def make_thumbnail(data: bytes, size: int, max_pixels: int) -> bytes:
    """A JPEG of `data` fitting in `size`×`size`, upright, aspect kept."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rgb, _, _, _ = _upright_rgb(data, size, max_pixels)
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


def sniff_file_format(path: Path) -> str:
    """Pillow format name of the file at `path` (reads the header only)."""
    with path.open("rb") as fh:
        head = fh.read(64 * 1024)
    try:
        with Image.open(io.BytesIO(head)) as img:
            fmt = str(img.format)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageDecodeError("not an image (unrecognised content)") from None
    if fmt not in ACCEPTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {fmt}")
    return fmt
