"""A collection's int8 calibration during its first load, in the worker that embeds it.

The first `CALIBRATION_IMAGES` images the load decodes are kept (each batch before it is
embedded, with the collection's own runtime: the gate's mixed figure checks that int8
vectors and those fp32 ones find the same neighbours); then the int8 recipes are gated on
them and, if one passes and is faster, the batch that completed them and the rest of the
load run int8. One worker process
calibrates a collection at a time; the others go on with the collection's own runtime.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from app.core.vectorstore import CollectionMeta
from app.ml.encoder import Encoder
from app.ml.int8_gate import MIN_IMAGES
from app.ml.int8_runtime import CALIBRATION_IMAGES, Int8Encoders, calibrate, failed_record

log = logging.getLogger(__name__)


class Calibrator:
    """Collects a chunk's first decoded images; `feed` returns the encoder to go on with."""

    def __init__(
        self, int8: Int8Encoders, name: str, meta: CollectionMeta, encoder: Encoder
    ) -> None:
        self.int8 = int8
        self.name = name
        self.meta = meta
        self.encoder = encoder
        self.images = CALIBRATION_IMAGES
        self._pixels: list[np.ndarray] = []
        self._done = False

    def feed(self, pixels: np.ndarray | torch.Tensor) -> Encoder:
        """Keep `pixels` (a batch just embedded); calibrate once enough are kept."""
        if self._done or isinstance(pixels, torch.Tensor) and pixels.device.type != "cpu":
            return self.encoder
        self._pixels.extend(np.asarray(pixels))
        if len(self._pixels) >= self.images:
            return self.finish()
        return self.encoder

    def finish(self) -> Encoder:
        """Calibrate on what was kept (at the end of a chunk, a short first load calibrates
        on what it had, if enough for the gate); the encoder to use from now on."""
        if not self._done:
            self._done = True
            pixels, self._pixels = self._pixels[: self.images], []
            self.encoder = self._calibrate(pixels)
        return self.encoder

    def _calibrate(self, pixels: list[np.ndarray]) -> Encoder:
        if len(pixels) < MIN_IMAGES:
            return self.encoder  # too few to judge: a later load calibrates
        store = self.int8.store
        with store.calibrating(self.name, self.meta) as mine:
            if not mine or store.read(self.name, self.meta) is not None:
                return self.int8.encoder(self.name, self.meta, self.encoder)
            try:
                kept = np.stack(pixels)
                calibrate(store, self.name, self.meta, self.encoder, kept, self.int8.race)
            except Exception as exc:  # int8 is an optimisation: a failure never fails the load
                log.exception("int8 calibration of collection %s failed", self.name)
                store.write(self.name, self.meta, failed_record(exc, len(pixels)))
                return self.encoder
        return self.int8.encoder(self.name, self.meta, self.encoder)
