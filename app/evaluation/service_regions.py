"""`picsearch eval --crops DIR --regions service`: the service's own region search, measured.

Indexing and queries go through the service's code (`app.ml.regions`: windows, query masks;
`Encoder.embed`: the runtime the service chose; `app.ml.region_match`: verification and the
merge with the global ranking). Only Milvus is replaced, by an exact search that returns the
best window per image, as `group_by_field="image_id"` does. Near-duplicate queries of the same
originals (`--originals` = `--crops`) are run through it too: whole-image ranking must not
lose what the global vector alone ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.regionstore import RegionHit
from app.evaluation.crops import CROP_KINDS, CropQuery
from app.evaluation.metrics import HIT_AT, evaluate_crops
from app.evaluation.regions import RegionIndex, search
from app.ml.imageio import ImageDecodeError, UprightImage, decode_upright
from app.ml.region_match import Ranked, merge, verify_shortlist
from app.ml.regions import MAX_SIDE, WINDOW_INPUT, WINDOW_SIDES, cut_windows, prepare_query

if TYPE_CHECKING:
    from app.ml.encoder import Encoder

LIMIT = 1 << 40  # pixel limit: the eval's files are trusted
REGION_IMAGES = 10
DESIGN = (
    f"the service's regions: windows of {'/'.join(map(str, WINDOW_SIDES))} px (stride half a "
    f"side, originals scaled to {MAX_SIDE} px at most) embedded at {WINDOW_INPUT} px by the "
    "service's runtime; masked queries add their inner square; NCC-verified hits first, then "
    "the global ranking"
)


def _decode(path: Path) -> UprightImage | None:
    try:
        return decode_upright(path.read_bytes(), max_side=MAX_SIDE, max_pixels=LIMIT)
    except (OSError, ImageDecodeError):
        return None


def build_service_index(
    encoder: Encoder, originals: Sequence[Path], progress: Callable[[int], None] | None = None
) -> RegionIndex:
    vectors: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    starts = [0]
    seconds = 0.0
    failed: dict[str, str] = {}
    for path in originals:
        t0 = time.perf_counter()
        image = _decode(path)
        if image is None:
            failed[str(path)] = "cannot decode"
            starts.append(starts[-1])
            continue
        windows = cut_windows(image)
        embedded = np.concatenate(
            [encoder.embed(windows.pixels[i : i + 256]) for i in range(0, len(windows.pixels), 256)]
        )
        seconds += time.perf_counter() - t0
        vectors.append(embedded.astype(np.float16))
        boxes.append(windows.boxes)
        starts.append(starts[-1] + len(embedded))
        if progress is not None:
            progress(1)
    return RegionIndex(
        np.concatenate(vectors) if vectors else np.zeros((0, encoder.info.dim), np.float16),
        np.concatenate(boxes) if boxes else np.zeros((0, 4), np.int32),
        starts,
        seconds,
        failed,
    )


class ServiceRanker:
    """Ranks one query file as the service's search does, against `index` of `originals`."""

    def __init__(self, encoder: Encoder, index: RegionIndex, originals: Sequence[Path]) -> None:
        self.encoder = encoder
        self.index = index
        self.originals = originals
        self.seconds = {"embed": 0.0, "search": 0.0, "verify": 0.0}
        self.verified = 0
        self.wrongly_verified = 0  # a verified first result that is not the query's source

    def rank(
        self, path: Path, global_rows: np.ndarray, global_scores: np.ndarray, target: int
    ) -> list[int]:
        image = _decode(path)
        if image is None:
            return [int(r) for r in global_rows]
        t0 = time.perf_counter()
        query = prepare_query(image)
        vectors = self.encoder.embed(query.pixels)
        t1 = time.perf_counter()
        scores, best = search(self.index, vectors)
        order = np.argsort(-scores, kind="stable")[:REGION_IMAGES]
        hits = []
        for i in order:
            if np.isfinite(scores[i]):
                x, y, w, h = (int(c) for c in self.index.boxes[best[i]])
                hits.append(RegionHit(str(int(i)), (x, y, w, h), float(scores[i])))
        t2 = time.perf_counter()
        checks = verify_shortlist(query, hits, lambda i: _decode(self.originals[int(i)]))
        t3 = time.perf_counter()
        ranked: list[Ranked] = merge(
            [(str(int(r)), float(s)) for r, s in zip(global_rows, global_scores, strict=True)],
            hits,
            checks,
        )
        self.seconds["embed"] += t1 - t0
        self.seconds["search"] += t2 - t1
        self.seconds["verify"] += t3 - t2
        self.verified += any(r.verified for r in ranked)
        self.wrongly_verified += bool(ranked) and ranked[0].verified and int(ranked[0].id) != target
        return [int(r.id) for r in ranked]


def _padded(rankings: list[list[int]]) -> np.ndarray:
    width = max(HIT_AT)
    out = np.full((len(rankings), width), -1, dtype=np.int64)
    for r, ranking in enumerate(rankings):
        out[r, : min(width, len(ranking))] = ranking[:width]
    return out


def evaluate_service(
    encoder: Encoder,
    originals: Sequence[Path],
    rows: Sequence[int],
    crops: Sequence[CropQuery],
    targets: Sequence[int],
    global_vectors: tuple[np.ndarray, np.ndarray],
    near_duplicates: tuple[Sequence[Path], np.ndarray, Sequence[int], Sequence[str]] | None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, Any]:
    """The `regions.service` report: crop hit rates, near-duplicate hit@1 with and without
    regions (same originals), and the costs."""
    paths = [originals[i] for i in rows]
    tick = progress("service regions", len(paths)) if progress else None
    index = build_service_index(encoder, paths, tick)
    ranker = ServiceRanker(encoder, index, paths)
    db, query_vectors = global_vectors
    width = max(HIT_AT)

    def ranked_all(
        files: Sequence[Path], qv: np.ndarray, goals: Sequence[int], what: str
    ) -> list[list[int]]:
        sims = qv.astype(np.float32) @ db.astype(np.float32).T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :width]
        qtick = progress(what, len(files)) if progress else None
        out = []
        for q, path in enumerate(files):
            out.append(ranker.rank(path, top[q], sims[q, top[q]], goals[q]))
            if qtick is not None:
                qtick(1)
        return out

    crop_ranked = ranked_all([c.path for c in crops], query_vectors, targets, "service crops")
    crop_queries = len(crops)
    crop_seconds = dict(ranker.seconds)

    def per_query(seconds: float) -> float:
        return round(1000 * seconds / max(1, crop_queries), 1)

    report: dict[str, Any] = {
        "design": DESIGN,
        "indexed": len(paths),
        "vectors_per_image": round(index.per_image(), 1),
        "ingest_ms_per_image": round(1000 * index.seconds / max(1, len(paths)), 1),
        "storage_gb_per_10k": {
            "float32": round(index.per_image() * encoder.info.dim * 4 * 1e4 / 1e9, 2),
            "sq8": round(index.per_image() * encoder.info.dim * 1e4 / 1e9, 2),
        },
        "query_ms": {
            "embed": per_query(crop_seconds["embed"]),
            "search": per_query(crop_seconds["search"]),
            "search_per_10k_images": per_query(crop_seconds["search"] * 1e4 / max(1, len(paths))),
            "verify_shortlist": per_query(crop_seconds["verify"]),
        },
        "verified_share": round(ranker.verified / max(1, crop_queries), 3),
        "wrongly_verified": ranker.wrongly_verified,
        "regions": evaluate_crops(
            _padded(crop_ranked),
            len(paths),
            targets,
            [c.kind for c in crops],
            [c.box.flat for c in crops],
            CROP_KINDS,
        ),
        "failed": index.failed,
    }
    if near_duplicates is not None:
        files, qv, dup_targets, _ = near_duplicates
        wrong_before = ranker.wrongly_verified
        dup_ranked = ranked_all(files, qv, dup_targets, "service near-duplicates")
        sims = qv.astype(np.float32) @ db.astype(np.float32).T
        global_top1 = np.argmax(sims, axis=1)
        report["near_duplicates"] = {
            "queries": len(files),
            "hit@1_global": round(float(np.mean(global_top1 == np.asarray(dup_targets))), 4),
            "wrongly_verified": ranker.wrongly_verified - wrong_before,
            "hit@1_service": round(
                float(np.mean([r[0] == t for r, t in zip(dup_ranked, dup_targets, strict=True)])),
                4,
            ),
        }
    return report
