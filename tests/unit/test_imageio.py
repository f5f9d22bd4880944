"""Decoding untrusted bytes: every awkward file decodes correctly or fails with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.ml.imageio import ImageDecodeError, decode_image, has_image_extension, make_thumbnail
from tests.imagegen import bad_files, distinct_image, exif_rotated_jpeg, jpeg_bytes, odd_valid_files

SIZE = 224
LIMIT = 120_000_000


def decode(data: bytes) -> np.ndarray:
    return decode_image(data, size=SIZE, max_pixels=LIMIT).pixels


@pytest.mark.parametrize("name", sorted(bad_files(1)))
def test_bad_files_fail_with_their_reason(name: str) -> None:
    data, reason = bad_files(1)[name]
    with pytest.raises(ImageDecodeError) as info:
        decode(data)
    assert reason in info.value.reason


@pytest.mark.parametrize("name", sorted(odd_valid_files(5)))
def test_awkward_valid_files_decode_to_rgb(name: str) -> None:
    pixels = decode(odd_valid_files(5)[name])
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert 5 < pixels.mean() < 250  # neither black nor white: the content survived


def test_sixteen_bit_png_keeps_its_tones() -> None:
    grey = np.asarray(distinct_image(3).convert("L"), dtype=np.uint16)
    out = io.BytesIO()
    Image.fromarray(grey * 257).save(out, format="PNG")
    decoded = decode(out.getvalue())[..., 0].astype(float)
    expected = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((SIZE, SIZE)), float)
    assert np.abs(decoded - expected).mean() < 2.0


def test_exif_rotation_is_applied() -> None:
    upright = distinct_image(8)
    rotated = decode(exif_rotated_jpeg(upright, orientation=6))
    direct = decode(jpeg_bytes(upright, 95))
    assert np.abs(rotated.astype(float) - direct.astype(float)).mean() < 4.0
    info = decode_image(exif_rotated_jpeg(upright, 6), size=SIZE, max_pixels=LIMIT)
    assert (info.width, info.height) == upright.size


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (50, 50), (255, 0, 0, 0))
    out = io.BytesIO()
    rgba.save(out, format="PNG")
    assert decode(out.getvalue()).min() == 255


def test_large_jpeg_is_decoded_at_reduced_scale_within_the_pixel_limit() -> None:
    big = distinct_image(4, (4000, 3000))
    data = jpeg_bytes(big, 90)
    small_limit = 1_000_000  # below the nominal 12 MP; the DCT-scaled decode fits
    pixels = decode_image(data, size=SIZE, max_pixels=small_limit).pixels
    assert pixels.shape == (SIZE, SIZE, 3)
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_image(data, size=SIZE, max_pixels=small_limit // 64)


def test_draft_decode_matches_full_decode() -> None:
    big = distinct_image(9, (2400, 1800))
    data = jpeg_bytes(big, 92)
    fast = decode(data).astype(float)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE)), float)
    assert np.abs(fast - full).mean() < 3.0


def test_thumbnail_keeps_aspect_and_fits() -> None:
    thumb = Image.open(
        io.BytesIO(make_thumbnail(jpeg_bytes(distinct_image(2, (640, 320))), 128, LIMIT))
    )
    assert thumb.format == "JPEG" and thumb.size == (128, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.JPG", True), ("b.tiff", True), ("c.WebP", True), ("d.txt", False), ("jpg", False)],
)
def test_extension_filter_ignores_case(name: str, expected: bool) -> None:
    assert has_image_extension(name) is expected
