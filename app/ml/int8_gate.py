"""The int8 accuracy gate: a collection runs int8 only if, on its own images with the weights
it really uses, int8 vectors find the same neighbours as fp32 ones, and only if int8 is
also faster here than the runtime the collection would otherwise use.

Neighbours are compared within the calibration set: for each image, its top-10 among the
others with fp32 vectors vs with int8 vectors (`overlap`), and with an fp32 query against
int8 vectors (`mixed_overlap`: queries may run on another runtime than loads, and a
collection's first vectors stay the fp32 ones they were written as).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from app.ml import int8
from app.ml.int8 import Recipe
from app.ml.runtime_choice import ROUNDS, time_call
from app.ml.trunks import TrunkFn, pool_features

log = logging.getLogger(__name__)

TOP_K = 10
MIN_OVERLAP = 0.95
MIN_MEAN_COSINE = 0.99
# Fewer images than this make a top-10 overlap meaningless (10 neighbours of 11 always agree).
MIN_IMAGES = 2 * TOP_K + 4


@dataclass(frozen=True)
class GateFigures:
    """One recipe as the gate saw it."""

    recipe: str
    overlap: float | None
    mixed_overlap: float | None
    mean_cosine: float | None
    min_cosine: float | None
    passed: bool
    note: str = ""

    def describe(self) -> str:
        if self.overlap is None:
            return f"{self.recipe}: {self.note}"
        return (
            f"{self.recipe}: top-{TOP_K} overlap {self.overlap:.3f}, mixed {self.mixed_overlap:.3f}"
            f", cosine mean {self.mean_cosine:.4f} min {self.min_cosine:.4f}"
            + (f" ({self.note})" if self.note else "")
        )


def vectors(fn: TrunkFn, x: torch.Tensor, pooling: str, batch: int = 8) -> torch.Tensor:
    """L2-normalised pooled vectors of normalised input `x`, `batch` images per call."""
    with torch.inference_mode():
        pooled = [pool_features(fn(x[i : i + batch]), pooling) for i in range(0, len(x), batch)]
    return torch.nn.functional.normalize(torch.cat(pooled), dim=1)


def _neighbours(queries: torch.Tensor, base: torch.Tensor, k: int) -> torch.Tensor:
    scores = queries @ base.T
    scores.fill_diagonal_(-2.0)  # an image is not its own neighbour
    return scores.topk(k, dim=1).indices


def neighbour_overlap(reference: torch.Tensor, queries: torch.Tensor, base: torch.Tensor) -> float:
    """Mean share of each image's top-k under `reference` vectors that `queries` searched
    against `base` finds (all three row-aligned on the same images)."""
    k = min(TOP_K, len(reference) - 1)
    expected = _neighbours(reference, reference, k)
    found = _neighbours(queries, base, k)
    shared = [len(set(e.tolist()) & set(f.tolist())) for e, f in zip(expected, found, strict=True)]
    return sum(shared) / (k * len(shared))


def judge(
    recipe: str, fp32: torch.Tensor, quantized: torch.Tensor, min_overlap: float = MIN_OVERLAP
) -> GateFigures:
    """The gate's figures and verdict for int8 vectors `quantized` vs `fp32` (row-aligned)."""
    cosine = (fp32 * quantized).sum(dim=1)
    overlap = neighbour_overlap(fp32, quantized, quantized)
    mixed = min(neighbour_overlap(fp32, fp32, quantized), neighbour_overlap(fp32, quantized, fp32))
    mean_cos, min_cos = float(cosine.mean()), float(cosine.min())
    failures = []
    if overlap < min_overlap:
        failures.append(f"overlap below {min_overlap}")
    if mixed < min_overlap:
        failures.append(f"mixed overlap below {min_overlap}")
    if not mean_cos >= MIN_MEAN_COSINE:
        failures.append(f"mean cosine below {MIN_MEAN_COSINE}")
    return GateFigures(
        recipe,
        round(overlap, 4),
        round(mixed, 4),
        round(mean_cos, 5),
        round(min_cos, 5),
        not failures,
        "; ".join(failures),
    )


@dataclass(frozen=True)
class GateResult:
    """Every recipe tried, in order, and the model of the first that passed (None if none)."""

    figures: tuple[GateFigures, ...]
    accepted: Recipe | None
    model: Any  # the accepted int8 OpenVINO model, not yet saved
    fn: TrunkFn | None  # that model compiled
    images: int
    seconds: float
    compiled: dict[str, TrunkFn] = field(default_factory=dict)  # every recipe that ran

    def reason(self) -> str:
        tried = "; ".join(f.describe() for f in self.figures)
        if self.accepted is None:
            return f"no int8 recipe passed the gate on {self.images} images: {tried}"
        return f"{self.accepted.name} passed the gate on {self.images} images: {tried}"

    def figures_json(self) -> list[dict[str, object]]:
        return [asdict(f) for f in self.figures]


def run_gate(
    trunk: nn.Module,
    calibration: torch.Tensor,
    pooling: str,
    image_size: int,
    threads: int,
    recipes: Sequence[Recipe] | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> GateResult:
    """Quantize `trunk` with each recipe in order on `calibration` (normalised input) and keep
    the first whose vectors pass the gate against eager fp32 on those same images."""
    started = time.perf_counter()
    fp32 = vectors(trunk, calibration, pooling)
    figures: list[GateFigures] = []
    compiled: dict[str, TrunkFn] = {}
    for recipe in recipes if recipes is not None else int8.recipes_for(trunk):
        try:
            model = int8.quantize(trunk, calibration, recipe, image_size)
            fn = int8.compile_model(model, image_size, threads)
            got = vectors(fn, calibration, pooling)
            compiled[recipe.name] = fn
        except Exception as exc:  # NNCF or OpenVINO failing in any way refuses the recipe
            note = f"does not run here: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            figures.append(GateFigures(recipe.name, None, None, None, None, False, note))
            continue
        verdict = judge(recipe.name, fp32, got, min_overlap)
        log.info("int8 gate: %s", verdict.describe())
        figures.append(verdict)
        if verdict.passed:
            seconds = round(time.perf_counter() - started, 2)
            return GateResult(
                tuple(figures), recipe, model, fn, len(calibration), seconds, compiled
            )
    seconds = round(time.perf_counter() - started, 2)
    return GateResult(tuple(figures), None, None, None, len(calibration), seconds, compiled)


def race(contenders: dict[str, TrunkFn], x: torch.Tensor) -> dict[str, float]:
    """Images per second of each contender on `x`: warmed up, then timed in interleaved
    rounds keeping each one's best, as the CPU runtime measurement times its candidates."""
    with torch.inference_mode():
        for fn in contenders.values():
            fn(x)
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(ROUNDS):
        for name, fn in contenders.items():
            best[name] = max(best[name], time_call(fn, x))
    return {name: round(speed, 3) for name, speed in best.items()}
