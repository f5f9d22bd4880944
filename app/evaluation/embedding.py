"""Vectors of an image set: through the service's own path (`embed_service`), or for every
recipe of the grid from one forward pass per input (`embed_grid`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.evaluation.pooling import pool
from app.evaluation.preprocess import Prepared, prepare, valid_cells
from app.evaluation.recipes import Prep, Recipe, current_recipe

if TYPE_CHECKING:
    import torch

    from app.core.config import Settings
    from app.ml.encoder import Encoder


@dataclass
class Embedded:
    """Vectors of one image set for each recipe, and which files could not be used."""

    vectors: dict[Recipe, np.ndarray]
    ok: list[int]  # indices into the input list of the images embedded
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    seconds: dict[Prep, float] = field(default_factory=dict)  # forward time per prep


def feature_maps(encoder: Encoder, pixels: np.ndarray) -> torch.Tensor:
    """The trunk's (N, C, H, W) float32 map, computed exactly as Encoder.embed computes it."""
    return encoder.feature_map(np.ascontiguousarray(pixels))


def _grid_vectors(
    encoder: Encoder, batch: list[Prepared], preps: Sequence[Prep], poolings: Sequence[str]
) -> tuple[dict[Recipe, np.ndarray], dict[Prep, float]]:
    import torch

    out: dict[Recipe, np.ndarray] = {}
    seconds: dict[Prep, float] = {}
    for prep in preps:
        start = time.perf_counter()
        fmap = feature_maps(encoder, np.stack([p[prep][0] for p in batch]))
        seconds[prep] = time.perf_counter() - start
        fh, fw = int(fmap.shape[2]), int(fmap.shape[3])
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, p in enumerate(batch):
            groups[valid_cells(p[prep][1], prep.size, fh, fw)].append(i)
        for pooling in poolings:
            pooled = torch.empty(fmap.shape[:2], dtype=torch.float32, device=fmap.device)
            for (rows, cols), idx in groups.items():
                pooled[idx] = pool(fmap[idx, :, :rows, :cols], pooling)
            vectors = torch.nn.functional.normalize(pooled, dim=1)
            out[Recipe(prep, pooling)] = vectors.cpu().numpy().astype(np.float32)
    return out, seconds


def _batched_prepared(
    paths: Sequence[Path], preps: Sequence[Prep], max_pixels: int, batch_size: int, threads: int
) -> Iterator[list[tuple[int, Prepared | str]]]:
    """Decode ahead on a thread pool, one batch in flight while the caller embeds another."""

    def load(i: int) -> tuple[int, Prepared | str]:
        from app.ml.imageio import ImageDecodeError

        try:
            return i, prepare(paths[i].read_bytes(), preps, max_pixels)
        except ImageDecodeError as exc:
            return i, exc.reason
        except (OSError, ValueError) as exc:
            return i, str(exc)

    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=threads) as pool_:

        def submit(start: int) -> list[Future[tuple[int, Prepared | str]]]:
            return [
                pool_.submit(load, i) for i in range(start, min(start + batch_size, len(paths)))
            ]

        pending = submit(0) if len(paths) else []
        for start in starts:
            current = pending
            if start + batch_size < len(paths):
                pending = submit(start + batch_size)
            yield [f.result() for f in current]


def embed_grid(
    encoder: Encoder,
    paths: Sequence[Path],
    preps: Sequence[Prep],
    poolings: Sequence[str],
    *,
    max_pixels: int,
    batch_size: int = 16,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Embedded:
    """Vectors of `paths` for every (prep, pooling) in the grid."""
    parts: dict[Recipe, list[np.ndarray]] = defaultdict(list)
    result = Embedded({}, [])
    for batch in _batched_prepared(paths, preps, max_pixels, batch_size, threads):
        good = [(i, p) for i, p in batch if not isinstance(p, str)]
        result.failed.update({str(paths[i]): p for i, p in batch if isinstance(p, str)})
        if good:
            vectors, seconds = _grid_vectors(encoder, [p for _, p in good], preps, poolings)
            for recipe, v in vectors.items():
                parts[recipe].append(v)
            for prep, s in seconds.items():
                result.seconds[prep] = result.seconds.get(prep, 0.0) + s
            result.ok += [i for i, _ in good]
        if progress is not None:
            progress(len(batch))
    dims = encoder.info.dim
    result.vectors = {
        Recipe(prep, pooling): (
            np.concatenate(parts[Recipe(prep, pooling)])
            if parts[Recipe(prep, pooling)]
            else np.zeros((0, dims), np.float32)
        )
        for prep in preps
        for pooling in poolings
    }
    return result


def embed_service(
    encoder: Encoder,
    settings: Settings,
    paths: Sequence[Path],
    *,
    progress: Callable[[int], None] | None = None,
) -> Embedded:
    """The service's own code path: decode_image + Encoder.embed, in batches."""
    from app.ml.imageio import ImageDecodeError, decode_image

    recipe = current_recipe(settings)
    result = Embedded({}, [])
    parts: list[np.ndarray] = []
    size, limit = settings.image_size, settings.max_image_pixels

    def load(i: int) -> tuple[int, np.ndarray | str]:
        try:
            return i, decode_image(paths[i].read_bytes(), size=size, max_pixels=limit).pixels
        except ImageDecodeError as exc:
            return i, exc.reason
        except OSError as exc:
            return i, str(exc)

    step = settings.batch_size_for(encoder.device.type)
    with ThreadPoolExecutor(max_workers=settings.effective_decode_threads) as pool_:
        for start in range(0, len(paths), step):
            batch = list(pool_.map(load, range(start, min(start + step, len(paths)))))
            good = [(i, p) for i, p in batch if not isinstance(p, str)]
            result.failed.update({str(paths[i]): p for i, p in batch if isinstance(p, str)})
            if good:
                t0 = time.perf_counter()
                parts.append(encoder.embed(np.stack([p for _, p in good])))
                result.seconds[recipe.prep] = (
                    result.seconds.get(recipe.prep, 0.0) + time.perf_counter() - t0
                )
                result.ok += [i for i, _ in good]
            if progress is not None:
                progress(len(batch))
    dim = encoder.info.dim
    result.vectors = {recipe: np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)}
    return result
