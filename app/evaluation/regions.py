"""Region designs for partial-copy search, prototyped in the evaluation only (`--regions`):
many vectors per indexed image, each with its box, searched exactly (cosine over every region
vector, best region per image, as Milvus `group_by_field="image_id"` would return), then
then the first SHORTLIST images verified by NCC around their best box (`verify`).

* `fmap`: the original's stride-32 feature map at its own scale (one forward pass); a vector
  per window of w x w cells (GeM, as the service pools), stride one cell. The query's own map
  at its scale and at x2 / x0.5 (the crop may have been resized); the best scale counts.
* `windows`: square windows cut from the original (sides in its pixels, stride half a side),
  each squashed to a small input and embedded as an image of its own; the query squashed to the
  same input. A forward pass per window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from app.evaluation.crops import CROP_KINDS, CropQuery, circle_mask
from app.evaluation.metrics import HIT_AT, evaluate_crops
from app.evaluation.preprocess import open_upright
from app.ml.verify import VERIFIED_NCC, verify

if TYPE_CHECKING:
    import torch

    from app.ml.encoder import Encoder

Box = tuple[int, int, int, int]  # x, y, w, h in the original's pixels
STRIDE = 32  # MobileNetV2 and VGG16 trunks
FMAP_CELLS = (2, 3, 4)
FMAP_QUERY_SCALES = (1.0, 2.0, 0.5)
WINDOW_SIDES = (96, 192)
WINDOW_INPUT = 96
SHORTLIST = 5  # verified by NCC
MAX_SIDE = 1600  # originals larger than this are scaled down first (boxes stay in its pixels)
REGION_DESIGNS: dict[str, str] = {
    "fmap": f"windows of {'/'.join(map(str, FMAP_CELLS))} cells of the stride-{STRIDE} map of "
    "the original at its own scale (GeM, stride 1 cell); query at x"
    + "/x".join(map(str, FMAP_QUERY_SCALES)),
    "service": "the service's own region search (app.evaluation.service_regions)",
    "windows": f"square windows of {'/'.join(map(str, WINDOW_SIDES))} px, stride half a side, "
    f"each embedded at {WINDOW_INPUT}x{WINDOW_INPUT}; query squashed to {WINDOW_INPUT}",
}


@dataclass
class RegionIndex:
    vectors: np.ndarray  # (M, D) float16, L2-normalised
    boxes: np.ndarray  # (M, 4) int32
    starts: list[int]  # image i owns rows starts[i]:starts[i + 1]
    seconds: float  # forward and pooling time over all images
    failed: dict[str, str] = field(default_factory=dict)

    def per_image(self) -> float:
        return len(self.vectors) / max(1, len(self.starts) - 1)


def trunk_map(encoder: Encoder, pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 of any size -> (N, C, h, w) float32 by the encoder's fp32 trunk
    (the service's CPU runtimes are built for its fixed input size)."""
    import torch

    from app.ml.trunks import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fmap: torch.Tensor = encoder.trunk(x.to(encoder.device)).float().cpu()
    return fmap


def _gem(fmap: torch.Tensor) -> np.ndarray:
    import torch

    from app.ml.trunks import pool_features

    pooled = torch.nn.functional.normalize(pool_features(fmap, "gem"), dim=1)
    return pooled.numpy().astype(np.float32)


def _window_pool(fmap: torch.Tensor, cells: int) -> tuple[np.ndarray, list[Box]]:
    """GeM of every cells x cells window (stride 1) of a (1, C, h, w) map."""
    import torch

    from app.ml.trunks import GEM_P

    _, _, h, w = fmap.shape
    if h < cells or w < cells:
        return np.zeros((0, fmap.shape[1]), np.float32), []
    powered = fmap.clamp(min=1e-6).pow(GEM_P)
    mean = torch.nn.functional.avg_pool2d(powered, cells, stride=1).pow(1.0 / GEM_P)
    vectors = torch.nn.functional.normalize(mean[0].flatten(1).T, dim=1).numpy()
    rows, cols = mean.shape[2], mean.shape[3]
    side = cells * STRIDE
    boxes = [(c * STRIDE, r * STRIDE, side, side) for r in range(rows) for c in range(cols)]
    return vectors.astype(np.float32), boxes


def _load(path: Path) -> tuple[Image.Image, float]:
    """The original upright, at most MAX_SIDE px, and the factor its pixels were scaled by."""
    img = open_upright(path.read_bytes())
    scale = min(1.0, MAX_SIDE / max(img.size))
    if scale < 1.0:
        size = (round(img.width * scale), round(img.height * scale))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img, scale


def _image_regions(encoder: Encoder, img: Image.Image, design: str) -> tuple[np.ndarray, list[Box]]:
    if design == "fmap":
        fmap = trunk_map(encoder, np.asarray(img)[None])
        parts = [_window_pool(fmap, cells) for cells in FMAP_CELLS]
        return np.concatenate([v for v, _ in parts]), [b for _, bs in parts for b in bs]
    boxes: list[Box] = []
    for side in WINDOW_SIDES:
        if side > min(img.size):
            continue
        step = side // 2
        boxes += [
            (x, y, side, side)
            for y in range(0, img.height - side + 1, step)
            for x in range(0, img.width - side + 1, step)
        ]
    if not boxes:  # a small original: itself as one window
        boxes = [(0, 0, img.width, img.height)]
    pixels = np.stack(
        [
            np.asarray(
                img.crop((x, y, x + w, y + h)).resize(
                    (WINDOW_INPUT, WINDOW_INPUT), Image.Resampling.BILINEAR
                )
            )
            for x, y, w, h in boxes
        ]
    )
    vectors = [_gem(trunk_map(encoder, pixels[i : i + 64])) for i in range(0, len(pixels), 64)]
    return np.concatenate(vectors), boxes


def build_index(
    encoder: Encoder,
    originals: Sequence[Path],
    design: str,
    progress: Callable[[int], None] | None = None,
) -> RegionIndex:
    """Region vectors of every original, in order (an unreadable one owns no rows)."""
    vectors: list[np.ndarray] = []
    boxes: list[Box] = []
    starts = [0]
    seconds = 0.0
    failed: dict[str, str] = {}
    for path in originals:
        try:
            img, scale = _load(path)
        except (OSError, ValueError, SyntaxError) as exc:
            failed[str(path)] = str(exc)
            starts.append(starts[-1])
            continue
        t0 = time.perf_counter()
        v, b = _image_regions(encoder, img, design)
        seconds += time.perf_counter() - t0
        vectors.append(v.astype(np.float16))
        boxes += [tuple(round(c / scale) for c in box) for box in b]  # type: ignore[misc]
        starts.append(starts[-1] + len(v))
        if progress is not None:
            progress(1)
    return RegionIndex(
        np.concatenate(vectors) if vectors else np.zeros((0, encoder.info.dim), np.float16),
        np.asarray(boxes, dtype=np.int32).reshape(-1, 4),
        starts,
        seconds,
        failed,
    )


def query_vectors(encoder: Encoder, query: Image.Image, design: str) -> np.ndarray:
    """(S, D): one vector per query scale tried (fmap), or one (windows)."""
    if design == "windows":
        pixels = np.asarray(query.resize((WINDOW_INPUT, WINDOW_INPUT), Image.Resampling.BILINEAR))
        return _gem(trunk_map(encoder, pixels[None]))
    out = []
    for s in FMAP_QUERY_SCALES:
        size = (max(STRIDE, round(query.width * s)), max(STRIDE, round(query.height * s)))
        out.append(_gem(trunk_map(encoder, np.asarray(query.resize(size))[None])))
    return np.concatenate(out)


def search(index: RegionIndex, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best region per image: (images,) scores and (images,) row of the best region, for the
    best of the query's vectors (rows of `queries`). Exact, image by image."""
    n = len(index.starts) - 1
    scores = np.full(n, -np.inf, dtype=np.float32)
    best = np.zeros(n, dtype=np.int64)
    q = queries.astype(np.float32)
    for i in range(n):
        a, b = index.starts[i], index.starts[i + 1]
        if a == b:
            continue
        sims = (q @ index.vectors[a:b].astype(np.float32).T).max(axis=0)
        j = int(np.argmax(sims))
        scores[i], best[i] = sims[j], a + j
    return scores, best


def evaluate_design(
    encoder: Encoder,
    originals: Sequence[Path],
    rows: Sequence[int],
    crops: Sequence[CropQuery],
    targets: Sequence[int],
    design: str,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, Any]:
    """Index `originals[rows]` by `design`, search every crop, verify the shortlist; the
    report's `regions[design]` (hit rates without and with verification, and the costs)."""
    paths = [originals[i] for i in rows]
    tick = progress(f"{design} regions", len(paths)) if progress else None
    index = build_index(encoder, paths, design, tick)
    ranked, verified = [], []
    query_s = search_s = verify_s = 0.0
    sources: dict[int, Image.Image] = {}
    qtick = progress(f"{design} region queries", len(crops)) if progress else None
    for crop in crops:
        query = open_upright(crop.path.read_bytes())
        t0 = time.perf_counter()
        qv = query_vectors(encoder, query, design)
        t1 = time.perf_counter()
        scores, best = search(index, qv)
        order = np.argsort(-scores, kind="stable")[: max(HIT_AT)]
        t2 = time.perf_counter()
        mask = (
            circle_mask(query.size)
            if crop.box.shape == "circle"
            else Image.new("L", query.size, 255)
        )
        ncc = []
        for image in order[:SHORTLIST]:
            if int(image) not in sources:
                sources = {int(image): open_upright(paths[int(image)].read_bytes())}
            x, y, w, h = (int(c) for c in index.boxes[best[image]])
            ncc.append(verify(query, mask, sources[int(image)], (x, y, w, h)))
        t3 = time.perf_counter()
        query_s, search_s, verify_s = query_s + t1 - t0, search_s + t2 - t1, verify_s + t3 - t2
        ranked.append(order)
        keys = [(-(v if v >= VERIFIED_NCC else -1.0), r) for r, v in enumerate(ncc)]
        reranked = [int(order[r]) for _, r in sorted(keys)]
        verified.append(np.asarray([*reranked, *order[SHORTLIST:]]))
        if qtick is not None:
            qtick(1)
    kinds = [c.kind for c in crops]
    flat = [c.box.flat for c in crops]

    def score(rankings: list[np.ndarray]) -> dict[str, Any]:
        width = max(HIT_AT)
        padded = np.full((len(rankings), width), -1, dtype=np.int64)
        for r, ranking in enumerate(rankings):
            padded[r, : len(ranking)] = ranking[:width]
        return evaluate_crops(padded, len(paths), targets, kinds, flat, CROP_KINDS)

    per_image = index.per_image()
    dim = int(index.vectors.shape[1])
    n_queries = max(1, len(crops))
    return {
        "design": REGION_DESIGNS[design],
        "indexed": len(paths),
        "vectors_per_image": round(per_image, 1),
        "ingest_ms_per_image": round(1000 * index.seconds / max(1, len(paths)), 1),
        "storage_gb_per_10k": {
            "float32": round(per_image * dim * 4 * 10_000 / 1e9, 2),
            "sq8": round(per_image * dim * 10_000 / 1e9, 2),
        },
        "query_ms": {
            "embed": round(1000 * query_s / n_queries, 1),
            "search": round(1000 * search_s / n_queries, 1),
            "search_per_10k_images": round(
                1000 * search_s / n_queries * 10_000 / max(1, len(paths)), 1
            ),
            "verify_shortlist": round(1000 * verify_s / n_queries, 1),
        },
        "regions": score(ranked),
        "verified": score(verified),
        "failed": index.failed,
    }
