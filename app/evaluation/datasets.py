"""The folders measured: image files, `<class>/<images>` labels, and reproducible samples."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def list_labelled(folder: Path) -> list[tuple[Path, str]]:
    """(image, class) for every image under `folder/<class>/` (recursively)."""
    return [
        (path, cls.name)
        for cls in sorted(p for p in folder.iterdir() if p.is_dir())
        for path in list_images(cls)
    ]


def sample(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """A reproducible sample of at most `limit` items, in their original order."""
    if limit is None or limit <= 0 or len(items) <= limit:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]
