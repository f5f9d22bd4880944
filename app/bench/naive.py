"""The naive reference: the seed's loop (PIL full decode + resize, fp32 eager batch of one,
one upsert per image), timed by stage.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from app.bench.common import STAGES
from app.bench.runs import IngestRun

if TYPE_CHECKING:
    import numpy as np

    from app.core.config import Settings
    from app.core.vectorstore import VectorStore


def naive_decode(data: bytes, size: int) -> np.ndarray:
    """The seed's decoding: PIL full decode, upright, RGB, resized; no DCT-domain shortcut."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


class NaiveEncoder:
    """The seed's inference: the plain eager fp32 trunk (NCHW), one image per call, on the
    configured device (the seed's Keras used a GPU where it found one)."""

    def __init__(self, settings: Settings) -> None:
        import torch

        from app.ml.encoder import build_backbone, pick_device, resolve_weights
        from app.ml.trunks import IMAGENET_MEAN, IMAGENET_STD

        state, _ = resolve_weights(settings)
        self.device = pick_device(settings.device)
        self.trunk = build_backbone(settings.model, state).to(self.device)
        self.pooling = settings.pooling
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def embed_one(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from app.ml.trunks import pool_features

        with torch.inference_mode():
            x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
            x = x.unsqueeze(0).to(self.device).float() / 255  # ToTensor(): contiguous NCHW
            fmap = self.trunk((x - self._mean) / self._std)
            vector = torch.nn.functional.normalize(pool_features(fmap, self.pooling), dim=1)
            return vector[0].cpu().numpy()


class _Clock:
    """Accumulated seconds per stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[stage] += time.perf_counter() - start


def run_naive(
    settings: Settings, naive: NaiveEncoder, folder: Path, store: VectorStore, limit: int
) -> tuple[IngestRun, dict[str, np.ndarray]]:
    """The seed's loop: for each file, read, full decode, embed alone, upsert alone; then
    one flush on Milvus Lite, as our pipeline's job does at its end. Only the first `limit`
    files."""
    import hashlib

    from app.core.vectorstore import ImageRow, image_id
    from app.ml.imageio import has_image_extension

    clock = _Clock()
    vectors: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    with clock("other"):
        paths = sorted(p for p in folder.rglob("*") if has_image_extension(p.name))[:limit]
    for path in paths:
        with clock("decode"):
            resolved = str(path.resolve())
            st = path.stat()
            data = path.read_bytes()
            pixels = naive_decode(data, settings.image_size)
        with clock("embed"):
            vector = naive.embed_one(pixels)
        row = ImageRow(
            id=image_id(resolved),
            vector=vector.tolist(),
            path=resolved,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            content_hash=hashlib.blake2b(data, digest_size=16).hexdigest(),
            job_id="bench-naive",
        )
        with clock("write"):
            store.upsert([row])
        vectors[row["id"]] = vector
    with clock("write"):
        store.finish_load()
    seconds = time.perf_counter() - start
    stages = {s: clock.totals[s] for s in STAGES}
    return IngestRun(len(paths), seconds, stages), vectors
