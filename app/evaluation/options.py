"""What `picsearch eval` was asked to measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.evaluation.recipes import POOLINGS, RESIZE_MODES


@dataclass
class EvalOptions:
    labelled: Path | None = None
    originals: Path | None = None
    k: int = 10
    limit: int | None = None  # sample at most this many images per folder
    dup_queries: int | None = 100  # originals turned into queries (None/0: all)
    compare: bool = False
    sizes: tuple[int, ...] = (224, 320)
    resize_modes: tuple[str, ...] = tuple(RESIZE_MODES)
    poolings: tuple[str, ...] = POOLINGS
    whiten: int = 128  # PCA-whitening dimension for --compare; 0: off
    cache: Path | None = None  # --compare: keep vectors (and generated queries) here
    crops: Path | None = None  # originals to cut crop queries from
    crop_queries: int = 60  # crops cut (each in every variant); 0: one per original
    regions: tuple[str, ...] = ()  # --crops: region designs to prototype (regions.REGION_DESIGNS)
    progress: Callable[[str, int], Callable[[int], None]] | None = None
