"""Retrieval quality: `picsearch eval` measures how well the vectors find what they should.

Two measurements, both in memory with exact search: the vectors are L2-normalised, so ranking
by the dot product (numpy) is exactly what Milvus FLAT with metric COSINE returns; an
approximate index (HNSW, IVF) can only rank the same or worse. Nothing is written to Milvus.

* A labelled folder `<class>/<images>`: every image queries all the others (itself excluded);
  images of its class are the relevant ones. mAP@k, precision@1, precision@10 and recall@k,
  per class and overall.
* A folder of originals: the originals are indexed, and near-duplicate queries are generated
  from a sample of them (crop, resize, JPEG recompression, colour shift, flip, rotation,
  grayscale, overlaid text, and all of crop + colour + text + JPEG at once; see
  TRANSFORM_NOTES); a hit is the original ranked first (hit@1) or in the top 10 (hit@10).

Without `--compare` the service's configured recipe is measured through the service's own code
path (`decode_image` + `Encoder.embed`). With `--compare` a grid of recipes (pooling x resize x
input size, plus PCA-whitening of the best ones) is computed here from the service's trunk
(`Encoder.feature_map`): one forward pass per (resize, size) is shared by all poolings, and each
image is decoded once per size. Its `squash-bilinear` rows reproduce the service path exactly
(a unit test checks this); the other resize modes and R-MAC exist only here.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

if TYPE_CHECKING:
    import torch

    from app.core.config import Settings
    from app.ml.encoder import Encoder

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
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
DUP_TRANSFORMS = (
    "crop",
    "resize",
    "jpeg",
    "colour",
    "flip",
    "rotate",
    "grayscale",
    "text",
    "combined",
)
PRECISION_AT = (1, 10)
HIT_AT = (1, 10)
SAMPLE_SEED = 7
WHITEN_CANDIDATES = 4


# --------------------------------------------------------------------------- metrics


def average_precision_at_k(relevant: Sequence[bool], n_relevant: int, k: int) -> float:
    """AP@k = (1 / min(R, k)) * sum over relevant ranks i <= k of precision@i.

    `relevant` is the ranking (best first, the query itself already removed), R the number of
    relevant items in the database. A perfect top-k scores 1 even when R > k. 0 when R == 0.
    """
    if n_relevant <= 0:
        return 0.0
    hits = 0
    total = 0.0
    for rank, rel in enumerate(relevant[:k], start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / min(n_relevant, k)


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Relevant items among the first k, divided by k."""
    return sum(bool(r) for r in relevant[:k]) / k


def recall_at_k(relevant: Sequence[bool], n_relevant: int, k: int) -> float:
    """Relevant items among the first k, divided by all R relevant items (0 when R == 0)."""
    if n_relevant <= 0:
        return 0.0
    return sum(bool(r) for r in relevant[:k]) / n_relevant


def top_k(
    queries: np.ndarray, database: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """(Q, k') database indices, most similar first, by inner product of the rows.

    `exclude[q]` (a database index, or -1 for none) is never returned for query q: the query
    itself when the queries are the database. Ties keep database order. k' = min(k, usable).
    """
    sims = queries.astype(np.float32) @ database.astype(np.float32).T
    usable = database.shape[0]
    if exclude is not None:
        rows = np.nonzero(exclude >= 0)[0]
        sims[rows, exclude[rows]] = -np.inf
        usable -= 1
    order = np.argsort(-sims, axis=1, kind="stable")
    return order[:, : max(0, min(k, usable))]


def metric_names(k: int) -> list[str]:
    return [f"map@{k}", *(f"p@{n}" for n in PRECISION_AT), f"recall@{k}"]


def evaluate_labelled(
    vectors: np.ndarray, labels: Sequence[str], k: int, queries: Sequence[int] | None = None
) -> dict[str, Any]:
    """Every image in `queries` (default: all) searches all the others; same label = relevant.

    Returns `overall` (mean over queries), `macro` (mean over classes) and `per_class`.
    Queries whose class has no other image are skipped (nothing to find).
    """
    label_arr = np.asarray(labels)
    counts = Counter(labels)
    query_idx = np.asarray(range(len(labels)) if queries is None else queries, dtype=np.int64)
    depth = max([k, *PRECISION_AT])
    ranked = top_k(vectors[query_idx], vectors, depth, exclude=query_idx)
    names = metric_names(k)
    per_class: dict[str, list[list[float]]] = defaultdict(list)
    skipped = 0
    for row, q in enumerate(query_idx):
        label = str(label_arr[q])
        n_rel = counts[label] - 1
        if n_rel <= 0:
            skipped += 1
            continue
        rel = [bool(x) for x in label_arr[ranked[row]] == label]
        per_class[label].append(
            [
                average_precision_at_k(rel, n_rel, k),
                *(precision_at_k(rel, n) for n in PRECISION_AT),
                recall_at_k(rel, n_rel, k),
            ]
        )
    every = [m for rows in per_class.values() for m in rows]
    classes = {
        cls: {
            "images": counts[cls],
            "queries": len(rows),
            **dict(zip(names, np.mean(rows, axis=0).tolist(), strict=True)),
        }
        for cls, rows in sorted(per_class.items())
    }
    zero = [0.0] * len(names)
    overall = np.mean(every, axis=0).tolist() if every else zero
    macro = np.mean([list(c.values())[2:] for c in classes.values()], axis=0).tolist()
    return {
        "images": len(labels),
        "classes": len(counts),
        "queries": len(every),
        "skipped_queries": skipped,
        "overall": dict(zip(names, overall, strict=True)),
        "macro": dict(zip(names, macro if classes else zero, strict=True)),
        "per_class": classes,
    }


def evaluate_near_duplicates(
    database: np.ndarray, queries: np.ndarray, targets: Sequence[int], transforms: Sequence[str]
) -> dict[str, Any]:
    """hit@n: the query's original (`targets[q]`, a database index) is among the first n."""
    ranked = top_k(queries, database, max(HIT_AT))
    target = np.asarray(targets, dtype=np.int64)[:, None]
    hits = {n: (ranked[:, :n] == target).any(axis=1) for n in HIT_AT}
    kinds = np.asarray(transforms)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"queries": int(mask.sum())}
        for n in HIT_AT:
            out[f"hit@{n}"] = float(hits[n][mask].mean()) if mask.any() else 0.0
        return out

    return {
        "indexed": int(database.shape[0]),
        "overall": summary(np.ones(len(target), dtype=bool)),
        "per_transform": {t: summary(kinds == t) for t in dict.fromkeys(transforms)},
    }


# --------------------------------------------------------------------------- PCA-whitening


@dataclass(frozen=True)
class Whitening:
    """PCA-whitening (Jégou & Chum 2012) learned without labels on the indexed vectors."""

    mean: np.ndarray
    projection: np.ndarray  # (D, d)

    @classmethod
    def learn(cls, vectors: np.ndarray, dim: int) -> Whitening:
        x = vectors.astype(np.float64)
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        eig = s**2 / max(1, len(x) - 1)
        d = max(1, min(dim, int((eig > eig[0] * 1e-9).sum())))
        scale = np.sqrt(eig[:d] + eig[0] * 1e-9 + 1e-12)  # no division by zero
        return cls(mean, (vt[:d].T / scale).astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        y = (vectors - self.mean.astype(np.float32)) @ self.projection
        return l2_normalise(y)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


# --------------------------------------------------------------------------- near duplicates


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _crop(img: Image.Image, side: float = 0.4) -> Image.Image:
    """Keep `side` of each side (0.4: 16 % of the area), off centre."""
    w, h = img.size
    cw, ch = max(1, round(w * side)), max(1, round(h * side))
    left, top = round(0.6 * (w - cw)), round(0.3 * (h - ch))
    return img.crop((left, top, left + cw, top + ch))


def _resize(img: Image.Image, longest: int = 64) -> Image.Image:
    """A thumbnail: longest side 64 px."""
    scale = longest / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _colour(img: Image.Image) -> Image.Image:
    """A strong warm filter: red x1.3, blue x0.6, saturation x1.8, contrast x1.3."""
    r, g, b = img.convert("RGB").split()
    warm = Image.merge(
        "RGB",
        (r.point(lambda v: min(255, round(v * 1.3))), g, b.point(lambda v: round(v * 0.6))),
    )
    return ImageEnhance.Contrast(ImageEnhance.Color(warm).enhance(1.8)).enhance(1.3)


def _rotate(img: Image.Image, degrees: float = 20.0) -> Image.Image:
    """Rotate about the centre, then crop the largest centred rectangle without corners."""
    w, h = img.size
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    scale = min(w / (w * cos + h * sin), h / (w * sin + h * cos))
    rotated = img.rotate(degrees, resample=Image.Resampling.BICUBIC)
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((left, top, left + cw, top + ch))


def _text(img: Image.Image) -> Image.Image:
    """Three lines of yellow, black-outlined text, each 1/6 of the height tall."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    size = max(10, out.height // 6)
    font = ImageFont.load_default(size=size)
    for i, text in enumerate(("PICSEARCH SAMPLE", "© 2024 NOT YOURS", "REPOSTED")):
        draw.text(
            (out.width // 20, out.height * (1 + 3 * i) // 10),
            text,
            fill="yellow",
            font=font,
            stroke_width=max(1, size // 10),
            stroke_fill="black",
        )
    return out


TRANSFORM_FUNCTIONS: dict[str, Callable[[Image.Image], bytes]] = {
    "crop": lambda img: _jpeg(_crop(img)),
    "resize": lambda img: _jpeg(_resize(img)),
    "jpeg": lambda img: _jpeg(img, quality=5),
    "colour": lambda img: _jpeg(_colour(img)),
    "flip": lambda img: _jpeg(ImageOps.mirror(img)),
    "rotate": lambda img: _jpeg(_rotate(img)),
    "grayscale": lambda img: _jpeg(ImageOps.grayscale(img)),
    "text": lambda img: _jpeg(_text(img)),
    # a re-post: cropped, filtered, captioned and recompressed
    "combined": lambda img: _jpeg(_text(_colour(_crop(img, 0.6))), quality=30),
}
TRANSFORM_NOTES: dict[str, str] = {
    "crop": "40% of each side kept (16% of the area), off centre",
    "resize": "thumbnail, longest side 64 px",
    "jpeg": "JPEG quality 5",
    "colour": "warm filter: red x1.3, blue x0.6, saturation x1.8, contrast x1.3",
    "flip": "mirrored left-right",
    "rotate": "rotated 20 degrees, cropped to the largest rectangle without corners",
    "grayscale": "grayscale",
    "text": "three lines of yellow outlined text, each 1/6 of the height",
    "combined": "60% crop + warm filter + text + JPEG quality 30",
}


def near_duplicate(img: Image.Image, transform: str) -> bytes:
    """JPEG bytes of `img` altered by `transform` (deterministic; quality 92 unless the
    transform itself recompresses)."""
    return TRANSFORM_FUNCTIONS[transform](img.convert("RGB"))


# --------------------------------------------------------------------------- recipes


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


# --------------------------------------------------------------------------- preprocessing

Prepared = dict[Prep, tuple[np.ndarray, tuple[int, int]]]  # pixels (S, S, 3), valid (h, w)


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_upright(data: bytes, draft_to: int | None = None) -> Image.Image:
    """Upright RGB image; JPEGs decoded at the smallest DCT scale >= `draft_to` if given."""
    with Image.open(io.BytesIO(data)) as img:
        if draft_to is not None and img.format in ("JPEG", "MPO"):
            img.draft(None, (draft_to, draft_to))
        img.seek(0)
        return _rgb(ImageOps.exif_transpose(img))


def _mean_colour() -> tuple[int, int, int]:
    from app.ml.encoder import IMAGENET_MEAN

    r, g, b = (round(255 * m) for m in IMAGENET_MEAN)
    return r, g, b


def resize_for(img: Image.Image, prep: Prep) -> tuple[np.ndarray, tuple[int, int]]:
    """Model input for `prep.mode` from an upright RGB image (not squash-bilinear, which is
    the service's decode_image), and the (h, w) of the image inside the SxS input."""
    s = prep.size
    w, h = img.size
    if prep.mode == "squash-nearest":
        return np.asarray(img.resize((s, s), Image.Resampling.NEAREST)), (s, s)
    if prep.mode == "crop":
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        resized = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - s) // 2, (nh - s) // 2
        return np.asarray(resized.crop((left, top, left + s, top + s))), (s, s)
    if prep.mode == "pad":
        scale = s / max(w, h)
        nw, nh = min(s, max(1, round(w * scale))), min(s, max(1, round(h * scale)))
        canvas = Image.new("RGB", (s, s), _mean_colour())
        canvas.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), (0, 0))
        return np.asarray(canvas), (nh, nw)
    raise ValueError(f"unknown resize mode {prep.mode!r}")


def prepare(data: bytes, preps: Sequence[Prep], max_pixels: int) -> Prepared:
    """Every `prep` input of one image, decoding it once per size (plus once in full for
    squash-nearest). Raises ImageDecodeError for files the service would refuse."""
    from app.ml.imageio import decode_image

    out: Prepared = {}
    sizes = sorted({p.size for p in preps})
    decode_image(data, size=sizes[0], max_pixels=max_pixels)  # the service's checks
    full: Image.Image | None = None
    drafted: dict[int, Image.Image] = {}
    for prep in preps:
        s = prep.size
        if prep.mode == "squash-bilinear":
            out[prep] = decode_image(data, size=s, max_pixels=max_pixels).pixels, (s, s)
        elif prep.mode == "squash-nearest":
            if full is None:
                full = open_upright(data)
            out[prep] = resize_for(full, prep)
        else:
            if s not in drafted:
                drafted[s] = open_upright(data, 2 * s)
            out[prep] = resize_for(drafted[s], prep)
    return out


def valid_cells(valid: tuple[int, int], size: int, fh: int, fw: int) -> tuple[int, int]:
    """Feature-map rows and columns covering the image (a cell counts when >= half inside)."""
    h, w = valid
    rows = max(1, min(fh, math.floor(h * fh / size + 0.5)))
    cols = max(1, min(fw, math.floor(w * fw / size + 0.5)))
    return rows, cols


# --------------------------------------------------------------------------- pooling


def rmac_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int, int]]:
    """R-MAC regions (top, left, height, width) of an h x w map: the whole map, then square
    regions of side 2*min(h,w)/(l+1) on levels l = 1..L with ~40 % overlap (Tolias et al.
    2016, laid out as in Radenović's cirtorch `rmac`)."""
    overlap = 0.4
    side = min(h, w)
    extra_h = extra_w = 0
    if h != w:
        steps = np.arange(2, 8, dtype=np.float64)
        b = (max(h, w) - side) / (steps - 1)
        idx = int(np.argmin(np.abs((side**2 - side * b) / side**2 - overlap)))
        if h < w:
            extra_w = idx + 1
        else:
            extra_h = idx + 1
    regions = [(0, 0, h, w)]
    for level in range(1, levels + 1):
        wl = math.floor(2 * side / (level + 1))
        if wl == 0:
            continue
        n_w, n_h = level + extra_w, level + extra_h
        bw = 0.0 if n_w == 1 else (w - wl) / (n_w - 1)
        bh = 0.0 if n_h == 1 else (h - wl) / (n_h - 1)
        tops = [math.floor(i * bh) for i in range(n_h)]
        lefts = [math.floor(j * bw) for j in range(n_w)]
        regions += [(t, left, wl, wl) for t in tops for left in lefts]
    return regions


def rmac(fmap: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Sum of the L2-normalised MAC vectors of the R-MAC regions: (N, C, H, W) -> (N, C)."""
    import torch

    x = fmap.float()
    total = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
    for top, left, rh, rw in rmac_regions(int(x.shape[2]), int(x.shape[3]), levels):
        v = x[:, :, top : top + rh, left : left + rw].amax(dim=(2, 3))
        total += torch.nn.functional.normalize(v, dim=1, eps=1e-6)
    return total


def pool(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """mac / spoc / gem exactly as the service (`pool_features`), or rmac."""
    from app.ml.encoder import pool_features

    return rmac(fmap) if pooling == "rmac" else pool_features(fmap, pooling)


# --------------------------------------------------------------------------- embedding


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


# --------------------------------------------------------------------------- data sets


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


def make_queries(
    originals: Sequence[Path], out_dir: Path, transforms: Sequence[str] = DUP_TRANSFORMS
) -> list[tuple[Path, int, str]]:
    """Write one near-duplicate per (original, transform) under `out_dir`:
    (query path, index of its original, transform). Unreadable originals are skipped."""
    queries: list[tuple[Path, int, str]] = []
    for i, path in enumerate(originals):
        targets = {t: out_dir / t / f"{i:05d}.jpg" for t in transforms}
        if not all(target.is_file() for target in targets.values()):
            try:
                img = open_upright(path.read_bytes())
            except (OSError, ValueError, SyntaxError):
                continue
            for t, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(near_duplicate(img, t))
        queries += [(target, i, t) for t, target in targets.items()]
    return queries


# --------------------------------------------------------------------------- vector cache

CACHE_VERSION = 2
QUERY_VERSION = 2  # bump when the near-duplicate transforms change


def _files_key(paths: Sequence[Path], extra: Sequence[Any]) -> str:
    digest = hashlib.sha256(json.dumps(list(extra)).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def cached_embedding(
    cache: Path,
    encoder: Encoder,
    paths: Sequence[Path],
    preps: Sequence[Prep],
    poolings: Sequence[str],
    compute: Callable[[Sequence[Prep]], Embedded],
) -> Embedded:
    """`compute(preps)` for the preps not in `cache` yet (one .npz per image set and prep,
    keyed by model, weights, recipe and the files' paths, sizes and mtimes)."""
    info = encoder.info
    files = {
        prep: cache
        / "vectors"
        / (
            _files_key(
                paths,
                [
                    CACHE_VERSION,
                    info.model,
                    info.weights_id,
                    info.precision,
                    str(getattr(info, "runtime", "")),
                    prep.mode,
                    prep.size,
                    *poolings,
                ],
            )
            + ".npz"
        )
        for prep in preps
    }
    missing = [prep for prep, f in files.items() if not f.is_file()]
    result = compute(missing) if missing else Embedded({}, [])
    for prep in missing:
        files[prep].parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {f"pool_{p}": result.vectors[Recipe(prep, p)] for p in poolings}
        payload["ok"] = np.asarray(result.ok, dtype=np.int64)
        payload["seconds"] = np.float64(result.seconds.get(prep, 0.0))
        payload["failed"] = np.asarray(json.dumps(result.failed))
        np.savez(files[prep], **payload)
    for prep in preps:
        if prep in missing:
            continue
        with np.load(files[prep]) as data:
            ok = [int(i) for i in data["ok"]]
            if missing and ok != result.ok:  # files changed in between: start again
                files[prep].unlink()
                return cached_embedding(cache, encoder, paths, preps, poolings, compute)
            result.ok, result.failed = ok, json.loads(str(data["failed"]))
            result.seconds[prep] = float(data["seconds"])
            for p in poolings:
                result.vectors[Recipe(prep, p)] = data[f"pool_{p}"].astype(np.float32)
    return result


# --------------------------------------------------------------------------- evaluation


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
    progress: Callable[[str, int], Callable[[int], None]] | None = None


def _grid(settings: Settings, options: EvalOptions) -> tuple[list[Prep], list[str]]:
    preps = {Prep(m, s) for m in options.resize_modes for s in options.sizes}
    poolings = list(dict.fromkeys(options.poolings))
    for must in (current_recipe(settings), seed_recipe()):
        preps.add(must.prep)
        if must.pooling not in poolings:
            poolings.append(must.pooling)
    for prep in preps:
        if prep.mode not in RESIZE_MODES:
            raise typer.BadParameter(f"unknown resize mode {prep.mode!r}")
    return sorted(preps), poolings


def _score(row: dict[str, Any], k: int) -> tuple[float, float]:
    lab = row.get("labelled", {}).get("overall", {}).get(f"map@{k}", -1.0)
    dup = row.get("near_duplicates", {}).get("overall", {}).get("hit@1", -1.0)
    return float(lab), float(dup)


def run_evaluation(settings: Settings, options: EvalOptions) -> dict[str, Any]:
    """Embed, search and score; returns the report (see `picsearch eval --json`)."""
    from app.ml.encoder import Encoder

    if options.labelled is None and options.originals is None:
        raise typer.BadParameter("give --labelled DIR and/or --originals DIR")
    encoder = Encoder(settings)
    current, seed = current_recipe(settings), seed_recipe()
    preps, poolings = _grid(settings, options)
    k = options.k

    def embed(paths: Sequence[Path], what: str) -> Embedded:
        tick = options.progress(what, len(paths)) if options.progress else None
        if not options.compare:
            return embed_service(encoder, settings, paths, progress=tick)

        def compute(todo: Sequence[Prep]) -> Embedded:
            return embed_grid(
                encoder,
                paths,
                todo,
                poolings,
                max_pixels=settings.max_image_pixels,
                batch_size=settings.batch_size_for(encoder.device.type),
                threads=settings.effective_decode_threads,
                progress=tick,
            )

        if options.cache is None:
            return compute(preps)
        return cached_embedding(options.cache, encoder, paths, preps, poolings, compute)

    report: dict[str, Any] = {
        "model": settings.model,
        "weights": settings.weights,
        "weights_id": encoder.info.weights_id,
        "random_weights": encoder.info.random_weights,
        "device": encoder.info.device,
        "precision": encoder.info.precision,
        "runtime": str(getattr(encoder.info, "runtime", "eager")),
        "service_recipe": encoder.info.recipe,
        "search": "exact cosine similarity in memory (numpy), equivalent to Milvus FLAT/COSINE",
        "k": k,
        "resize_modes": {p.mode: RESIZE_MODES[p.mode] for p in preps} if options.compare else {},
    }
    seconds: dict[Prep, float] = defaultdict(float)
    counted = 0
    rows: dict[Recipe, dict[str, Any]] = {}
    labelled_data: tuple[Embedded, list[str]] | None = None
    dup_data: tuple[Embedded, Embedded, list[int], list[str]] | None = None

    if options.labelled is not None:
        items = sample(list_labelled(options.labelled), options.limit, SAMPLE_SEED)
        emb = embed([p for p, _ in items], "labelled")
        labels = [items[i][1] for i in emb.ok]
        labelled_data = (emb, labels)
        counted += len(emb.ok)
        for prep, s in emb.seconds.items():
            seconds[prep] += s
        report["labelled"] = {
            "path": str(options.labelled),
            "images": len(labels),
            "classes": len(set(labels)),
            "failed": emb.failed,
        }

    if options.originals is not None:
        originals = sample(list_images(options.originals), options.limit, SAMPLE_SEED)
        with tempfile.TemporaryDirectory(prefix="picsearch-eval-") as tmp:
            db = embed(originals, "originals")
            sources = sample(db.ok, options.dup_queries or None, SAMPLE_SEED + 1)
            chosen = [originals[i] for i in sources]
            query_dir = Path(tmp)
            if options.cache is not None:  # same queries (same files) next time
                query_dir = options.cache / f"queries-{_files_key(chosen, [QUERY_VERSION])}"
            made = make_queries(chosen, query_dir)
            qemb = embed([q for q, _, _ in made], "near-duplicate queries")
        position = {orig: row for row, orig in enumerate(db.ok)}
        targets = [position[sources[made[i][1]]] for i in qemb.ok]
        kinds = [made[i][2] for i in qemb.ok]
        dup_data = (db, qemb, targets, kinds)
        counted += len(db.ok) + len(qemb.ok)
        for part in (db, qemb):
            for prep, s in part.seconds.items():
                seconds[prep] += s
        report["originals"] = {
            "path": str(options.originals),
            "indexed": len(db.ok),
            "query_sources": len(sources),
            "queries": len(qemb.ok),
            "transforms": {t: TRANSFORM_NOTES[t] for t in DUP_TRANSFORMS},
            "failed": {**db.failed, **qemb.failed},
        }

    def evaluate(recipe: Recipe) -> dict[str, Any]:
        row: dict[str, Any] = {
            "recipe": recipe.name,
            "pooling": recipe.pooling,
            "resize": recipe.prep.mode,
            "size": recipe.prep.size,
            "whiten": recipe.whiten,
            "ms_per_image": round(1000 * seconds[recipe.prep] / max(1, counted), 1),
            "is_current": recipe == current,
            "is_seed": recipe == seed,
        }
        if labelled_data is not None:
            emb, labels = labelled_data
            vec = emb.vectors[recipe.base]
            if recipe.whiten:
                vec = Whitening.learn(vec, recipe.whiten).apply(vec)
            row["labelled"] = evaluate_labelled(vec, labels, k)
        if dup_data is not None:
            db, qemb, targets, kinds = dup_data
            dbv, qv = db.vectors[recipe.base], qemb.vectors[recipe.base]
            if recipe.whiten:
                w = Whitening.learn(dbv, recipe.whiten)
                dbv, qv = w.apply(dbv), w.apply(qv)
            row["near_duplicates"] = evaluate_near_duplicates(dbv, qv, targets, kinds)
        return row

    if not options.compare:
        recipes = [current]
        for recipe in recipes:
            rows[recipe] = evaluate(recipe)
            rows[recipe]["recipe"] = encoder.info.recipe
    else:
        for prep in preps:
            for pooling in poolings:
                recipe = Recipe(prep, pooling)
                rows[recipe] = evaluate(recipe)
        if options.whiten > 0:
            ranked = sorted(rows, key=lambda r: _score(rows[r], k), reverse=True)
            candidates = dict.fromkeys([*ranked[:WHITEN_CANDIDATES], current, seed])
            for base in candidates:
                recipe = Recipe(base.prep, base.pooling, options.whiten)
                rows[recipe] = evaluate(recipe)
    ordered = sorted(rows.values(), key=lambda r: _score(r, k), reverse=True)
    report["recipes"] = ordered
    report["best"] = {
        "labelled": ordered[0]["recipe"] if "labelled" in report else None,
        "near_duplicates": max(ordered, key=lambda r: _score(r, k)[::-1])["recipe"]
        if "originals" in report
        else None,
    }
    return report


# --------------------------------------------------------------------------- output


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render_tables(report: dict[str, Any], compare: bool) -> list[Any]:
    """rich renderables for the terminal: compact tables, percentages."""
    from rich.table import Table

    k = report["k"]
    names = metric_names(k)
    out: list[Any] = [
        f"model {report['model']}, weights {report['weights_id']}, {report['device']} "
        f"{report['precision']}"
        + (" [yellow](RANDOM: not meaningful)[/yellow]" if report["random_weights"] else "")
        + f"; {report['search']}; numbers in %"
    ]
    recipes = report["recipes"]
    has_lab, has_dup = "labelled" in report, "originals" in report
    if has_lab:
        lab = report["labelled"]
        out.append(f"labelled: {lab['path']} - {lab['images']} images, {lab['classes']} classes")
    if has_dup:
        dup = report["originals"]
        out.append(
            f"near duplicates: {dup['indexed']} originals indexed from {dup['path']}, "
            f"{dup['queries']} queries ({dup['query_sources']} originals x "
            f"{len(dup['transforms'])} transforms)"
        )
    if not compare:
        row = recipes[0]
        if has_lab:
            table = Table(title=f"labelled retrieval, recipe {row['recipe']}")
            table.add_column("class")
            table.add_column("images", justify="right")
            for n in names:
                table.add_column(n, justify="right")
            for cls, m in row["labelled"]["per_class"].items():
                table.add_row(cls, str(m["images"]), *(_pct(m[n]) for n in names))
            table.add_section()
            for label, key in (("overall (per query)", "overall"), ("mean of classes", "macro")):
                m = row["labelled"][key]
                table.add_row(label, str(row["labelled"]["images"]), *(_pct(m[n]) for n in names))
            out.append(table)
        if has_dup:
            table = Table(title=f"near-duplicate hit rate, recipe {row['recipe']}")
            table.add_column("transform")
            table.add_column("queries", justify="right")
            for depth in HIT_AT:
                table.add_column(f"hit@{depth}", justify="right")
            nd = row["near_duplicates"]
            for t, m in [*nd["per_transform"].items(), ("overall", nd["overall"])]:
                table.add_row(t, str(m["queries"]), *(_pct(m[f"hit@{d}"]) for d in HIT_AT))
            out.append(table)
        return out

    table = Table(title="recipes, best first")
    table.add_column("recipe", no_wrap=True)
    if has_lab:
        for n in names:
            table.add_column(n, justify="right")
    if has_dup:
        for depth in HIT_AT:
            table.add_column(f"dup hit@{depth}", justify="right")
    table.add_column("ms/img", justify="right")
    table.add_column("")
    for row in recipes:
        cells = [row["recipe"]]
        if has_lab:
            cells += [_pct(row["labelled"]["overall"][n]) for n in names]
        if has_dup:
            cells += [_pct(row["near_duplicates"]["overall"][f"hit@{d}"]) for d in HIT_AT]
        marks = [m for m, on in (("seed", row["is_seed"]), ("current", row["is_current"])) if on]
        table.add_row(*cells, str(row["ms_per_image"]), " ".join(marks))
    out.append(table)
    if has_dup:
        picks: dict[str, dict[str, Any]] = {}
        for row in recipes:
            if row["is_seed"] and not row["whiten"]:
                picks.setdefault("seed", row)
            if row["is_current"] and not row["whiten"]:
                picks.setdefault("current", row)
        by_name = {row["recipe"]: row for row in recipes}
        for label in ("labelled", "near_duplicates"):
            best = report["best"][label]
            if best is not None:
                picks.setdefault(f"best {label.split('_')[0]}", by_name[best])
        table = Table(title="near-duplicate hit@1 / hit@10 per transform")
        table.add_column("transform")
        for label, row in picks.items():
            table.add_column(f"{label}\n{row['recipe']}", justify="right")
        transforms = list(recipes[0]["near_duplicates"]["per_transform"])
        for t in [*transforms, "overall"]:
            cells = []
            for row in picks.values():
                nd = row["near_duplicates"]
                m = nd["overall"] if t == "overall" else nd["per_transform"][t]
                cells.append(f"{_pct(m['hit@1'])} / {_pct(m['hit@10'])}")
            table.add_row(t, *cells)
        out.append(table)
    return out


def register(cli: typer.Typer) -> None:
    """Add `picsearch eval` to the `picsearch` command line."""

    @cli.command("eval")
    def eval_command(
        labelled: Annotated[
            Path | None,
            typer.Option(
                "--labelled",
                help="Folder of <class>/<images>: each image queries the others; same class "
                "= relevant.",
                exists=True,
                file_okay=False,
            ),
        ] = None,
        originals: Annotated[
            Path | None,
            typer.Option(
                "--originals",
                help="Folder of originals: indexed, and near-duplicate queries made from them.",
                exists=True,
                file_okay=False,
            ),
        ] = None,
        model: Annotated[
            str | None, typer.Option("--model", help="vgg16 or mobilenet_v2 (PICSEARCH_MODEL).")
        ] = None,
        weights: Annotated[
            str | None,
            typer.Option("--weights", help="imagenet, random or a .pth (PICSEARCH_WEIGHTS)."),
        ] = None,
        k: Annotated[int, typer.Option("-k", min=1, max=100, help="Depth of mAP/recall.")] = 10,
        limit: Annotated[
            int | None,
            typer.Option(
                "--limit", min=2, help="Use a fixed random sample of N images per folder."
            ),
        ] = None,
        dup_queries: Annotated[
            int,
            typer.Option(
                "--dup-queries",
                min=0,
                help="Originals turned into near-duplicate queries (0: all).",
            ),
        ] = 100,
        compare: Annotated[
            bool,
            typer.Option(
                "--compare",
                help="Compare a grid of recipes (pooling x resize x size, + PCA-whitening).",
            ),
        ] = False,
        sizes: Annotated[
            str, typer.Option("--sizes", help="--compare: comma-separated input sizes.")
        ] = "224,320",
        resize: Annotated[
            str,
            typer.Option("--resize", help="--compare: comma-separated resize modes."),
        ] = ",".join(RESIZE_MODES),
        pooling: Annotated[
            str, typer.Option("--pooling", help="--compare: comma-separated poolings.")
        ] = ",".join(POOLINGS),
        whiten: Annotated[
            int,
            typer.Option(
                "--whiten",
                min=0,
                help="--compare: PCA-whitening dimension for the best recipes (0: off).",
            ),
        ] = 128,
        cache: Annotated[
            Path | None,
            typer.Option(
                "--cache",
                help="--compare: keep vectors and generated queries in this folder and reuse "
                "them on the next run.",
                file_okay=False,
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Measure retrieval quality: mAP@k, precision@1/@10, recall@k on a labelled folder;
        near-duplicate hit@1/@10 per transform on a folder of originals."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from app.core.config import get_settings
        from app.ml.encoder import BACKBONES

        err = Console(stderr=True)
        updates: dict[str, Any] = {}
        if model is not None:
            if model not in BACKBONES:
                raise typer.BadParameter(f"--model must be one of {', '.join(BACKBONES)}")
            updates["model"] = model
        if weights is not None:
            updates["weights"] = weights
        settings = get_settings().model_copy(update=updates)

        def csv(value: str, allowed: Sequence[str] | None, name: str) -> tuple[str, ...]:
            items = tuple(v.strip() for v in value.split(",") if v.strip())
            bad = [v for v in items if allowed is not None and v not in allowed]
            if bad or not items:
                raise typer.BadParameter(f"{name}: choose from {', '.join(allowed or [])}")
            return items

        try:
            size_list = tuple(int(s) for s in csv(sizes, None, "--sizes"))
        except ValueError:
            raise typer.BadParameter("--sizes: integers, e.g. 224,320") from None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:

            def progress(what: str, total: int) -> Callable[[int], None]:
                task = bar.add_task(f"embedding {what}", total=total)
                return lambda n: bar.advance(task, n)

            options = EvalOptions(
                labelled=labelled,
                originals=originals,
                k=k,
                limit=limit,
                dup_queries=dup_queries,
                compare=compare,
                sizes=size_list,
                resize_modes=csv(resize, list(RESIZE_MODES), "--resize"),
                poolings=csv(pooling, POOLINGS, "--pooling"),
                whiten=whiten,
                cache=cache,
                progress=progress,
            )
            report = _rounded(run_evaluation(settings, options))
        if as_json:
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
            return
        console = Console()
        if not console.is_terminal:  # a file or pipe: wide enough for the recipe table
            console = Console(width=160)
        for item in render_tables(report, compare):
            console.print(item)
