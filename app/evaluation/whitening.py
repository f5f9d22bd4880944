"""PCA-whitening of vectors, the `+pcaw` step of a recipe."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Whitening:
    """PCA-whitening (Jégou & Chum 2012) learned without labels on the indexed vectors."""

    mean: np.ndarray
    projection: np.ndarray  # (D, d)

    @classmethod
    def learn(cls, vectors: np.ndarray, dim: int) -> Whitening:
        x = vectors.astype(np.float64)
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        eig = s**2 / max(1, len(x) - 1)
        d = max(1, min(dim, int((eig > eig[0] * 1e-9).sum())))
        scale = np.sqrt(eig[:d] + eig[0] * 1e-9 + 1e-12)  # no division by zero
        return cls(mean, (vt[:d].T / scale).astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        y = (vectors - self.mean.astype(np.float32)) @ self.projection
        return l2_normalise(y)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out
