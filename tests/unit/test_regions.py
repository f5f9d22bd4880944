"""Region windows, query masks and the merge of region and global hits."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from app.core.regionstore import RegionHit
from app.ml.imageio import decode_upright
from app.ml.region_match import Verification, merge
from app.ml.regions import (
    WINDOW_INPUT,
    content_mask,
    cut_windows,
    largest_square,
    prepare_query,
    window_boxes,
)
from tests.imagegen import distinct_image

LIMIT = 10**8


def _upright(img: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def test_windows_cover_the_image_edge_to_edge() -> None:
    boxes = window_boxes(320, 240)
    for side in (96, 192):
        own = [b for b in boxes if b[2] == side]
        assert max(x + w for x, _, w, _ in own) == 320
        assert max(y + h for _, y, _, h in own) == 240
        assert min(x for x, *_ in own) == 0 and min(y for _, y, *_ in own) == 0
    assert window_boxes(50, 40) == [(0, 0, 50, 40)]  # smaller than any window: itself


def test_boxes_are_in_the_original_pixels_when_scaled_down() -> None:
    big = distinct_image(3, size=(3200, 1600))
    upright = decode_upright(_upright(big, "JPEG"), max_side=1600, max_pixels=LIMIT)
    assert upright.rgb.size == (1600, 800) and upright.scale == 0.5
    windows = cut_windows(upright)
    assert windows.pixels.shape[1:] == (WINDOW_INPUT, WINDOW_INPUT, 3)
    assert len(windows.pixels) == len(windows.boxes) == len(window_boxes(1600, 800))
    assert windows.boxes[:, 0].max() + windows.boxes[0, 2] <= 3200
    assert set(windows.boxes[:, 2]) == {192, 384}


def test_a_circle_on_white_and_a_transparent_one_are_masked() -> None:
    piece = distinct_image(5, size=(120, 100))
    shifted = Image.new("RGB", piece.size, (255, 250, 236))  # white, colour-shifted since
    circle = Image.new("L", piece.size, 0)
    ImageDraw.Draw(circle).ellipse((0, 0, 119, 99), fill=255)
    on_white = Image.composite(piece, Image.new("RGB", piece.size, "white"), circle)
    transparent = piece.convert("RGBA")
    transparent.putalpha(circle)
    on_shifted = Image.composite(piece, shifted, circle)
    for query in (on_white, transparent, on_shifted):
        upright = decode_upright(_upright(query), max_side=1600, max_pixels=LIMIT)
        mask = np.asarray(content_mask(upright)) > 0
        # the circle (pi/4 of the box), its edge eroded: blended pixels are left out
        assert not (mask & (np.asarray(circle) == 0)).any()
        assert 0.55 < mask.mean() < 0.785
        prepared = prepare_query(upright)
        # the square inside the circle, not the blank corners
        x, y, w, h = largest_square(mask)
        inner = upright.rgb.crop((x, y, x + w, y + h)).resize((WINDOW_INPUT, WINDOW_INPUT))
        assert prepared.pixels.shape == (1, WINDOW_INPUT, WINDOW_INPUT, 3)
        assert np.abs(prepared.pixels[0].astype(int) - np.asarray(inner)).mean() < 2
    plain = decode_upright(_upright(piece), max_side=1600, max_pixels=LIMIT)
    assert np.asarray(content_mask(plain)).min() == 255
    assert len(prepare_query(plain).pixels) == 1


def test_largest_square_is_inside_the_mask() -> None:
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:40, 20:70] = True
    assert largest_square(mask) == (20, 10, 30, 30)
    big = np.zeros((900, 1200), dtype=bool)
    big[100:700, 200:1000] = True
    x, y, w, h = largest_square(big)
    assert w == h and 500 < w <= 600 and big[y : y + h, x : x + w].all()


def test_merge_puts_verified_copies_first_and_keeps_the_global_order() -> None:
    region = [
        RegionHit("a", (0, 0, 96, 96), 0.9),
        RegionHit("b", (96, 0, 96, 96), 0.8),
        RegionHit("c", (0, 96, 96, 96), 0.7),
    ]
    global_hits = [("x", 0.6), ("b", 0.5), ("y", 0.4)]
    found = (100, 10, 50, 40)
    checks = {
        "a": Verification(0.5, (0, 0, 9, 9)),
        "b": Verification(0.97, found),
        "c": Verification(0.93, None),
    }
    ranked = merge(global_hits, region, checks)
    assert [r.id for r in ranked] == ["b", "c", "x", "y", "a"]
    assert ranked[0].verified and ranked[0].box == found  # where the query was found
    assert ranked[1].box == (0, 96, 96, 96)  # no location: the window
    assert ranked[2].box is None and not ranked[4].verified
    # Nothing verified: the global ranking, untouched, comes first.
    plain = merge(global_hits, region, {"a": Verification(0.2, None)})
    assert [r.id for r in plain][:3] == ["x", "b", "y"]
