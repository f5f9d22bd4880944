"""The region half of a search in a collection with regions (blocking; run in a thread).

The query's region inputs are embedded, the region rows searched for the best window per
image, the first hits verified against their files (read only inside the image roots), and
the outcome merged with the global hits (`app.ml.region_match`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.paths import is_within
from app.core.regionstore import RegionHit
from app.core.vectorstore import SearchHit, StoredImage, VectorStore
from app.ml.encoder import Encoder
from app.ml.imageio import ImageDecodeError, UprightImage, decode_upright
from app.ml.region_match import SHORTLIST, Ranked, merge, verify_shortlist
from app.ml.regions import MAX_SIDE, RegionQuery, prepare_query

log = logging.getLogger(__name__)
REGION_IMAGES = 2 * SHORTLIST  # images the region search returns


@dataclass(frozen=True)
class RegionOutcome:
    ranked: list[Ranked]
    rows: dict[str, StoredImage]  # what the region-only results need: path, content hash


def region_query(data: bytes, settings: Settings) -> RegionQuery:
    upright = decode_upright(data, max_side=MAX_SIDE, max_pixels=settings.max_image_pixels)
    return prepare_query(upright)


def _loader(
    settings: Settings, rows: dict[str, StoredImage]
) -> Callable[[str], UprightImage | None]:
    """Reads an indexed image for verification: only inside the roots, within the limits."""
    roots = settings.readable_roots

    def load(image_id: str) -> UprightImage | None:
        row = rows.get(image_id)
        if row is None:
            return None
        path = Path(row.path)
        try:
            resolved = path.resolve(strict=True)
            if not is_within(resolved, roots) or resolved.stat().st_size > settings.max_file_bytes:
                return None
            data = resolved.read_bytes()
            return decode_upright(data, max_side=MAX_SIDE, max_pixels=settings.max_image_pixels)
        except (OSError, ImageDecodeError) as exc:
            log.info("cannot verify against %s: %s", path, exc)
            return None

    return load


def search_regions(
    store: VectorStore,
    encoder: Encoder,
    query: RegionQuery,
    global_hits: list[SearchHit],
    folder_prefix: str | None,
    exclude_id: str | None = None,
) -> RegionOutcome:
    """Region hits of `query` (minus `exclude_id`, within `folder_prefix`), the first ones
    verified, merged with `global_hits`."""
    assert store.regions is not None
    vectors = encoder.embed(query.pixels)
    hits = store.regions.search(vectors, REGION_IMAGES)
    rows = store.existing([h.image_id for h in hits])
    # Region rows whose image is gone or outside the folder asked for do not count.
    kept: list[RegionHit] = [
        h
        for h in hits
        if h.image_id in rows
        and h.image_id != exclude_id
        and (folder_prefix is None or rows[h.image_id].path.startswith(folder_prefix))
    ]
    checks = verify_shortlist(query, kept, _loader(store.settings, rows))
    ranked = merge([(h.id, h.score) for h in global_hits], kept, checks)
    return RegionOutcome(ranked, rows)


def as_hits(outcome: RegionOutcome, global_hits: list[SearchHit]) -> list[tuple[SearchHit, Ranked]]:
    """The merged ranking as store hits (path, content hash) with how each matched."""
    known = {h.id: h for h in global_hits}
    out = []
    for ranked in outcome.ranked:
        hit = known.get(ranked.id)
        if hit is None:
            row = outcome.rows[ranked.id]
            hit = SearchHit(
                id=row.id, path=row.path, score=ranked.score, content_hash=row.content_hash
            )
        elif ranked.box is not None:
            hit = SearchHit(
                id=hit.id, path=hit.path, score=ranked.score, content_hash=hit.content_hash
            )
        out.append((hit, ranked))
    return out
