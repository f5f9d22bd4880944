"""Feature maps to vectors: the service's poolings, and R-MAC, which exists only here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def rmac_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int, int]]:
    """R-MAC regions (top, left, height, width) of an h x w map: the whole map, then square
    regions of side 2*min(h,w)/(l+1) on levels l = 1..L with ~40 % overlap (Tolias et al.
    2016, laid out as in Radenović's cirtorch `rmac`)."""
    overlap = 0.4
    side = min(h, w)
    extra_h = extra_w = 0
    if h != w:
        steps = np.arange(2, 8, dtype=np.float64)
        b = (max(h, w) - side) / (steps - 1)
        idx = int(np.argmin(np.abs((side**2 - side * b) / side**2 - overlap)))
        if h < w:
            extra_w = idx + 1
        else:
            extra_h = idx + 1
    regions = [(0, 0, h, w)]
    for level in range(1, levels + 1):
        wl = math.floor(2 * side / (level + 1))
        if wl == 0:
            continue
        n_w, n_h = level + extra_w, level + extra_h
        bw = 0.0 if n_w == 1 else (w - wl) / (n_w - 1)
        bh = 0.0 if n_h == 1 else (h - wl) / (n_h - 1)
        tops = [math.floor(i * bh) for i in range(n_h)]
        lefts = [math.floor(j * bw) for j in range(n_w)]
        regions += [(t, left, wl, wl) for t in tops for left in lefts]
    return regions


def rmac(fmap: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Sum of the L2-normalised MAC vectors of the R-MAC regions: (N, C, H, W) -> (N, C)."""
    import torch

    x = fmap.float()
    total = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
    for top, left, rh, rw in rmac_regions(int(x.shape[2]), int(x.shape[3]), levels):
        v = x[:, :, top : top + rh, left : left + rw].amax(dim=(2, 3))
        total += torch.nn.functional.normalize(v, dim=1, eps=1e-6)
    return total


def pool(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """mac / spoc / gem exactly as the service (`pool_features`), or rmac."""
    from app.ml.trunks import pool_features

    return rmac(fmap) if pooling == "rmac" else pool_features(fmap, pooling)
