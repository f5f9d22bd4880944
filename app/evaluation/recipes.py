"""The recipe grid's vocabulary: how an image becomes a model input (`Prep`), how a feature
map becomes a vector (`Recipe`), and the service's and the seed's recipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.config import Settings


POOLINGS = ("mac", "spoc", "gem", "rmac")


RESIZE_MODES: dict[str, str] = {
    "squash-nearest": "whole image squashed to SxS, nearest neighbour, no JPEG draft (the seed)",
    "squash-bilinear": "JPEG DCT draft >= 2S, whole image squashed to SxS, bilinear (service "
    "path: app.ml.imageio.decode_image)",
    "crop": "JPEG draft >= 2S, shorter side to S (bilinear), centre SxS crop",
    "pad": "JPEG draft >= 2S, longer side to S (bilinear), padded to SxS with the ImageNet "
    "mean; pooling only over the feature cells covering the image",
}


SEED_RECIPE = ("squash-nearest", 224, "mac")


@dataclass(frozen=True, order=True)
class Prep:
    """How an image becomes an SxS model input."""

    mode: str
    size: int

    @property
    def name(self) -> str:
        return f"{self.mode}@{self.size}"


@dataclass(frozen=True)
class Recipe:
    prep: Prep
    pooling: str
    whiten: int = 0  # PCA-whitening dimension; 0: none

    @property
    def name(self) -> str:
        base = f"{self.pooling} {self.prep.mode} {self.prep.size}"
        return base + (f" +pcaw{self.whiten}" if self.whiten else "")

    @property
    def base(self) -> Recipe:
        return Recipe(self.prep, self.pooling)


def current_recipe(settings: Settings) -> Recipe:
    """The service's configured recipe in grid terms (decode_image squashes bilinearly)."""
    return Recipe(Prep("squash-bilinear", settings.image_size), settings.pooling)


def seed_recipe() -> Recipe:
    mode, size, pooling = SEED_RECIPE
    return Recipe(Prep(mode, size), pooling)
