"""Verification of a region hit: masked normalised cross-correlation (NCC) of the query crop
against the candidate image around the hit's box, over a small scale pyramid.

For a crop cut at the same scale this is near-exact (a peak of ~1 at the right place), and
NCC on grey pixels ignores brightness/contrast shifts; a crop resized by s is matched by
undoing s from the pyramid. Plain numpy FFTs: no OpenCV needed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SCALES = (0.5, 0.71, 1.0, 1.41, 2.0)  # the query's assumed scale relative to its source
MIN_TEMPLATE = 16
VERIFIED_NCC = 0.85
# Templates at least this small side are matched at half resolution first; the full one is
# computed only where that reached COARSE_NCC.
COARSE_FROM = 48
COARSE_NCC = 0.6
# A query much larger than the matching window is not a detail of it: whole photos are
# ranked by their global vector.
MAX_TEMPLATE_PER_WINDOW = 2


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFTs of such lengths are several times faster."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = p35
            while q < n:
                q *= 2
            best = min(best, q)
            p35 *= 3
        p5 *= 5
    return best


def _correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Valid cross-correlation (H-h+1, W-w+1) of two 2-D float arrays by FFT."""
    h, w = kernel.shape
    shape = (_fast_length(image.shape[0] + h - 1), _fast_length(image.shape[1] + w - 1))
    spectrum = np.fft.rfft2(image, shape) * np.fft.rfft2(kernel[::-1, ::-1], shape)
    full = np.fft.irfft2(spectrum, shape)
    return full[h - 1 : image.shape[0], w - 1 : image.shape[1]]


def _box_sums(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of every h x w window of `image` (valid placements), from an integral image."""
    integral = np.zeros((image.shape[0] + 1, image.shape[1] + 1))
    integral[1:, 1:] = image.cumsum(0).cumsum(1)
    return integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w]


def ncc_map(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """NCC of `template` (pixels where `mask` > 0) at every placement in `image`; None when
    it cannot be computed (template larger than the image, or flat)."""
    m = (mask > 0).astype(np.float64)
    n = m.sum()
    if n < 16 or template.shape[0] > image.shape[0] or template.shape[1] > image.shape[1]:
        return None
    t = template.astype(np.float64)
    t = (t - (t * m).sum() / n) * m
    t_energy = float((t * t).sum())
    if t_energy <= 1e-6:
        return None
    img = image.astype(np.float64)  # float32 sums of squares lose the variance
    num = _correlate(img, t)
    if n == m.size:  # a plain rectangle: window sums from integral images
        local_sum = _box_sums(img, *m.shape)
        local_sq = _box_sums(img * img, *m.shape)
    else:
        local_sum = _correlate(img, m)
        local_sq = _correlate(img * img, m)
    variance = np.maximum(local_sq - local_sum * local_sum / n, 1e-6)
    result: np.ndarray = num / np.sqrt(variance * t_energy)
    return result


def masked_ncc(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> float:
    """Best NCC over every placement of `template` (pixels where `mask` > 0) in `image`."""
    scores = ncc_map(image, template, mask)
    return -1.0 if scores is None else float(scores.max())


def locate(
    query: Image.Image,
    query_mask: Image.Image,
    candidate: Image.Image,
    box: tuple[int, int, int, int],
    window: int | None = None,
) -> tuple[float, tuple[int, int, int, int] | None]:
    """Best NCC of `query` (grey, inside `query_mask`) against `candidate` near `box` (x, y, w, h
    in the candidate's pixels), over the scale pyramid, and where it peaked (a box in the
    candidate's pixels). (-1, None) when nothing could be compared. Templates larger than
    MAX_TEMPLATE_PER_WINDOW times `window` (default: the box's side) are not tried."""
    grey = candidate.convert("L")
    query_grey = query.convert("L")
    x, y, w, h = box
    largest = MAX_TEMPLATE_PER_WINDOW * (window or max(w, h))
    best, where = -1.0, None
    for scale in SCALES:
        size = (round(query.width / scale), round(query.height / scale))
        if min(size) < MIN_TEMPLATE or max(size) > largest:
            continue  # too small to tell, or far more than the window that led here
        # The window only says roughly where: the query may lie in a neighbouring one.
        margin_x, margin_y = max(size[0], w) // 2 + 1, max(size[1], h) // 2 + 1
        left, top = max(0, x - margin_x), max(0, y - margin_y)
        right = min(grey.width, x + w + margin_x)
        bottom = min(grey.height, y + h + margin_y)
        piece = grey.crop((left, top, right, bottom))
        if scale < 1.0:
            # The query is smaller than its source: compare at the query's resolution (the
            # source shrunk as the query was), not with the query blown up and blurred.
            shrunk = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
            area = np.asarray(piece.resize(shrunk, Image.Resampling.LANCZOS), dtype=np.float64)
            template = np.asarray(query_grey)
            mask = np.asarray(query_mask)
        else:
            area = np.asarray(piece, dtype=np.float64)
            template = np.asarray(query_grey.resize(size, Image.Resampling.BILINEAR))
            mask = np.asarray(query_mask.resize(size, Image.Resampling.NEAREST))
        found = _peak(area, template, mask)
        if found is not None and found[0] > best:
            factor = 1.0 / scale if scale < 1.0 else 1.0
            best = found[0]
            where = (
                left + round(found[2] * factor),
                top + round(found[1] * factor),
                size[0],
                size[1],
            )
    return best, where


def _peak(
    area: np.ndarray, template: np.ndarray, mask: np.ndarray
) -> tuple[float, int, int] | None:
    """(NCC, row, column) of the best placement of `template` in `area`. A large template is
    first matched at half resolution (a quarter of the work); only where that comes close is
    the full resolution computed, around the coarse peak."""
    if min(template.shape) >= COARSE_FROM:
        half = (slice(None, None, 2), slice(None, None, 2))
        coarse = ncc_map(area[half], template[half], mask[half])
        if coarse is None:
            return None
        row, col = np.unravel_index(int(np.argmax(coarse)), coarse.shape)
        if float(coarse[row, col]) < COARSE_NCC:
            return float(coarse[row, col]), 2 * int(row), 2 * int(col)
        top, left = max(0, 2 * int(row) - 4), max(0, 2 * int(col) - 4)
        h, w = template.shape
        near = area[top : top + h + 8, left : left + w + 8]
        fine = ncc_map(near, template, mask)
        if fine is None:
            return None
        r, c = np.unravel_index(int(np.argmax(fine)), fine.shape)
        return float(fine[r, c]), top + int(r), left + int(c)
    scores = ncc_map(area, template, mask)
    if scores is None:
        return None
    row, col = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[row, col]), int(row), int(col)


def verify(
    query: Image.Image,
    query_mask: Image.Image,
    candidate: Image.Image,
    box: tuple[int, int, int, int],
) -> float:
    """`locate`'s peak alone."""
    return locate(query, query_mask, candidate, box)[0]
