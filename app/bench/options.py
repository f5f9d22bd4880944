"""What `picsearch bench` was asked to measure, and the Settings that follow from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.measure.options import SettingsFlags, settings_with

if TYPE_CHECKING:
    from app.core.config import Settings


@dataclass
class BenchOptions:
    images: Path | None = None
    count: int = 200
    flags: SettingsFlags = field(default_factory=lambda: SettingsFlags(weights="random"))
    repeat: int = 3
    queries: int = 50
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    compile: bool = False
    max_side: int | None = None
    naive_count: int | None = None
    processes: int = 1
    skip_lite: bool = False
    search_size: int | None = None
    during_load: bool = False


def model_settings(base: Settings, opts: BenchOptions, **extra: Any) -> Settings:
    # the CPU runtime measurement is the machine's, not the temporary data dir's
    extra.setdefault("runtime_cache_dir", base.effective_runtime_cache_dir)
    return settings_with(base, **opts.flags.overrides(), **extra)
