"""How close our vectors are to the naive fp32 ones: cosine, and top-10 neighbour overlap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.bench.common import TOP_K

if TYPE_CHECKING:
    import numpy as np


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Mean fraction of each item's top-k neighbours (itself excluded) shared by a and b."""
    import numpy as np

    k = min(k, len(a) - 1)
    if k < 1:
        return 1.0
    tops = []
    for vectors in (a, b):
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        tops.append(np.argsort(-sims, axis=1, kind="stable")[:, :k])
    shared = [len(set(x) & set(y)) / k for x, y in zip(tops[0], tops[1], strict=True)]
    return float(np.mean(shared))


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How close our vectors are to the reference ones, row by row (same images)."""
    import numpy as np

    cosine = (ours * reference).sum(axis=1)
    return {
        "cosine_mean": float(cosine.mean()),
        "cosine_p1": float(np.percentile(cosine, 1)),
        "cosine_min": float(cosine.min()),
        "top10_overlap": top_k_overlap(ours, reference),
    }
