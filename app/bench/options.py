"""What `picsearch bench` was asked to measure, and the Settings that follow from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.common import bench_settings

if TYPE_CHECKING:
    from app.core.config import Settings


@dataclass
class BenchOptions:
    images: Path | None = None
    count: int = 200
    model: str | None = None
    weights: str = "random"
    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    repeat: int = 3
    queries: int = 50
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    compile: bool = False
    index_type: str | None = None
    max_side: int | None = None
    naive_count: int | None = None
    processes: int = 1
    skip_lite: bool = False


def model_settings(base: Settings, opts: BenchOptions, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {"weights": opts.weights, **extra}
    for key in ("model", "device", "batch_size", "precision", "index_type"):
        value = getattr(opts, key)
        if value is not None:
            overrides[key] = value
    return bench_settings(base, **overrides)
