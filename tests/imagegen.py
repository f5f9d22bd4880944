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


def png_with_fake_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`×`height` pixels (a decompression bomb)."""
    import struct
    import zlib

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    return bytes(data)


def exif_rotated_jpeg(img: Image.Image, orientation: int = 6) -> bytes:
    """JPEG storing `img` rotated so that EXIF `orientation` makes it upright again."""
    rotations = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    stored = img.transpose(rotations[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def odd_valid_files(seed: int) -> dict[str, bytes]:
    """Valid images in awkward encodings; each must be embedded, none may fail."""
    base = distinct_image(seed)
    files: dict[str, bytes] = {}

    def save(img: Image.Image, fmt: str, **kw: object) -> bytes:
        out = io.BytesIO()
        img.save(out, format=fmt, **kw)
        return out.getvalue()

    files["cmyk.jpg"] = save(base.convert("CMYK"), "JPEG", quality=90)
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    files["sixteen_bit.png"] = save(Image.fromarray(arr16), "PNG")
    pal = distinct_image(seed + 1).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    files["palette_alpha.png"] = save(pal, "PNG", transparency=0)
    frames = [distinct_image(seed + 2), distinct_image(seed + 3)]
    files["animated.gif"] = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    files["animated.webp"] = save(
        distinct_image(seed + 4), "WEBP", save_all=True, append_images=[distinct_image(seed + 5)]
    )
    files["rotated_exif.jpg"] = exif_rotated_jpeg(distinct_image(seed + 6))
    files["tiny_1x1.png"] = save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    files["panorama.jpg"] = save(distinct_image(seed + 7, (4000, 120)), "JPEG", quality=85)
    files["greyscale.bmp"] = save(distinct_image(seed + 8).convert("L"), "BMP")
    files["scan.tiff"] = save(distinct_image(seed + 9), "TIFF")
    files["UPPER CASE ÉTÉ.JPEG"] = save(distinct_image(seed + 10), "JPEG", quality=90)
    return files


def bad_files(seed: int) -> dict[str, tuple[bytes, str]]:
    """Files that must be reported, with a substring of the expected reason."""
    good = jpeg_bytes(distinct_image(seed), 90)
    rng = np.random.default_rng(seed)
    return {
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + rng.bytes(3000), "corrupt"),
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        "empty.png": (b"", "empty file"),
        "text.jpg": (b"this is not an image at all\n" * 20, "not an image"),
        "bomb.png": (png_with_fake_size(20000, 10000), "too many pixels"),
    }
