"""Region windows for partial-copy search: what is cut from an indexed image, and from a query.

An image of a collection with regions gets, besides its global vector, one vector per square
window of WINDOW_SIDES px (in the image's own pixels, after scaling it to MAX_SIDE at most),
stride half a side, each squashed to WINDOW_INPUT px and embedded as an image of its own. A
query is squashed to the same input; a masked query (transparent, or a shape on a plain white
background, as a circular crop is) also gets the largest square inside its mask, since no
window has the query's blank corners. docs/crops.md has the measurements behind the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from app.core.config import Settings
from app.core.regionstore import ImageRegions
from app.ml.imageio import UprightImage, decode_upright

if TYPE_CHECKING:
    from app.ml.encoder import Encoder

Box = tuple[int, int, int, int]  # x, y, w, h in the original image's pixels
WINDOW_SIDES = (96, 192)
WINDOW_INPUT = 96
MAX_SIDE = 1600
# A query region smaller than this is not worth a vector of its own.
MIN_INNER_SQUARE = 32
# Pixels of the corners' common colour connected to the border are taken as a blank
# background (a circle or a shape pasted on white), when they are at least this share of the
# query; the mask's edge is then eroded by this share of the query's short side.
BLANK_TOLERANCE = 20
MIN_BLANK_SHARE = 0.05
EDGE_EROSION = 0.04
MASK_WORK_SIDE = 192


@dataclass(frozen=True)
class Windows:
    pixels: np.ndarray  # (M, WINDOW_INPUT, WINDOW_INPUT, 3) uint8
    boxes: np.ndarray  # (M, 4) int32: x, y, w, h in the original's pixels
    image_size: tuple[int, int]  # the original's upright width and height


@dataclass(frozen=True)
class RegionQuery:
    pixels: np.ndarray  # (Q, WINDOW_INPUT, WINDOW_INPUT, 3) uint8: whole, then inner square
    image: Image.Image  # the query at its working size, RGB
    mask: Image.Image  # "L": 255 where the query has content


def window_boxes(width: int, height: int) -> list[Box]:
    """Windows of a `width` x `height` working image; the whole image when it is smaller
    than the smallest window."""
    boxes: list[Box] = []
    for side in WINDOW_SIDES:
        if side > min(width, height):
            continue
        step = side // 2
        xs = _starts(width, side, step)
        boxes += [(x, y, side, side) for y in _starts(height, side, step) for x in xs]
    return boxes or [(0, 0, width, height)]


def _starts(length: int, side: int, step: int) -> list[int]:
    """Window starts every `step`, plus one flush with the far edge so nothing is left out."""
    starts = list(range(0, length - side + 1, step))
    if starts[-1] != length - side:
        starts.append(length - side)
    return starts


def cut_windows(image: UprightImage) -> Windows:
    """Every window of `image`, squashed to the model input, with boxes in original pixels."""
    rgb = image.rgb
    boxes = window_boxes(rgb.width, rgb.height)
    pixels = np.stack([_squash(rgb.crop((x, y, x + w, y + h))) for x, y, w, h in boxes])
    scale = image.scale
    original = np.asarray(boxes, dtype=np.float64) / scale
    boxes_original = np.rint(original).astype(np.int32).reshape(-1, 4)
    return Windows(pixels, boxes_original, (image.width, image.height))


def _squash(img: Image.Image) -> np.ndarray:
    size = (WINDOW_INPUT, WINDOW_INPUT)
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def content_mask(image: UprightImage) -> Image.Image:
    """Where the query has content: its alpha, else all but a plain background that touches
    the border (a circular crop on white, even colour-shifted since); all of it when neither
    is found. The edge is eroded a little: resizing and JPEG blend it with the background."""
    if image.alpha is not None:
        mask = Image.fromarray(np.where(image.alpha > 127, 255, 0).astype(np.uint8))
        return _eroded(mask)
    rgb = np.asarray(image.rgb).astype(np.int16)
    h, w = rgb.shape[:2]
    corners = np.stack([rgb[0, 0], rgb[0, w - 1], rgb[h - 1, 0], rgb[h - 1, w - 1]])
    colour = np.median(corners, axis=0)
    if np.abs(corners - colour).max() > BLANK_TOLERANCE:  # no common background colour
        return Image.new("L", image.rgb.size, 255)
    near = np.abs(rgb - colour).max(axis=2) <= BLANK_TOLERANCE
    # Pillow's flood fill and filters run pixel by pixel in Python: a large query's mask is
    # found on a copy of at most MASK_WORK_SIDE px, then scaled back.
    blank = Image.fromarray(np.where(near, 128, 0).astype(np.uint8))
    if max(w, h) > MASK_WORK_SIDE:
        factor = MASK_WORK_SIDE / max(w, h)
        small = (max(1, round(w * factor)), max(1, round(h * factor)))
        blank = blank.resize(small, Image.Resampling.NEAREST)
    blank = blank.copy()  # writable: an array's image is read-only to floodfill
    sw, sh = blank.size
    for corner in ((0, 0), (sw - 1, 0), (0, sh - 1), (sw - 1, sh - 1)):
        if blank.getpixel(corner) == 128:
            ImageDraw.floodfill(blank, corner, 255)
    background = np.asarray(blank) == 255
    if background.mean() < MIN_BLANK_SHARE or background.all():
        return Image.new("L", image.rgb.size, 255)
    mask = _eroded(Image.fromarray(np.where(background, 0, 255).astype(np.uint8)))
    return mask.resize(image.rgb.size, Image.Resampling.NEAREST)


def _eroded(mask: Image.Image) -> Image.Image:
    if max(mask.size) > MASK_WORK_SIDE:  # an alpha channel of a large query
        full = mask.size
        factor = MASK_WORK_SIDE / max(full)
        small = (max(1, round(full[0] * factor)), max(1, round(full[1] * factor)))
        return _eroded(mask.resize(small, Image.Resampling.NEAREST)).resize(
            full, Image.Resampling.NEAREST
        )
    radius = max(2, round(EDGE_EROSION * min(mask.size)))
    return mask.filter(ImageFilter.MinFilter(2 * radius + 1))


def largest_square(mask: np.ndarray, work_side: int = 160) -> Box:
    """The largest all-content square of a boolean (h, w) mask: a dynamic programme on a copy
    scaled to `work_side` px at most, the box scaled back."""
    factor = min(1.0, work_side / max(mask.shape))
    if factor < 1.0:
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (max(1, int(mask.shape[1] * factor)), max(1, int(mask.shape[0] * factor))),
            Image.Resampling.NEAREST,
        )
        x, y, w, _ = largest_square(np.asarray(small) > 0, work_side)
        # one working pixel in from every side: the nearest-neighbour copy may overreach
        side = max(0, int((w - 2) / factor))
        return (int((x + 1) / factor), int((y + 1) / factor), side, side) if side else (0, 0, 0, 0)
    h, w = mask.shape
    best, at = 0, (0, 0)
    previous = np.zeros(w + 1, dtype=np.int32)
    for y in range(h):
        row = np.zeros(w + 1, dtype=np.int32)
        for x in (int(i) for i in np.flatnonzero(mask[y])):
            row[x + 1] = 1 + min(previous[x], previous[x + 1], row[x])
            if row[x + 1] > best:
                best, at = int(row[x + 1]), (x, y)
        previous = row
    x, y = at
    return (x - best + 1, y - best + 1, best, best) if best else (0, 0, 0, 0)


def prepare_query(image: UprightImage) -> RegionQuery:
    """The query's region input: squashed whole; for a masked query the largest square
    inside its mask instead (the blank corners would match no window: measured, the source
    came first 84 % of the time that way, 46 % from the whole)."""
    mask = content_mask(image)
    content = np.asarray(mask) > 0
    if not content.all() and content.any():
        x, y, w, h = largest_square(content)
        if w >= MIN_INNER_SQUARE:
            inner = _squash(image.rgb.crop((x, y, x + w, y + h)))
            return RegionQuery(inner[None], image.rgb, mask)
    return RegionQuery(_squash(image.rgb)[None], image.rgb, mask)


def region_windows(data: bytes, settings: Settings) -> Windows:
    """The region windows of an image (a collection with regions), decoded on the CPU."""
    upright = decode_upright(data, max_side=MAX_SIDE, max_pixels=settings.max_image_pixels)
    return cut_windows(upright)


WINDOWS_PER_PASS = 256
WINDOW_MICRO_BATCH = 64  # region windows per embed call: bounds the float copy's memory


def embed_windows(encoder: Encoder, windows: dict[str, Windows]) -> dict[str, ImageRegions]:
    """Every image's windows (by image id) embedded, in large batches."""
    if not windows:
        return {}
    pixels = np.concatenate([w.pixels for w in windows.values()])
    vectors = np.concatenate(
        [
            encoder.embed(pixels[start : start + WINDOWS_PER_PASS], _window_batch(encoder))
            for start in range(0, len(pixels), WINDOWS_PER_PASS)
        ]
    )
    out: dict[str, ImageRegions] = {}
    start = 0
    for id_, w in windows.items():
        out[id_] = ImageRegions(w.boxes, vectors[start : start + len(w.boxes)], w.image_size)
        start += len(w.boxes)
    return out


def _window_batch(encoder: Encoder) -> int | None:
    """Windows per forward pass: on a CPU more than the runtime's own batch of 224 px images
    (a 96 px window is a fifth of the work, and one image has ~200); elsewhere its own."""
    return max(WINDOW_MICRO_BATCH, encoder.micro_batch) if encoder.device.type == "cpu" else None
